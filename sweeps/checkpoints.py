"""A trial's checkpoint: a folder with `model.pt` (model and optimiser state, model config, epoch, RNG state,
and under `best` the weights of the trial's best epoch so far) and `metrics.parquet` (every epoch so far). Read
back with `torch.load(..., weights_only=True)`: a file that carries pickled code is refused, not run.

A checkpoint that cannot be read (truncated by a full disk or a crash, tampered with) is named in the trial's
output, and the trial goes on from its previous readable checkpoint or from scratch, as the user chose
(`sweeps resume --corrupt-checkpoint previous|scratch`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.fs
import torch

from lstm_ae.model import LSTMAutoencoder
from sweeps import storage

if TYPE_CHECKING:
    from ray import tune

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.parquet"
BEST = "best"  # model.pt's entry for the best epoch so far: {"model": weights, "epoch": int, "value": metric}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, not a plain tensor file or inconsistent; the message names it."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot read checkpoint {path}: {reason}")
        self.reason = reason


def save(folder: str | Path, state: dict, model_config: dict, history: list[dict], data: dict) -> None:
    """`data`: what rebuilds the trial's splits (experiment, preset, seed, path, data hyperparameters), so that
    `sweeps evaluate` needs the model.pt alone."""
    folder = Path(folder)
    torch.save({**state, "model_config": model_config, "data": data}, folder / MODEL_FILE)
    pd.DataFrame(history).to_parquet(folder / METRICS_FILE, index=False)


def load(folder: str | Path) -> tuple[dict, list[dict]]:
    """(state for `fit(start=...)`, with its `model_config`; the metrics of every epoch so far)."""
    folder = Path(folder)
    check_own_files(str(folder))
    state = load_state(folder / MODEL_FILE)
    try:
        history = pd.read_parquet(folder / METRICS_FILE).to_dict("records")
    except Exception as error:  # truncated, missing, not Parquet: all mean "not this checkpoint"
        raise CheckpointError(folder / METRICS_FILE, _described(error)) from error
    return state, history


def check_own_files(folder: str) -> None:
    """CheckpointError where a file of the checkpoint `folder` is a symbolic link: Ray writes plain files, and a
    link could make a sweep read (and `report --out` publish) any file of the machine as one of its checkpoints."""
    if not storage.is_local(folder):
        return  # object stores have no links
    for name in (MODEL_FILE, METRICS_FILE):
        path = Path(folder) / name
        if path.is_symlink():
            raise CheckpointError(
                path,
                f"it is a symbolic link (to {os.readlink(path)}), not a file the trial "
                "wrote; nothing outside the sweep is read as a checkpoint",
            )


def best_weights(state: dict | None, history: list[dict], metric: str) -> dict | None:
    """The best epoch's weights a restored `state` carries; for a checkpoint written before they were kept
    (version 0.3: docs/files.md, what earlier versions wrote), its own weights, which later epochs must then beat.
    None: no state (a fresh start)."""
    if state is None:
        return None
    if state.get(BEST):
        return state[BEST]
    value = history[-1][metric] if history else math.nan
    return {"model": state["model"], "epoch": state["epoch"], "value": value}


def read_history(checkpoint: tune.Checkpoint) -> pd.DataFrame:
    """Every epoch `checkpoint` records (its metrics file alone, local or remote)."""
    path = f"{checkpoint.path.rstrip('/')}/{METRICS_FILE}"
    try:
        return pd.read_parquet(path, filesystem=storage.native(checkpoint.filesystem))
    except Exception as error:  # truncated, missing, not Parquet
        raise CheckpointError(path, _described(error)) from error


def read_newest_history(checkpoint: tune.Checkpoint) -> pd.DataFrame:
    """Every epoch the newest readable of `checkpoint` and the checkpoints its trial saved after it records (see
    `restore`: Ray's record can lag behind the trial's files); CheckpointError (`checkpoint`'s) where none can be read."""
    histories, first_error = [], None
    for candidate in [checkpoint, *_newer(checkpoint)]:
        try:
            histories.append(read_history(candidate))
        except CheckpointError as error:
            first_error = first_error or error
    if not histories:
        raise first_error
    return max(histories, key=lambda history: history["epoch"].max() if len(history) else 0)


def load_state(path: str | Path) -> dict:
    """A model.pt's contents (a local path or a URI); CheckpointError where it cannot be read or carries code."""
    try:
        source = io.BytesIO(storage.read_bytes(str(path))) if not storage.is_local(str(path)) else path
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickled code, missing file: all mean "not this checkpoint"
        raise CheckpointError(path, _described(error)) from error
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(path, "not a trial's checkpoint (no model state)")
    _check_weights_fit(path, state)
    return state


def _check_weights_fit(path: str | Path, state: dict) -> None:
    """CheckpointError where the weights (the checkpoint's own or its best epoch's) do not fit the model configuration
    it records: loading them would fail with PyTorch's many-line report, or a tampered configuration would rebuild
    another model than the one trained."""
    if "model_config" not in state:
        return  # its reader builds the model from the trial's configuration (resume) and loads it there
    for weights in (state["model"], (state.get(BEST) or {}).get("model")):
        try:
            misfit = weights is not None and LSTMAutoencoder.misfit(state["model_config"], weights)
        except (TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(
                path, f"its model configuration does not build a model ({_described(error)})"
            ) from error
        if misfit:
            raise CheckpointError(path, f"its weights do not fit its model configuration: {misfit}")


def _described(error: Exception) -> str:
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def restore(checkpoint: tune.Checkpoint | None, fallback: str, trial: str) -> tuple[dict | None, list[dict]]:
    """The state and history to continue from: the newest readable of Ray's `checkpoint` and the trial's checkpoints
    written after it, or, where none of those can be read, the newest older one that can (`fallback="previous"`) or
    nothing (`"scratch"`). Ray writes its record of the sweep only now and then (see `mend_records`): a driver killed
    in between leaves it naming an older checkpoint than the trial's last, and going on from that one would train the
    epochs between twice, the last ones of a trial that had finished included."""
    if checkpoint is None:
        return None, []
    readable = _readable([checkpoint, *_newer(checkpoint)], trial)
    if readable:
        newest = max(readable, key=lambda candidate: readable[candidate][0]["epoch"])
        if newest is not checkpoint:
            _say_going_on(
                trial, "its newest checkpoint", newest, readable[newest], ", which Ray's record had not caught up with"
            )
        return readable[newest]
    for candidate in _older(checkpoint) if fallback == "previous" else []:
        if loaded := _readable([candidate], trial):
            _say_going_on(trial, "the previous checkpoint", candidate, loaded[candidate])
            return loaded[candidate]
    print(f"trial {trial}: no readable checkpoint left: starting again from scratch", file=sys.stderr, flush=True)
    return None, []


def _readable(candidates: list[tune.Checkpoint], trial: str) -> dict:
    """Checkpoint -> (state, history), for those of `candidates` that can be read; the others named in the trial's
    output."""
    readable = {}
    for candidate in candidates:
        try:
            with _folder(candidate) as folder:
                readable[candidate] = load(folder)
        except CheckpointError as error:
            print(f"trial {trial}: {error}", file=sys.stderr, flush=True)
    return readable


@contextlib.contextmanager
def _folder(checkpoint: tune.Checkpoint):
    """The checkpoint's folder where it is on this machine, else a copy (Ray's as_directory, which also copies one
    on a file system it does not know as this machine's own: storage.for_ray's, whose links the copy would hide)."""
    if storage.on_this_machine(checkpoint.filesystem):
        yield checkpoint.path
    else:
        with checkpoint.as_directory() as folder:
            yield folder


def _say_going_on(trial: str, which: str, checkpoint: tune.Checkpoint, loaded: tuple, why: str = "") -> None:
    print(
        f"trial {trial}: going on from {which} {checkpoint.path} (epoch {loaded[0]['epoch']}){why}",
        file=sys.stderr,
        flush=True,
    )


def mend_records(analysis: tune.ExperimentAnalysis) -> None:
    """Before a resume: put back, under its name, each checkpoint that Ray's record of the sweep names but that is
    gone. Ray deletes a checkpoint as soon as a newer one replaces it (ray/train/_internal/checkpoint_manager.py)
    but writes its record only now and then (ray/tune/execution/experiment_state.py): a
    driver killed in between leaves a record naming a deleted checkpoint, from which Ray refuses to resume the trial
    ("does not exist on storage anymore"). The trial's newest readable checkpoint takes its place, even one newer
    than the driver's logged results (the epochs between are in its own history, which `collect` reads); with none,
    the folder stays empty and the trial starts again (see `restore`). `analysis`: Ray's record of the sweep."""
    for trial in analysis.trials:
        recorded = trial.checkpoint
        if recorded is None or recorded.filesystem.get_file_info(recorded.path).type != pyarrow.fs.FileType.NotFound:
            continue
        source = _newest_readable(recorded)
        recorded.filesystem.create_dir(recorded.path)
        if source is not None:
            pyarrow.fs.copy_files(
                source.path,
                recorded.path,
                source_filesystem=source.filesystem,
                destination_filesystem=recorded.filesystem,
            )
        print(
            f"trial {trial.trial_id}: Ray's record names {recorded.path}, which is gone: going on from "
            f"{source.path if source else 'scratch'}",
            file=sys.stderr,
            flush=True,
        )


def _newest_readable(checkpoint: tune.Checkpoint) -> tune.Checkpoint | None:
    """The readable checkpoint of `checkpoint`'s trial with the latest epoch (by epoch, not by name: after a mend
    the name Ray's record uses can hold a later epoch than higher-numbered folders Ray no longer tracks)."""
    readable = {}
    for candidate in _siblings(checkpoint):
        try:
            with _folder(candidate) as folder:
                readable[candidate] = load(folder)[0]["epoch"]
        except CheckpointError:
            continue
    return max(readable, key=readable.get, default=None)


def _older(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's checkpoints older than `checkpoint`, newest first."""
    return [sibling for sibling in _siblings(checkpoint) if _name(sibling) < _name(checkpoint)]


def _newer(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's checkpoints Ray saved after `checkpoint` (later names), newest first."""
    return [sibling for sibling in _siblings(checkpoint) if _name(sibling) > _name(checkpoint)]


def _siblings(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """Every checkpoint of `checkpoint`'s trial, newest first (Ray names them checkpoint_<index>)."""
    names = sorted(_checkpoint_names(checkpoint), reverse=True)
    return [type(checkpoint)(f"{_parent(checkpoint)}/{name}", filesystem=checkpoint.filesystem) for name in names]


def _checkpoint_names(checkpoint: tune.Checkpoint) -> list[str]:
    """The names of every checkpoint folder of `checkpoint`'s trial."""
    siblings = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(_parent(checkpoint), allow_not_found=True))
    return [info.base_name for info in siblings if info.base_name.startswith("checkpoint_")]


def _parent(checkpoint: tune.Checkpoint) -> str:
    return checkpoint.path.rstrip("/").rpartition("/")[0]


def _name(checkpoint: tune.Checkpoint) -> str:
    return checkpoint.path.rstrip("/").rpartition("/")[2]
