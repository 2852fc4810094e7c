"""A trial's checkpoint -> its metrics on a split, from what the checkpoint records alone.

    sweeps evaluate results/showcase/mnist-pixels-classify/model.pt --data ../shared/data [--split test] [--json]

In fp32 unless `--precision` says otherwise, whatever the precision of training: the figures are the same on every
machine, where a bf16 checkpoint evaluated under bf16 would need a CPU or GPU with bf16.

A checkpoint (`model.pt`) holds the model's config and weights, the training hyperparameters (the loss's mix,
the precision) and how its data was built (experiment, preset, seed, data path and data hyperparameters): the
split is rebuilt exactly as the trial saw it, from the data at `--data` where it has moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lstm_ae.data import DataError, Splits
from lstm_ae.model import LSTMAutoencoder
from lstm_ae.precision import PrecisionUnavailable
from lstm_ae.train import Hyperparameters, baseline_mse, evaluate
from sweeps import checkpoints, storage
from sweeps.errors import first_line
from sweeps.experiments import EXPERIMENTS, SOURCES

SPLITS = ("test", "val")  # the first: the default
PRECISION = "fp32"  # evaluated under unless asked otherwise: the same figures on every machine
BASELINE_SAID = (
    "baseline_mse: the MSE of drawing every sequence as the training split's per-step mean, for MNIST the mean image"
)


class EvaluationError(ValueError):
    """The checkpoint or the data cannot be evaluated: one line naming the file and the fix."""


@dataclass
class Trained:
    """A checkpoint's model, ready to evaluate, with the hyperparameters and data record it was saved with."""

    path: str  # where it was read: the checkpoint's folder (or a published model.pt), a local path or a URI
    model: LSTMAutoencoder
    hyperparameters: dict  # lstm_ae.train.Hyperparameters as a dict
    data: dict | None  # experiment, preset, seed, path, params (None in checkpoints older than this record)
    epoch: int  # of the weights: the trial's best epoch up to the checkpoint, or the checkpoint's own
    checkpoint_epoch: int  # the epoch the checkpoint was taken at


def load(path: str | Path) -> Trained:
    """A checkpoint's model from its `model.pt` or from the folder that holds it: the weights of the trial's best
    epoch up to the checkpoint where it keeps them, else those of the checkpoint's own epoch."""
    model_file = _model_file(str(path))
    if model_file is None:
        raise EvaluationError(f"{path} is not a checkpoint: pass a model.pt or a checkpoint_* folder of a trial")
    try:
        checkpoints.check_own_files(storage.parent_and_name(model_file)[0])
        state = checkpoints.load_state(model_file)
        # The trial's best epoch up to this checkpoint, where the checkpoint keeps it: from version 0.4 on; most of
        # results/showcase/ was trained before (docs/files.md, what earlier versions wrote).
        weights = state.get(checkpoints.BEST) or state
        model = LSTMAutoencoder.from_config(state["model_config"])
        model.load_state_dict(weights["model"])
    except checkpoints.CheckpointError as error:
        raise EvaluationError(f"{path} is not a usable checkpoint: {error.reason}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise EvaluationError(
            f"{path} is not a usable checkpoint ({type(error).__name__}: {first_line(error)})"
        ) from None
    model.eval()
    return Trained(
        storage.parent_and_name(model_file)[0],
        model,
        state.get("hyperparameters", {}),
        state.get("data"),
        int(weights["epoch"]),
        int(state["epoch"]),
    )


def _model_file(location: str) -> str | None:
    """The model.pt a location names (the file, or the folder holding it; local or a URI), or None."""
    if storage.is_local(location):
        path = Path(location)
        model = path / checkpoints.MODEL_FILE if path.is_dir() else path
        return str(model) if model.is_file() else None
    for candidate in (storage.join(location, checkpoints.MODEL_FILE), location):
        if storage.exists(candidate) and storage.parent_and_name(candidate)[1] == checkpoints.MODEL_FILE:
            return candidate
    return None


def splits_of(trained: Trained, data: str | None = None) -> Splits:
    """The splits the checkpoint's trial was trained on, from `data` where the data has moved."""
    record = trained.data
    if not record:
        raise EvaluationError(
            f"{trained.path} does not record its data (saved before checkpoints did): use `sweeps report` on its sweep"
        )
    entry = EXPERIMENTS.get(record["experiment"])
    if entry is None:
        raise EvaluationError(
            f"the checkpoint's experiment {record['experiment']!r} is not one of this version's: {', '.join(EXPERIMENTS)}"
        )
    path = data or record["path"]
    if SOURCES[entry.source].needs and data is None and not Path(path).exists():
        raise EvaluationError(f"the checkpoint's data {path} is not here: pass --data ({SOURCES[entry.source].needs})")
    try:
        splits = entry.load(path, record["seed"], record["preset"], **record["params"])
    except (DataError, ValueError) as error:
        raise EvaluationError(str(error)) from None
    _check_shape(trained, splits, path)
    return splits


def _check_shape(trained: Trained, splits: Splits, path) -> None:
    config = trained.model.config
    _, steps, features = splits.test.x.shape
    if features != config.input_size or (config.steps is not None and steps != config.steps):
        raise EvaluationError(
            f"the data at {path} has sequences of {steps} steps x {features} features, but the checkpoint was trained "
            f"on {config.steps or '?'} x {config.input_size}: pass the --data it was trained on"
        )


def metrics(trained: Trained, splits: Splits, split: str = SPLITS[0], precision: str = PRECISION) -> dict:
    """The checkpoint's metrics on `split` ("test" or "val") under `precision`: fp32 unless asked, whatever the
    checkpoint was trained in, so that every machine gets the same figures (bf16 needs hardware many lack); and
    `baseline_mse`, the MSE of the training split's per-step mean (the mean image), which `mse` must beat."""
    if split not in SPLITS:
        raise EvaluationError(f"unknown --split {split!r}: choose {' or '.join(SPLITS)}")
    hp, data = trained.hyperparameters, getattr(splits, split)
    normalizer = splits.meta.get("normalizer", {}).get(split)
    try:
        measured = evaluate(
            trained.model, data, hp.get("recon_weight", Hyperparameters.recon_weight), normalizer, precision=precision
        )
    except PrecisionUnavailable as error:
        raise EvaluationError(f"--precision {precision}: {error}") from None
    return {**measured, "baseline_mse": baseline_mse(splits.train, data)}


def trained_precision(trained: Trained) -> str:
    return trained.hyperparameters.get("precision", "fp32")
