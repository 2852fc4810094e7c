"""A sweep's folder, before Ray starts: for a new sweep its name, that it is free and outside every other sweep, and
the claim that makes it the sweep's; for a resume, that Ray Tune's state there can be read.

    sweep_dir = folder.place(sweep, "results", "demo")   # SweepError where the name or the place will not do
    folder.claim(sweep, sweep_dir)                        # sweep.json, created exclusively
    folder.tidy(sweep_dir)                                # a stopped run's half-written files removed
    analysis = folder.ray_state(sweep_dir)                # Ray's record of the trials (None: none yet)
"""

from __future__ import annotations

import json
import pickletools
import sys
import time
from pathlib import Path

from ray import tune

from sweeps import collect, storage
from sweeps.errors import SweepError
from sweeps.sweep import NAME_LENGTH, NAME_PATTERN, SWEEP_FILE, Sweep, record


def place(sweep: Sweep, storage_path: str, name: str | None) -> str:
    """The new sweep's folder under `storage_path` (named after the sweep and the time unless `name` is given),
    checked: a plain name, storage pyarrow can use, outside every sweep, nothing there yet."""
    if name is None:
        name = storage.stamped(f"{sweep.experiment}-{sweep.preset}-{sweep.search}")
    if not NAME_PATTERN.match(name) or len(name) > NAME_LENGTH:
        shown = name if len(name) <= NAME_LENGTH else f"{name[:20]}...({len(name)} characters)"
        raise SweepError(
            f"sweep name {shown!r} must be 1 to {NAME_LENGTH} letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no path): it names one folder under the storage path"
        )
    storage.exists(storage_path)  # a StorageError naming --storage itself where pyarrow cannot use it
    _check_outside_sweeps(storage.absolute(storage_path))
    sweep_dir = storage.join(storage.absolute(storage_path), name)
    _check_free(sweep_dir)
    return sweep_dir


def _check_outside_sweeps(storage_path: str) -> None:
    """A sweep inside another's folder would be read as part of it (its trials, its tables) by status and report."""
    if not storage.is_local(storage_path):
        return
    for folder in (Path(storage_path), *Path(storage_path).parents):
        if (folder / SWEEP_FILE).is_file():
            raise SweepError(
                f"--storage {storage_path} is inside the sweep {folder}: choose a storage path outside every sweep folder"
            )


def _check_free(sweep_dir: str) -> None:
    if storage.exists(storage.join(sweep_dir, SWEEP_FILE)):
        raise SweepError(
            f"sweep folder {sweep_dir} already holds a sweep: continue it with `sweeps resume {sweep_dir}` or choose another --name"
        )
    if not storage.is_empty(sweep_dir):
        raise SweepError(
            f"{sweep_dir} exists and is not a sweep folder: choose another --name (nothing there was touched)"
        )


def claim(sweep: Sweep, sweep_dir: str) -> None:
    """Make the folder this sweep's, before anything else is written in it: its record is created exclusively, so
    of two runs given one --name at once, exactly one goes on (on local and NFS folders; see storage.create)."""
    _check_free(sweep_dir)
    storage.make_dirs(sweep_dir)
    try:
        storage.create(storage.join(sweep_dir, SWEEP_FILE), json.dumps(record(sweep), indent=2, default=str).encode())
    except FileExistsError:
        raise SweepError(f"sweep folder {sweep_dir} was just claimed by another run: choose another --name") from None


def ray_state(sweep_dir: str) -> tune.ExperimentAnalysis | None:
    """Ray Tune's record of the sweep's trials, read as the resume will read it (once: slow on a big sweep in S3);
    None where there is none (the sweep was stopped before its first trial), a SweepError where it is damaged, an
    OSError or StorageError where the storage itself fails."""
    if not collect.has_ray_state(sweep_dir):
        return None
    try:
        analysis = tune.ExperimentAnalysis(sweep_dir)  # reads the newest state file, as the resume will
    except (OSError, storage.StorageError):  # the storage itself: said as such by the command line, not as damage
        raise
    except Exception as error:  # Ray's own state file, damaged
        raise SweepError(
            f"{sweep_dir}: Ray Tune's state cannot be read ({type(error).__name__}); the tables and checkpoints "
            "there are intact: report it with `sweeps report`, or run it again under another --name"
        ) from None
    return analysis


def tidy(sweep_dir: str) -> None:
    """Before a resume: remove the files a stopped run left half-written under their temporary names (storage's own
    writes and Ray's, storage.for_ray), saying how many."""
    removed = storage.remove_temporaries(sweep_dir, before=time.time())
    if removed:
        print(
            f"sweeps: removed {len(removed)} half-written file(s) the stopped run left, such as {removed[0]}",
            file=sys.stderr,
            flush=True,
        )


def tuner_saved_whole(sweep_dir: str) -> bool:
    """Whether Ray's pickle of the sweep's Tuner (`tuner.pkl`) is whole, walked opcode by opcode (nothing in it runs).
    After a restore Ray uploads it again with every save of the experiment's state (Tune's
    sync_down_experiment_state stages every .pkl and .json of the folder), which before version 0.6 it did in place
    (storage.WholeFiles since): a driver killed in that upload left it cut short or empty. What it holds is the
    Tuner as the sweep began, which sweep.json describes whole."""
    try:
        for _ in pickletools.genops(storage.read_bytes(storage.join(sweep_dir, "tuner.pkl"))):
            pass
    except (FileNotFoundError, ValueError):
        return False
    return True
