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
    if checkpoint is None:
        return None, []
    checkpoint = _latest(checkpoint, trial)
    candidates = [checkpoint] + (_older(checkpoint) if fallback == "previous" else [])
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
    print(f"trial {trial}: no readable checkpoint left: starting again from scratch", file=sys.stderr, flush=True)
    return None, []


def _latest(recorded: tune.Checkpoint, trial: str) -> tune.Checkpoint:
    """The trial's latest checkpoint. Ray deletes a checkpoint only once a newer one is saved, but writes its
    own record of the experiment only every few checkpoints: a driver killed in between leaves a record that
    names a deleted checkpoint, and the newest one on disk is the latest."""
    if recorded.filesystem.get_file_info(recorded.path).type != pyarrow.fs.FileType.NotFound:
        return recorded
    newer = [name for name in _checkpoint_names(recorded) if name > _name(recorded)]
    if not newer:
        return recorded  # gone for another reason: reading it names the problem
    latest = tune.Checkpoint(f"{_parent(recorded)}/{max(newer)}", filesystem=recorded.filesystem)
    print(f"trial {trial}: Ray's record names {recorded.path}, deleted since as a newer one replaced it: going on from {latest.path}", file=sys.stderr, flush=True)
    return latest


def _older(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's checkpoints older than `checkpoint`, newest first (Ray names them checkpoint_<index>)."""
    names = sorted((name for name in _checkpoint_names(checkpoint) if name < _name(checkpoint)), reverse=True)
    return [tune.Checkpoint(f"{_parent(checkpoint)}/{name}", filesystem=checkpoint.filesystem) for name in names]


def _checkpoint_names(checkpoint: tune.Checkpoint) -> list[str]:
    """The names of every checkpoint folder of `checkpoint`'s trial."""
    siblings = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(_parent(checkpoint), allow_not_found=True))
    return [info.base_name for info in siblings if info.base_name.startswith("checkpoint_")]


def _parent(checkpoint: tune.Checkpoint) -> str:
    return checkpoint.path.rstrip("/").rpartition("/")[0]


def _name(checkpoint: tune.Checkpoint) -> str:
    return checkpoint.path.rstrip("/").rpartition("/")[2]
