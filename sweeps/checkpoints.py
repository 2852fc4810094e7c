"""A trial's checkpoint: a folder with `model.pt` (model and optimiser state, model config, epoch, RNG state)
and `metrics.parquet` (every epoch so far). Read back with `torch.load(..., weights_only=True)`: a file that
carries pickled code is refused, not run.

A checkpoint that cannot be read (truncated by a full disk or a crash, tampered with) is named in the trial's
output, and the trial goes on from its previous readable checkpoint or from scratch, as the user chose
(`sweeps resume --corrupt-checkpoint previous|scratch`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pyarrow.fs
import torch
from ray import tune

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.parquet"
FALLBACKS = ("previous", "scratch")  # where a trial goes on when its checkpoint cannot be read


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a plain tensor file; the message names it."""


def save(folder: str | Path, state: dict, model_config: dict, history: list[dict]) -> None:
    folder = Path(folder)
    torch.save({**state, "model_config": model_config}, folder / MODEL_FILE)
    pd.DataFrame(history).to_parquet(folder / METRICS_FILE, index=False)


def load(folder: str | Path) -> tuple[dict, list[dict]]:
    """(state for `fit(start=...)`, with its `model_config`; the metrics of every epoch so far)."""
    folder = Path(folder)
    try:
        state = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
        history = pd.read_parquet(folder / METRICS_FILE).to_dict("records")
    except Exception as error:  # truncated zip, pickled code, missing file: all mean "not this checkpoint"
        raise CheckpointError(f"cannot read checkpoint {folder / MODEL_FILE}: {type(error).__name__}: {str(error).splitlines()[0]}") from error
    return state, history


def restore(checkpoint: tune.Checkpoint | None, fallback: str, trial: str) -> tuple[dict | None, list[dict]]:
    """The state and history to continue from: Ray's `checkpoint` or, where it cannot be read, the newest
    older checkpoint of the trial that can (`fallback="previous"`) or nothing (`"scratch"`)."""
    candidates = [checkpoint] if checkpoint is not None else []
    if checkpoint is not None and fallback == "previous":
        candidates += _older(checkpoint)
    for candidate in candidates:
        try:
            with candidate.as_directory() as folder:
                state, history = load(folder)
        except CheckpointError as error:
            print(f"trial {trial}: {error}", file=sys.stderr, flush=True)
            continue
        if candidate is not checkpoint:
            print(f"trial {trial}: going on from the previous checkpoint {candidate.path} (epoch {state['epoch']})", file=sys.stderr, flush=True)
        return state, history
    if candidates:
        print(f"trial {trial}: no readable checkpoint left: starting again from scratch", file=sys.stderr, flush=True)
    return None, []


def _older(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's checkpoints older than `checkpoint`, newest first (Ray names them checkpoint_<index>)."""
    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent, _, name = path.rpartition("/")
    siblings = fs.get_file_info(pyarrow.fs.FileSelector(parent))
    names = sorted((info.base_name for info in siblings if info.base_name.startswith("checkpoint_") and info.base_name < name), reverse=True)
    return [tune.Checkpoint(f"{parent}/{n}", filesystem=fs) for n in names]
