"""The report's figures: one short function per figure, taking DataFrames or tensors and returning a
matplotlib Figure. Fixed size and DPI, titles, units on the axes, and line styles (not colour alone) to tell
lines apart, so that every figure reads the same way in every report, in print and in grey.
"""

from __future__ import annotations

import functools
import io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sweeps import storage
from sweeps.experiments import best_column

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SIZE = (8, 4.5)  # inches
LINE = 70  # characters of a legend entry before it wraps (a title: twice that)
DPI = 110
STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")
FEW_EPOCHS = 25  # curves this short get a marker per epoch: a single epoch is a point, not an invisible line


FORMATS = ("png", "pdf", "svg")  # the first: the default


@functools.cache
def _pyplot():
    """matplotlib's pyplot, set up on first use: importing matplotlib builds its font cache in the home folder, and
    the command line, which reads FORMATS, writes nothing where a run is refused or help is asked for."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, same output on every machine
    import matplotlib.pyplot as plt

    # No offset on axes ("1e-5 + 1.1984" over a flat curve collides with the title): full tick values instead.
    plt.rcParams.update(
        {"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "axes.formatter.useoffset": False}
    )
    return plt


def _subplots(*args, **kwargs):
    return _pyplot().subplots(*args, layout="constrained", **kwargs)  # no overlapping titles and labels


def save(figure: Figure, path: str | Path, kind: str | None = None) -> str | Path:
    """In format `kind` (FORMATS; default: `path`'s suffix). PNG with a 256-colour palette: a few tens of KB per figure, no
    visible loss for line art; PDF and SVG as vectors, for papers.
    Written whole or not at all (a full disk leaves the previous figure, not half a new one)."""
    drawn, png = io.BytesIO(), io.BytesIO()
    kind = kind or Path(path).suffix.lstrip(".")
    figure.savefig(drawn, format=kind, dpi=DPI, bbox_inches="tight")
    _pyplot().close(figure)
    if kind != "png":
        storage.write_bytes(str(path), drawn.getvalue())
        return path
    drawn.seek(0)
    from PIL import Image

    Image.open(drawn).convert("RGB").quantize(colors=256).save(png, format="png", optimize=True)
    storage.write_bytes(str(path), png.getvalue())
    return path


def _log_if_positive(ax, values) -> None:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) and values.min() > 0 and values.max() / values.min() > 20:
        ax.set_yscale("log")


def _epoch_axis(ax, epochs: pd.Series) -> None:
    """Whole epochs on the x axis, with room around a curve of one or two epochs."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs.nunique() < 3:
        ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)


def _marker(epochs: pd.Series, marker: str = "o") -> str | None:
    return marker if epochs.nunique() <= FEW_EPOCHS else None


def validation_curves(
    metrics: pd.DataFrame, trials: pd.DataFrame, metric: str, best_id: str, best_label: str
) -> Figure:
    """Every trial's validation metric per epoch; the best in bold, named by `best_label` (its hyperparameter values);
    trials stopped early marked where they stopped, and where a trial waited (at a rung, or with the sweep) before it
    went on."""
    figure, ax = _subplots(figsize=SIZE)
    stopped = set(trials.loc[trials.stopped_early, "trial_id"])
    waited = _before_each_resume(metrics, metric)
    for trial_id, curve in metrics.groupby("trial_id"):
        if trial_id == best_id:
            continue
        ax.plot(
            curve.epoch,
            curve[metric],
            color="0.6",
            linewidth=0.8,
            linestyle="-",
            marker=_marker(metrics.epoch),
            markersize=3,
        )
        if trial_id in stopped:
            ax.plot(curve.epoch.iloc[-1], curve[metric].iloc[-1], marker="x", color="0.3", linestyle="none")
    best = metrics[metrics.trial_id == best_id]
    ax.plot(
        best.epoch,
        best[metric],
        color="black",
        linewidth=2.2,
        marker=_marker(metrics.epoch),
        label=textwrap.fill(f"best trial: {best_label}", LINE),
    )
    ax.plot([], [], color="0.6", linewidth=0.8, label="other trials")
    if stopped:
        ax.plot([], [], marker="x", color="0.3", linestyle="none", label="stopped early")
    if len(waited):
        ax.plot(waited.epoch, waited[metric], **WAITED, label="waited here, then went on")
    _log_if_positive(ax, metrics[metric])
    ax.set(title=f"{metric} of every trial", xlabel="epoch", ylabel=metric)
    _epoch_axis(ax, metrics.epoch)
    ax.legend()
    return figure


WAITED = dict(marker="o", markersize=6, markerfacecolor="none", color="tab:blue", linestyle="none")


def curve_marks(metrics: pd.DataFrame, trials: pd.DataFrame, metric: str) -> str:
    """What validation_curves' marks mean, for its caption: only the marks it draws."""
    marks = []
    if trials.stopped_early.any():
        marks.append("x where a trial was stopped early")
    if len(_before_each_resume(metrics, metric)):
        marks.append("o where a trial paused (at a rung, or with the whole sweep) and later went on from that epoch")
    return "".join(f", {mark}" for mark in marks)


def _before_each_resume(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The epochs after which a trial paused and later went on from its checkpoint (collect's `resumed`)."""
    if "resumed" not in metrics:  # tables written before collect recorded it
        return metrics.iloc[0:0]
    ordered = metrics.sort_values(["trial_id", "epoch"])
    goes_on = ordered.groupby("trial_id")["resumed"].shift(-1, fill_value=False).astype(bool)
    return ordered[goes_on & ordered[metric].notna()]


def hyperparameter_effect(trials: pd.DataFrame, name: str, metric: str, best_id: str) -> Figure:
    """Each trial's best validation value against one hyperparameter's value."""
    figure, ax = _subplots(figsize=SIZE)
    column, score = f"config/{name}", best_column(metric)
    values = trials[column]
    categorical = not pd.api.types.is_numeric_dtype(values)
    positions = values.map({v: i for i, v in enumerate(sorted(values.unique()))}) if categorical else values
    ax.plot(positions, trials[score], marker="o", linestyle="none", color="0.4", label="trial")
    best = trials.trial_id == best_id
    ax.plot(
        positions[best],
        trials.loc[best, score],
        marker="*",
        markersize=14,
        linestyle="none",
        color="black",
        label="best trial",
    )
    if categorical:
        ax.set_xticks(range(values.nunique()), sorted(values.unique()))
    elif name == "lr":
        ax.set_xscale("log")
    _log_if_positive(ax, trials[score])
    ax.set(title=f"best {metric} of each trial against {name}", xlabel=name, ylabel=f"best {metric}")
    ax.legend()
    return figure


def seed_spread(summary: pd.DataFrame, trials: pd.DataFrame, metric: str) -> Figure:
    """Each configuration's best value over its seeds: one point per seed, the mean with one standard deviation.
    `summary`: configurations ranked best first, with `label` (its values), `mean`, `std` and `members` (trial ids)."""
    figure, ax = _subplots(
        figsize=(SIZE[0], min(SIZE[1], 0.5 * len(summary) + 1.5) if len(summary) < 6 else 0.35 * len(summary) + 1)
    )
    score = trials.set_index("trial_id")[best_column(metric)]
    for row, config in enumerate(summary.itertuples()):
        ax.plot(
            score[list(config.members)],
            [row] * len(config.members),
            marker="o",
            linestyle="none",
            color="0.55",
            markersize=4,
        )
        ax.errorbar(config.mean, row, xerr=config.std, marker="D", color="black", capsize=3, markersize=5)
    ax.set_yticks(range(len(summary)), summary.label)
    ax.set_ylim(len(summary) - 0.5, -0.5)  # the best on top, half a row of room around each
    ax.plot([], [], marker="o", linestyle="none", color="0.55", label="one seed")
    ax.errorbar([], [], xerr=[], marker="D", color="black", capsize=3, label="mean ± 1 std over seeds")
    ax.set(title=f"best {metric} of each configuration over its seeds", xlabel=f"best {metric}")
    ax.legend()
    return figure


def importances(values: dict) -> Figure:
    figure, ax = _subplots(figsize=SIZE)
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="0.5", edgecolor="black", hatch="//")
    ax.set(title="hyperparameter importances (Optuna, fANOVA)", xlabel="importance (share of the metric's variance)")
    return figure


def signal_examples(examples: dict) -> Figure:
    """A few signals from each split, one panel each, a column per split: {"train": (k, T) array, ...}."""
    rows = max(len(signals) for signals in examples.values())
    figure, axes = _subplots(
        rows, len(examples), figsize=(SIZE[0], 1.6 * rows + 0.6), sharex=True, sharey=True, squeeze=False
    )
    for column, (split, signals) in enumerate(examples.items()):
        for row, signal in enumerate(signals):
            axes[row, column].plot(signal, color="black", linewidth=1)
        axes[0, column].set_title(split)
        axes[-1, column].set_xlabel("time step")
    for row in range(rows):
        axes[row, 0].set_ylabel("value")
    figure.suptitle("example signals from each split")
    return figure


# The y axis of each learning-curve panel (the data are scaled to [0, 1] or normalised: MSEs have no unit).
PART_LABELS = {
    "loss": "loss (weighted sum of the parts)",
    "mse": "reconstruction MSE",
    "ce": "cross-entropy (nats)",
    "pred_mse": "next-step prediction MSE",
    "accuracy": "accuracy (fraction correct)",
}


def learning_curves(history: pd.DataFrame, parts: list[str], title: str, chance: float | None = None) -> Figure:
    """Train (solid) and validation (dashed) curves of the best trial, one panel per loss part or metric; `chance`:
    the accuracy of guessing, drawn on accuracy panels."""
    figure, axes = _subplots(1, len(parts), figsize=SIZE, squeeze=False)
    for ax, part in zip(axes[0], parts):
        for split, style in (("train", "-"), ("val", "--")):
            column = f"{split}_{part}"
            if column in history:
                marker = _marker(history.epoch, "o" if split == "train" else "s")
                ax.plot(
                    history.epoch,
                    history[column],
                    linestyle=style,
                    color="black",
                    marker=marker,
                    markersize=4,
                    label=split,
                )
        if "accuracy" not in part:
            _log_if_positive(ax, history[[c for c in (f"train_{part}", f"val_{part}") if c in history]].values.ravel())
        elif chance is not None:
            ax.axhline(chance, color="0.5", linestyle=":", linewidth=1, label=f"chance ({chance:.0%})")
        ax.set(title=part, xlabel="epoch", ylabel=PART_LABELS.get(part, part))
        _epoch_axis(ax, history.epoch)
        ax.legend()
    figure.suptitle(textwrap.fill(title, 2 * LINE))
    return figure


def reconstructions(
    originals: np.ndarray,
    reconstructed: np.ndarray,
    baseline: np.ndarray,
    labels: list[str],
    ylabel: str,
    title: str,
    xlabel: str = "time step",
) -> Figure:
    """Original (solid) and reconstruction (dashed) of a few sequences, one panel each, beside the baseline
    (dotted: the training split's per-step mean, the best guess that knows nothing of the sequence)."""
    figure, axes = _subplots(len(originals), 1, figsize=(SIZE[0], 2 * len(originals)), sharex=True)
    for ax, original, recon, mean, label in zip(np.atleast_1d(axes), originals, reconstructed, baseline, labels):
        ax.plot(original, linestyle="-", color="black", label="original")
        ax.plot(recon, linestyle="--", color="0.45", label="reconstruction")
        ax.plot(mean, linestyle=":", color="0.6", label="per-step mean (baseline)")
        ax.set(title=label, ylabel=ylabel)
        ax.legend(loc="best")
    np.atleast_1d(axes)[-1].set_xlabel(xlabel)
    figure.suptitle(title)
    return figure


def digits(originals: np.ndarray, reconstructed: np.ndarray, mean_image: np.ndarray, labels: list[str]) -> Figure:
    """Test digits (28 x 28) drawn at random, originals above their reconstructions, and in the last column the
    baseline: the training split's mean image, what a reconstruction that learned nothing of the digit draws."""
    n = len(originals)
    figure, axes = _subplots(2, n + 1, figsize=(SIZE[0], SIZE[0] * 2.4 / (n + 1)))
    for i in range(n):
        for row, images in enumerate((originals, reconstructed)):
            _image(axes[row, i], images[i])
        axes[0, i].set_title(labels[i], fontsize=8)
    axes[0, n].set_axis_off()
    _image(axes[1, n], mean_image)
    axes[1, n].set_title("mean image\n(baseline)", fontsize=8)
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("reconstruction")
    figure.suptitle("test digits: originals (top) and reconstructions (bottom); the baseline, the mean image")
    return figure


def _image(ax, pixels: np.ndarray) -> None:
    ax.imshow(pixels.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([]), ax.set_yticks([])


def confusion(matrix: np.ndarray, accuracy: float) -> Figure:
    figure, ax = _subplots(figsize=(SIZE[1] * 1.3, SIZE[1] * 1.2))
    ax.imshow(matrix, cmap="Greys")
    ax.grid(False)
    threshold = matrix.max() / 2
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color="white" if count > threshold else "black")
    ax.set(
        title=f"test confusion matrix (accuracy {accuracy:.2%})",
        xlabel="predicted digit",
        ylabel="true digit",
        xticks=range(len(matrix)),
        yticks=range(len(matrix)),
    )
    return figure


def prices(frame: pd.DataFrame) -> Figure:
    """Daily highs by date, one line per ticker."""
    figure, ax = _subplots(figsize=SIZE)
    for i, ticker in enumerate(frame.columns):
        ax.plot(frame.index, frame[ticker], linestyle=STYLES[i % len(STYLES)], color="black", label=ticker)
    ax.set(
        title=f"daily high, {frame.index[0]:%Y-%m-%d} to {frame.index[-1]:%Y-%m-%d}",
        xlabel="date",
        ylabel="price (USD)",
    )
    ax.legend()
    figure.autofmt_xdate()
    return figure


def forecasts(truth: np.ndarray, lines: dict, labels: list[str], start: int, title: str) -> Figure:
    """Truth and forecasts of a few sequences in dollars; `lines` maps a name to (N, steps) forecasts from `start`."""
    figure, axes = _subplots(len(truth), 1, figsize=(SIZE[0], 2.2 * len(truth)), sharex=True)
    for k, (ax, label) in enumerate(zip(np.atleast_1d(axes), labels)):
        ax.plot(truth[k], color="black", linestyle="-", label="truth")
        for i, (name, values) in enumerate(lines.items()):
            steps = np.arange(start, start + values.shape[1])
            ax.plot(
                steps,
                values[k],
                linestyle=STYLES[(i + 1) % len(STYLES)],
                marker=MARKERS[i],
                markersize=2.5,
                color="0.4" if i else "0.1",
                label=name,
            )
        if start > 1:
            ax.axvline(start - 0.5, color="0.5", linestyle=":", linewidth=1)
        ax.set(title=label, ylabel="price (USD)")
        ax.legend(loc="best")
    np.atleast_1d(axes)[-1].set_xlabel("trading day in the sequence")
    figure.suptitle(title)
    return figure
