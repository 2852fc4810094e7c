"""One way to run a sweep, for the command line, a notebook and the bench alike: `start` a new one, `resume` one.

    folder = runner.start(Sweep("synthetic"), "results", name="demo")   # Ray's files + Parquet tables
    runner.resume(folder)                                               # after an interruption

Each uses the Ray this process has already started (a notebook's `ray.init()`, the bench's, the tests'), or else
joins the cluster at `address` (or RAY_ADDRESS) or starts the embedded local one for the length of the sweep.
Everything that can be checked is checked before Ray starts, and raised as a SweepError: one line that names the
problem and the fix. A signal (Ctrl-C, SIGTERM, SIGHUP) ends either with SweepInterrupted, the sweep saved.
"""

from __future__ import annotations

import contextlib
import itertools

import ray

from lstm_ae.data import DataError
from sweeps import cluster, folder, lock, loggers, signals, storage, tuner
from sweeps.errors import SweepError, SweepInterrupted
from sweeps.experiments import SOURCES
from sweeps.sweep import FALLBACKS, STORAGE, Sweep, check_fallback, load_sweep


def start(
    sweep: Sweep,
    storage_path: str = STORAGE,
    name: str | None = None,
    address: str | None = None,
    dashboard: bool = True,
) -> str:
    """Run a new sweep to its end and write its tables; returns the sweep's folder. `dashboard`: whether the
    embedded local Ray starts its dashboard (a cluster's is the cluster's)."""
    sweep_dir, datasets = prepare(sweep, storage_path, name, address)
    folder.claim(sweep, sweep_dir)
    with _stopped_as_sweep(sweep_dir), lock.hold(sweep_dir), _ray(address, dashboard):
        return tuner.fit(tuner.new(sweep, datasets, sweep_dir), sweep_dir)


def resume(
    sweep_dir: str,
    on_corrupt_checkpoint: str = FALLBACKS[0],
    data: str | None = None,
    address: str | None = None,
    dashboard: bool = True,
) -> str:
    """Continue an interrupted sweep: finished trials stay as they are, the others go on from their last checkpoint
    (or, where it cannot be read, from their previous one or from scratch: `on_corrupt_checkpoint`); `data`: where
    the sweep's data is now, if it moved. A sweep stopped before Ray Tune saved anything starts as `sweep.json` says."""
    check_fallback(on_corrupt_checkpoint)
    sweep_dir = storage.absolute(sweep_dir)
    sweep = load_sweep(sweep_dir)  # a folder that is not a sweep is named as such, before any lock is taken in it
    with lock.hold(sweep_dir):  # one driver at a time: refused before Ray starts where another holds it
        if data:
            sweep.data = storage.absolute(data)
        _check(sweep, sweep_dir, address)
        folder.tidy(sweep_dir)
        analysis = folder.ray_state(sweep_dir)
        datasets = build_datasets(sweep)
        with _stopped_as_sweep(sweep_dir), _ray(address, dashboard):
            if analysis is None:  # stopped before Ray Tune saved anything
                made = tuner.new(sweep, datasets, sweep_dir)
            else:
                made = tuner.restored(sweep_dir, sweep, datasets, analysis, on_corrupt_checkpoint)
            return tuner.fit(made, sweep_dir)


def prepare(sweep: Sweep, storage_path: str, name: str | None, address: str | None = None) -> tuple[str, dict]:
    """A new sweep's checks, its data and its folder (not yet claimed): all before Ray starts."""
    if sweep.data:
        sweep.data = storage.absolute(sweep.data)  # resume and report may run from another folder
    _check(sweep, storage_path, address)
    sweep_dir = folder.place(sweep, storage_path, name)
    datasets = build_datasets(sweep)
    storage.require_writable(storage.absolute(storage_path), "--storage")
    return sweep_dir, datasets


def _check(sweep: Sweep, where: str, address: str | None) -> None:
    """The sweep itself; the cluster, or this machine's resources and precisions (unless this process has its Ray
    already); and what its loggers need (they come back with a resumed Tuner too)."""
    sweep.validate()
    if not ray.is_initialized():
        cluster.check(address, sweep)
    loggers.check_reachable(sweep.loggers, remote=not storage.is_local(where))


def build_datasets(sweep: Sweep) -> dict:
    """The data every trial may need, built once in the driver: one Splits per value of the data hyperparameters."""
    entry = sweep.entry
    source = SOURCES[entry.source]
    path = sweep.data_path()
    if source.needs and not path:
        raise SweepError(f"{sweep.experiment} needs --data: {source.needs}")
    grid = {**{k: [v] for k, v in sweep.fixed().items()}, **sweep.grid()}
    combos = itertools.product(*(grid[name] for name in entry.data_params))
    try:
        return {key: entry.load(path, sweep.seed, sweep.preset, **dict(zip(entry.data_params, key))) for key in combos}
    except (DataError, ValueError, TypeError) as error:  # a loader's own checks, or a data option of the wrong type
        raise SweepError(str(error)) from None


@contextlib.contextmanager
def _stopped_as_sweep(sweep_dir: str):
    """A signal before Tune's loop (Ray starting, the Tuner being built) stops the sweep as one in its loop does
    (tuner.fit): `sweeps resume` goes on from what was saved, or starts it where nothing was."""
    try:
        yield
    except KeyboardInterrupt as stop:
        raise SweepInterrupted(sweep_dir, signals.received(stop)) from None


@contextlib.contextmanager
def _ray(address: str | None, dashboard: bool):
    """The Ray this process has, or one for the length of the sweep (cluster.ray_session)."""
    if ray.is_initialized():
        yield
    else:
        with cluster.ray_session(address, dashboard):
            yield
