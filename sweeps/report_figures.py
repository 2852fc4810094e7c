"""The report's context and the study's figures per experiment: each takes the Context of the best trial (its
model, data and history) and returns [(path, caption)]; EXPERIMENT_FIGURES names them for the registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lstm_ae.data import DataError, Splits, snp500
from lstm_ae.forecast import multi_step, one_step, persistence
from lstm_ae.model import LSTMAutoencoder
from lstm_ae.train import per_step_mean
from sweeps import evaluate, figures, storage
from sweeps.collect import swept_values
from sweeps.sweep import Sweep

FIGURES = "figures"


@dataclass
class Context:
    """What the experiment-specific figures draw from: the best trial's model, data and history."""

    sweep: Sweep
    best: pd.Series  # the best trial's row of trials.parquet
    history: pd.DataFrame  # its rows of metrics.parquet
    trained: evaluate.Trained  # the weights evaluated: the trial's best epoch that a checkpoint kept
    splits: Splits
    folder: str  # figures/, a local path or a URI
    tables: list  # markdown sections the figures add (e.g. the forecast errors)
    format: str = "png"  # of the figures: figures.FORMATS

    @property
    def model(self) -> LSTMAutoencoder:
        return self.trained.model

    @property
    def epoch(self) -> int:
        return self.trained.epoch

    @torch.no_grad()
    def forward(self, x: torch.Tensor):
        """The model's output in fp32, as the report's test metrics measure it (sweeps.evaluate.metrics): the same
        figures on every machine, whatever precision the model trained in."""
        return self.model(x)

    def save(self, figure, name: str, caption: str) -> tuple[str, str]:
        figures.save(figure, storage.join(self.folder, f"{name}.{self.format}"), self.format)
        return f"{FIGURES}/{name}.{self.format}", caption

    def pick(self, n: int, count: int | None = None) -> torch.Tensor:
        """n distinct indices below `count` (default: the test sequences), drawn at random but seeded:
        the same ones in every report of this sweep."""
        count = len(self.splits.test) if count is None else count
        return torch.randperm(count, generator=torch.Generator().manual_seed(self.sweep.seed))[:n]


def normalizer_of(splits: Splits, split: str):
    return splits.meta.get("normalizer", {}).get(split)


def trial_label(ctx: Context) -> str:
    """The best trial named by its hyperparameter values, floats to 3 figures (Optuna's lr=0.003600091192911611
    pushed the curves off their figure); its id where nothing was swept."""
    values = swept_values(ctx.sweep, ctx.best).items()
    return ", ".join(f"{k}={f'{v:.3g}' if isinstance(v, float) else v}" for k, v in values) or ctx.best.trial_id


# Experiment figures: each takes the Context and returns [(path, caption)].


def signals(ctx: Context) -> list:
    examples = {name: part.x[:3, :, 0].numpy() for name, part in ctx.splits.items()}
    return [ctx.save(figures.signal_examples(examples), "signals", "Three example signals from each split.")]


def loss_parts(ctx: Context) -> list:
    parts = [p for p in ("loss", "mse", "ce", "pred_mse") if f"val_{p}" in ctx.history]
    parts = parts if len(parts) > 2 else ["mse"]  # without a head, the loss is the MSE: one panel
    figure = figures.learning_curves(
        ctx.history, parts, f"best trial ({trial_label(ctx)}): losses per epoch, train (solid) and validation (dashed)"
    )
    return [
        ctx.save(
            figure,
            "losses",
            "Loss per epoch of the best trial, train and validation"
            + (" (total and each part)." if len(parts) > 1 else "."),
        )
    ]


def accuracy(ctx: Context) -> list:
    chance = 1 / ctx.model.config.num_classes
    figure = figures.learning_curves(
        ctx.history, ["accuracy"], f"best trial ({trial_label(ctx)}): accuracy per epoch", chance
    )
    return [ctx.save(figure, "accuracy", "Classification accuracy per epoch of the best trial, train and validation.")]


def reconstructions(ctx: Context) -> list:
    rows = ctx.pick(3)
    x = ctx.splits.test.x[rows]
    recon = ctx.forward(x).reconstruction
    baseline = per_step_mean(ctx.splits.train).expand_as(x)
    figure = figures.reconstructions(
        x[..., 0].numpy(),
        recon[..., 0].numpy(),
        baseline[..., 0].numpy(),
        [f"test signal {int(r)}" for r in rows],
        "value",
        "test signals and their reconstructions by the best model",
    )
    return [
        ctx.save(
            figure,
            "reconstructions",
            "Three test signals (solid), the best model's reconstructions (dashed) and the training signals' "
            "per-step mean (dotted), the baseline.",
        )
    ]


def digit_images(ctx: Context) -> list:
    rows = ctx.pick(8)
    x = ctx.splits.test.x[rows]
    recon = ctx.forward(x).reconstruction.clamp(0, 1)
    labels = [f"digit {int(y)}" for y in ctx.splits.test.y[rows]]
    return [
        ctx.save(
            figures.digits(x.numpy(), recon.numpy(), per_step_mean(ctx.splits.train).numpy(), labels),
            "digits",
            "Test digits drawn at random: originals above the best model's reconstructions; last, the training "
            "digits' mean image, the baseline.",
        )
    ]


def confusion(ctx: Context) -> list:
    test = ctx.splits.test
    with torch.no_grad():
        predicted = torch.cat([ctx.forward(x).logits.argmax(1) for x in test.x.split(1024)])
    matrix = np.zeros((ctx.splits.num_classes,) * 2, dtype=int)
    np.add.at(matrix, (test.y.numpy(), predicted.numpy()), 1)
    accuracy = float((predicted == test.y).float().mean())
    return [
        ctx.save(
            figures.confusion(matrix, accuracy),
            "confusion",
            f"Confusion matrix of the test split: accuracy {accuracy:.2%}.",
        )
    ]


def stock_prices(ctx: Context) -> list:
    try:
        frame = snp500.series(ctx.sweep.data_path(), ("AMZN", "GOOGL"))
    except DataError as error:
        ctx.tables.append(f"(The AMZN and GOOGL figure is left out: {error}.)")
        return []
    return [
        ctx.save(
            figures.prices(frame), "amzn_googl", "Daily high of AMZN and GOOGL over the period, from the data file."
        )
    ]


def stock_reconstructions(ctx: Context) -> list:
    per_stock = ctx.splits.meta["sequences_per_stock"]
    stocks = ctx.pick(3, count=math.ceil(len(ctx.splits.test) / per_stock)).tolist()  # stocks with a test sequence
    rows = torch.tensor([s * per_stock for s in stocks])  # each stock's first sequence
    x = ctx.splits.test.x[rows]
    normalizer = normalizer_of(ctx.splits, "test")
    dollars = normalizer.invert(x, rows)[..., 0].numpy()
    recon = normalizer.invert(ctx.forward(x).reconstruction, rows)[..., 0].numpy()
    baseline = normalizer.invert(per_step_mean(ctx.splits.train).expand_as(x), rows)[..., 0].numpy()
    labels = [_sequence_label(ctx.splits, int(row)) for row in rows]
    figure = figures.reconstructions(
        dollars,
        recon,
        baseline,
        labels,
        "price (USD)",
        "test stocks and their reconstructions, in dollars",
        xlabel="trading day in the sequence",
    )
    return [
        ctx.save(
            figure,
            "stock_reconstructions",
            "Three test stocks' daily highs (solid), the best model's reconstructions (dashed) and the training "
            "sequences' per-step mean (dotted, the baseline, in each stock's own scale), in dollars.",
        )
    ]


def stock_forecasts(ctx: Context) -> list:
    test = ctx.splits.test
    normalizer = normalizer_of(ctx.splits, "test")
    observed = test.x.shape[1] // 2
    dollars = normalizer.invert(test.x)
    model_one = normalizer.invert(one_step(ctx.model, test.x))[:, :-1]
    model_multi = normalizer.invert(multi_step(ctx.model, test.x, observed))
    rows = ctx.pick(3)
    labels = [_sequence_label(ctx.splits, int(r)) for r in rows]
    truth = dollars[rows, :, 0].numpy()
    one = {"model, one step": model_one[rows, :, 0].numpy(), "persistence": persistence(dollars)[rows, :-1, 0].numpy()}
    multi = {
        "model, multi-step": model_multi[rows, :, 0].numpy(),
        "persistence": persistence(dollars, observed)[rows, :, 0].numpy(),
    }
    shown = [
        ctx.save(
            figures.forecasts(truth, one, labels, 1, "next-day prediction on test sequences, in dollars"),
            "one_step",
            "Next-day prediction of test sequences: the model (having seen every day up to the one before) and persistence (tomorrow = today).",
        ),
        ctx.save(
            figures.forecasts(
                truth,
                multi,
                labels,
                observed,
                f"days {observed + 1} to {test.x.shape[1]} predicted from the first {observed}, in dollars",
            ),
            "multi_step",
            f"Multi-step prediction: the first {observed} days observed, the rest predicted from the model's own outputs, against persistence.",
        ),
    ]
    errors = {
        ("one step", "model"): (model_one - dollars[:, 1:]).abs().mean(),
        ("one step", "persistence"): (persistence(dollars)[:, :-1] - dollars[:, 1:]).abs().mean(),
        ("multi-step", "model"): (model_multi - dollars[:, observed:]).abs().mean(),
        ("multi-step", "persistence"): (persistence(dollars, observed) - dollars[:, observed:]).abs().mean(),
    }
    table = [
        "## Forecast errors on the test split (mean absolute error, USD)",
        "",
        f"{len(test)} test sequences of {test.x.shape[1]} days; multi-step predicts days {observed + 1}..{test.x.shape[1]} from the first {observed}.",
        "",
        "| forecast | model | persistence (tomorrow = today) |",
        "| --- | --- | --- |",
    ]
    for horizon in ("one step", "multi-step"):
        table.append(
            f"| {horizon} | {float(errors[(horizon, 'model')]):.4f} | {float(errors[(horizon, 'persistence')]):.4f} |"
        )
    ctx.tables.append("\n".join(table))
    return shown


def _sequence_label(splits: Splits, row: int) -> str:
    per_stock = splits.meta["sequences_per_stock"]
    ticker = splits.meta["tickers"]["test"][row // per_stock]
    seq_len = splits.test.x.shape[1]
    start = (row % per_stock) * seq_len
    dates = splits.meta["dates"]
    return f"{ticker}, {dates[start]} to {dates[start + seq_len - 1]}"


EXPERIMENT_FIGURES = {
    "signals": signals,
    "losses": loss_parts,
    "accuracy": accuracy,
    "reconstructions": reconstructions,
    "digits": digit_images,
    "confusion": confusion,
    "prices": stock_prices,
    "stock_reconstructions": stock_reconstructions,
    "forecasts": stock_forecasts,
}
