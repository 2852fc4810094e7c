"""The experiments, as data: each entry says how to build its data, which heads the model has, what to sweep,
which metric to optimise, and two presets: `quick` (small data, few epochs: the demo, tests and CI) and `paper`
(the original study's budgets). Adding an experiment is adding an entry to EXPERIMENTS; the tests pick it up.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from lstm_ae.data import Splits, head, mnist, snp500, synthetic
from lstm_ae.train import direction


def best_column(metric: str) -> str:
    """The column of `metric`'s best value so far: what every trial reports, and the trials table keeps per trial."""
    return f"best_{metric}"


def score(value: float, mode: str) -> float:
    """`value` where larger is better under `mode` ("min" or "max"): the one home of which of two values wins; a NaN
    or an infinity (a diverged epoch) scores lowest."""
    value = float(value)
    if not math.isfinite(value):
        return -math.inf
    return -value if mode == "min" else value


def best_first(frame, column: str, mode: str):
    """The rows of a DataFrame by `column`, best first under `mode`, NaN last."""
    return frame.sort_values(column, ascending=mode == "min", na_position="last")


@dataclass(frozen=True)
class DataSource:
    load: Callable[..., Splits]  # (path, seed, **kwargs), in the driver: what is shipped to every trial
    needs: str | None = None  # what --data must name for this source (help text); None where no file is needed
    default_path: str | None = None


SOURCES = {
    "synthetic": DataSource(load=lambda path, seed, **kw: synthetic.load(seed=seed, **kw)),
    "mnist": DataSource(
        load=lambda path, seed, **kw: mnist.load(path, seed=seed, **kw),
        needs="the folder holding MNIST/raw/ (downloaded there by torchvision when missing)",
        default_path="data",
    ),
    "snp500": DataSource(
        load=lambda path, seed, **kw: snp500.load(path, seed=seed, **kw),
        needs="the S&P 500 CSV: Kaggle's all_stocks_5yr.csv or the course's 'SP 500 Stock Prices 2014-2017.csv', plain or gzipped",
    ),
}


@dataclass(frozen=True)
class Preset:
    epochs: int
    grace_period: int  # ASHA lets every trial run this many epochs before it may stop it
    checkpoint_every: int  # epochs between checkpoints (the last epoch is always checkpointed)
    loader: dict = field(default_factory=dict)  # loader arguments on top of the experiment's
    limit: dict = field(default_factory=dict)  # first N sequences of train/val/test, for small data
    grid: dict = field(default_factory=dict)  # grid values on top of the experiment's (e.g. smaller models)
    reduction_factor: int | None = None  # rung to rung, 1/this goes on; None: the scheduler's (sweep.REDUCTION_FACTORS)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    source: str  # a key of SOURCES
    grid: dict  # the study's grid: hyperparameter -> values
    fixed: dict  # hyperparameters not swept, at the study's values
    metric: str  # what ASHA, Optuna and the best-trial choice optimise
    presets: dict
    heads: dict = field(default_factory=dict)  # LSTMAutoencoder arguments: num_classes, predict_next
    loader: dict = field(default_factory=dict)  # loader arguments
    data_params: tuple = ()  # hyperparameters that change the data (built once per value, in the driver)
    optuna_ranges: dict = field(default_factory=dict)  # overrides of the standard ranges below
    figures: tuple = ()  # the study's figures for this experiment: names of sweeps.report.EXPERIMENT_FIGURES

    @property
    def mode(self) -> str:
        """ "min" or "max": the metric's own direction (lstm_ae.train.direction), the one home of that fact."""
        return direction(self.metric)

    @property
    def running_best(self) -> str:
        """What ASHA and Optuna rank trials on: the best value of `metric` so far, which every trial reports. The
        metric itself is noisy from epoch to epoch, and the best trial is chosen on its best value anyway."""
        return best_column(self.metric)

    def better(self, a: float, b: float) -> float:
        """The better of two values of `metric`; a NaN (a diverged epoch) never wins."""
        return a if score(a, self.mode) >= score(b, self.mode) else b

    def running_bests(self, epochs: list[dict]) -> list[float]:
        """The best value of `metric` up to each of `epochs` (their metrics, oldest first): what a trial reports as
        `running_best`, and what a resumed scheduler replays."""
        return list(itertools.accumulate((e[self.metric] for e in epochs), self.better, initial=math.nan))[1:]

    def grid_for(self, preset: str) -> dict:
        return {**self.grid, **self.presets[preset].grid}

    def optuna_space(self, grid: dict) -> dict:
        """Optuna's ranges over the swept hyperparameters: hidden over the grid's span, lr log-uniform
        1e-4..1e-2, clip 0..5, batch {32, 64, 128}, recon_weight over the grid's span, choices as they are."""
        return {name: self.optuna_ranges.get(name) or _standard_range(name, values) for name, values in grid.items()}

    def load(self, path, seed: int, preset: str, **data_params) -> Splits:
        p = self.presets[preset]
        splits = SOURCES[self.source].load(path, seed, **{**self.loader, **p.loader, **data_params})
        return head(splits, **p.limit) if p.limit else splits


def grid_size(grid: dict) -> int:
    """The points of a grid (hyperparameter -> values), counted without expanding it."""
    return math.prod(len(values) for values in grid.values())


@dataclass(frozen=True)
class Range:
    """One hyperparameter's Optuna range, without Ray or Optuna until asked for as a Tune domain (the runner's
    search) or an Optuna distribution (the report's importances): "int" (both ends included), "float", "log"
    (log-uniform) or "choice" (of `values`)."""

    kind: str
    low: float = 0
    high: float = 0
    values: tuple = ()

    def to_tune(self):
        """Tune's search domain (Ray imported here only: the registry is read without Ray by `sweeps list`)."""
        from ray import tune

        if self.kind == "int":
            return tune.randint(self.low, self.high + 1)  # randint excludes its upper bound
        if self.kind == "log":
            return tune.loguniform(self.low, self.high)
        if self.kind == "float":
            return tune.uniform(self.low, self.high)
        return tune.choice(list(self.values))

    def to_optuna(self):
        """Optuna's distribution: the one Ray's OptunaSearch makes of `to_tune()`."""
        from optuna import distributions

        if self.kind == "int":
            return distributions.IntDistribution(self.low, self.high)
        if self.kind in ("log", "float"):
            return distributions.FloatDistribution(self.low, self.high, log=self.kind == "log")
        return distributions.CategoricalDistribution(self.values)

    def __str__(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(map(str, self.values)) + "}"
        return f"{'log ' if self.kind == 'log' else ''}{self.low}..{self.high}"


def _standard_range(name: str, values: list) -> Range:
    if name == "hidden_size":
        return Range("int", min(values), max(values))
    if name == "lr":
        return Range("log", 1e-4, 1e-2)
    if name == "grad_clip":
        return Range("float", 0.0, 5.0)
    if name == "batch_size":
        return Range("choice", values=(32, 64, 128))
    if name == "recon_weight":
        return Range("float", min(values), max(values))
    return Range("choice", values=tuple(values))


# Measured on the pixel sequences (README): a layer-normalised encoder, chrono gate biases (forget gates that
# remember up to 784 steps), orthogonal recurrent weights, a cosine schedule; a decoder that knows each step's row
# and column, without which it draws no better than the mean image (results/showcase/mnist-pixels-recipe).
PIXEL_RECIPE = {
    "encoder_cell": "layernorm",
    "decoder_input": "position",
    "gate_bias": "chrono",
    "recurrent_init": "orthogonal",
    "schedule": "cosine",
}
_MNIST_QUICK = dict(loader={"val_size": 1000}, limit={"train": 2000, "val": 500, "test": 500})
_MNIST_ROWS = Experiment(
    name="mnist-rows",
    figures=("digits", "losses"),
    description="MNIST row by row (28 steps of 28 pixels), reconstruction",
    source="mnist",
    loader={"view": "rows"},
    grid={"hidden_size": [20, 64, 128], "lr": [1e-3, 5e-3], "batch_size": [32, 128]},
    fixed={"grad_clip": 1.0},
    metric="val_mse",
    presets={
        "quick": Preset(epochs=3, grace_period=1, checkpoint_every=1, **_MNIST_QUICK),
        "paper": Preset(epochs=100, grace_period=5, checkpoint_every=5),
    },
)
_STOCKS_QUICK = dict(limit={"train": 600, "val": 200, "test": 200})

EXPERIMENTS = {
    e.name: e
    for e in [
        Experiment(
            name="synthetic",
            figures=("signals", "losses", "reconstructions"),
            description="synthetic signals (50 steps, an 11-point dip), reconstruction",
            source="synthetic",
            grid={"batch_size": [32, 64], "lr": [1e-3, 1e-2], "grad_clip": [0.0, 1.0], "hidden_size": [10, 25, 40]},
            # Forget gates starting open learn the dip sooner than PyTorch's init; the rate halved on plateaus, as
            # at lr 1e-2 loss spikes threw the largest models back from their best (README and results/showcase give
            # the measurements). The study's setting: --set gate_bias=default --set schedule=constant.
            # n: the number of signals, a data hyperparameter (--set n=1000 for a smaller, faster sweep).
            fixed={"gate_bias": "forget1", "schedule": "plateau", "n": 10_000},
            data_params=("n",),
            metric="val_mse",
            # The study kept z smaller than the 50-step sequence on purpose: no identity mapping to learn.
            optuna_ranges={"hidden_size": Range("int", 10, 49)},
            presets={
                # The demo: the study's 10,000 signals, enough epochs for the best trial to learn the dip (under half
                # the per-step mean's error), early stopping at rungs 1, 4 and 16 passing a quarter on (the grid's
                # best leads from its first epoch, and the demo stays short: docs/performance.md), checkpoints only
                # every 8 (each costs a good part of an epoch this small).
                "quick": Preset(epochs=24, grace_period=1, checkpoint_every=8, reduction_factor=4),
                "paper": Preset(epochs=1000, grace_period=50, checkpoint_every=10),
            },
        ),
        _MNIST_ROWS,
        # The same grid and budgets as mnist-rows, with a classifier on z.
        replace(
            _MNIST_ROWS,
            name="mnist-rows-classify",
            figures=("digits", "losses", "accuracy", "confusion"),
            description="MNIST row by row, reconstruction + classification of the digit from z",
            heads={"num_classes": 10},
            fixed={"grad_clip": 1.0, "recon_weight": 0.5},
            metric="val_accuracy",
        ),
        Experiment(
            name="mnist-pixels-classify",
            figures=("digits", "losses", "accuracy", "confusion"),
            description="MNIST pixel by pixel (784 steps of 1 pixel), reconstruction + classification: the long one",
            source="mnist",
            loader={"view": "pixels"},
            heads={"num_classes": 10},
            grid={"hidden_size": [100, 150, 300], "lr": [1e-3, 1e-2], "recon_weight": [0.5, 0.7]},
            # The study's batch and clip; then the recipe that leaves chance within the first epoch, where the study's
            # plain nn.LSTM stays near chance for epochs (README, pixel section). The study's own model:
            # --set encoder_cell=lstm --set decoder_input=repeat --set gate_bias=default --set recurrent_init=default
            # --set schedule=constant
            fixed={"batch_size": 128, "grad_clip": 1.0, **PIXEL_RECIPE},
            # Accuracy, not the loss: the loss's mix changes with recon_weight, so losses do not compare.
            metric="val_accuracy",
            presets={
                # 784 steps make every model expensive on a CPU: the quick grid uses small ones.
                "quick": Preset(
                    epochs=2,
                    grace_period=1,
                    checkpoint_every=1,
                    loader={"val_size": 1000},
                    limit={"train": 512, "val": 256, "test": 256},
                    grid={"hidden_size": [16, 32]},
                ),
                # The pixel-by-pixel runs only start to learn after several epochs: a long grace period.
                "paper": Preset(epochs=10, grace_period=5, checkpoint_every=1),
            },
        ),
        Experiment(
            name="snp500-reconstruct",
            figures=("prices", "stock_reconstructions", "losses"),
            description="S&P 500 daily highs (53-day sequences, the study's normaliser), reconstruction",
            source="snp500",
            loader={"normalize": "study"},
            grid={"hidden_size": [40, 80, 120, 160], "lr": [1e-3, 1e-2], "grad_clip": [0.0, 1.0]},
            fixed={"batch_size": 32},
            metric="val_mse",
            presets={
                "quick": Preset(
                    epochs=5, grace_period=2, checkpoint_every=1, grid={"hidden_size": [8, 16]}, **_STOCKS_QUICK
                ),
                "paper": Preset(epochs=1000, grace_period=50, checkpoint_every=10),
            },
        ),
        Experiment(
            name="snp500-predict",
            figures=("losses", "forecasts"),
            description="S&P 500 daily highs, reconstruction + next-day prediction (causal predictor)",
            source="snp500",
            heads={"predict_next": True},
            grid={"hidden_size": [60, 120], "lr": [1e-3, 1e-2], "normalize": ["study", "first"]},
            fixed={"batch_size": 32, "grad_clip": 1.0},
            data_params=("normalize",),
            # In dollars: normalised errors do not compare across the two normalisers swept.
            metric="val_pred_mae_original",
            presets={
                "quick": Preset(
                    epochs=5, grace_period=2, checkpoint_every=1, grid={"hidden_size": [8, 16]}, **_STOCKS_QUICK
                ),
                "paper": Preset(epochs=3000, grace_period=100, checkpoint_every=20),
            },
        ),
    ]
}
