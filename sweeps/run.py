"""The Tuner's life: a sweep (sweeps.sweep) as a Ray Tune `Tuner`: build its data, prepare and claim its folder,
run it, resume it.

    start_ray()                                              # sweeps.cluster: the embedded local Ray
    folder = run(Sweep("synthetic"), storage_path="results", name="demo")   # Ray's files + Parquet tables
    resume(folder)                                           # after an interruption

Everything that can be checked is checked before Ray starts, and raised as a SweepError: one line that
names the problem and the fix.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import pickletools
from pathlib import Path
from typing import NamedTuple

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.variant_generator import format_vars

from lstm_ae.data import DataError
from sweeps import checkpoints, collect, lock, loggers, schedulers, signals, storage
from sweeps.errors import SweepError, SweepInterrupted
from sweeps.experiments import SOURCES
from sweeps.sweep import (
    NAME_LENGTH,
    NAME_PATTERN,
    SWEEP_FILE,
    Sweep,
    check_fallback,
    command_line,
    load_sweep,
    record,
)
from sweeps.trial import TRIAL_NAME, run_trial, ship

OPTUNA_FILE = "optuna.journal"  # Optuna sweeps: the study, for optuna-dashboard and optuna.load_study


def param_space(sweep: Sweep) -> dict:
    """The trials' configs as Tune's search space: the fixed values, and the grid or Optuna's ranges."""
    space = {
        "experiment": sweep.experiment,
        "epochs": sweep.budget,
        "checkpoint_every": sweep.checkpoint_interval,
        "seed": sweep.seed,
        **sweep.fixed(),
    }
    if sweep.search == "optuna":
        return {**space, **{name: r.to_tune() for name, r in sweep.entry.optuna_space(sweep.grid()).items()}}
    # The grid's trials come in trial_order(); the space says which values each swept name takes.
    return {**space, **{k: tune.grid_search(list(v)) for k, v in sweep.swept().items()}}


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


def trainable(sweep: Sweep, datasets: dict, on_corrupt_checkpoint: str = "previous", name: str | None = None):
    """`name`: Ray's name for it (TRIAL_NAME unless given), which names the trials (<name>_<id>) and their folders
    (<name>_<id>_<values>)."""
    # with_parameters puts the data in the object store once; every trial on a node reads the same copy.
    resources = {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial}
    data = {"experiment": sweep.experiment, "preset": sweep.preset, "seed": sweep.seed, "path": sweep.data_path()}
    pause_at = tuple(schedulers.rungs(sweep)) if schedulers.pauses(sweep) else ()
    parameters = tune.with_parameters(
        run_trial, datasets=ship(datasets), data=data, on_corrupt_checkpoint=on_corrupt_checkpoint, pause_at=pause_at
    )
    # Ray takes the name from the function (Experiment.get_trainable_name, ray/tune/experiment/experiment.py) and
    # resumes a sweep only under the name it was made with (TunerInternal._validate_trainable).
    parameters.__name__ = name or TRIAL_NAME
    return tune.with_resources(parameters, resources)


def trial_folder(swept: tuple[str, ...], trial) -> str:
    """A trial's folder: its id and swept values, as Ray names a grid's trials (Ray's name for a trial given
    to it as a point lacks the values)."""
    return f"{trial}_{format_vars({(name,): trial.config[name] for name in swept if name in trial.config})}"


def make_tuner(sweep: Sweep, datasets: dict, sweep_dir: str, space: dict | None = None) -> tune.Tuner:
    """`space`: the trials' configs, param_space(sweep) unless given (the bench varies what a sweep cannot)."""
    entry = sweep.entry
    scheduler = schedulers.for_sweep(sweep) if sweep.early_stop else None
    if sweep.search == "optuna":
        search_alg = OptunaSearch(
            seed=sweep.seed, study_name=storage.parent_and_name(sweep_dir)[1], storage=optuna_storage(sweep_dir)
        )
        num_samples = sweep.num_samples or len(sweep.configs())
    else:
        trials = sweep.trial_order()
        # Tune ignores max_concurrent_trials when given a generator (ray/tune/tune.py, run(): it logs a warning and
        # drops it; a ConcurrencyLimiter wraps Searchers only): the generator holds the limit itself.
        search_alg = BasicVariantGenerator(points_to_evaluate=trials, max_concurrent=sweep.max_concurrent or 0)
        num_samples = len(trials)
    tune_config = tune.TuneConfig(
        metric=entry.running_best,
        mode=entry.mode,
        scheduler=scheduler,
        search_alg=search_alg,
        num_samples=num_samples,
        max_concurrent_trials=sweep.max_concurrent,
        reuse_actors=True,  # a fresh worker per short trial costs more than the trial itself
        trial_dirname_creator=functools.partial(trial_folder, tuple(sweep.swept())),
    )
    storage_path, name = storage.parent_and_name(sweep_dir)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage_path,
        failure_config=tune.FailureConfig(max_failures=3),  # a killed worker restarts from its last checkpoint
        # The two best checkpoints by the metric, and always the latest (to resume from; it also carries the best
        # epoch's weights, which older checkpoints lack). Ray snapshots the experiment each time a trial saved
        # num_to_keep checkpoints: 1 would snapshot at every checkpoint.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=entry.metric, checkpoint_score_order=entry.mode
        ),
        # result.json feeds collect; the others only when asked for (TensorBoard's doubled Tune's cost per epoch).
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *loggers.callbacks(sweep.loggers, sweep_dir)],
        verbose=1,
    )
    return tune.Tuner(
        trainable(sweep, datasets),
        param_space=space or param_space(sweep),
        tune_config=tune_config,
        run_config=run_config,
    )


def optuna_storage(sweep_dir: str):
    """Optuna's study as a journal file in a local sweep folder, which `optuna-dashboard PATH` shows live and
    `optuna.load_study` reads; Ray pickles the searcher with it, so a resumed sweep goes on writing the same file.
    A sweep on S3 or GCS keeps the study in memory (Optuna's journal needs a file system with appends)."""
    if not storage.is_local(sweep_dir):
        return None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(storage.join(sweep_dir, OPTUNA_FILE)))


def prepare(sweep: Sweep, storage_path: str, name: str | None) -> tuple[str, dict]:
    """Check the sweep, build its data and claim its folder: all before Ray starts."""
    sweep.validate()
    loggers.check_reachable(sweep.loggers, remote=not storage.is_local(storage_path))
    if sweep.data:
        sweep.data = storage.absolute(sweep.data)  # resume and report may run from another folder
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
    datasets = build_datasets(sweep)
    storage.require_writable(storage.absolute(storage_path), "--storage")
    return sweep_dir, datasets


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


def run(sweep: Sweep, storage_path: str = "results", name: str | None = None) -> str:
    """Run a sweep to its end (Ray must be started) and write its tables; returns the sweep's folder."""
    sweep_dir, datasets = prepare(sweep, storage_path, name)
    claim(sweep, sweep_dir)
    with lock.hold(sweep_dir):
        return run_tuner(make_tuner(sweep, datasets, sweep_dir), sweep_dir)


def resume(sweep_dir: str, on_corrupt_checkpoint: str = "previous", data: str | None = None) -> str:
    """Continue an interrupted sweep: finished trials stay as they are, the others go on from their last checkpoint
    (or, where it cannot be read, from their previous one or from scratch: `on_corrupt_checkpoint`); `data`: where
    the sweep's data is now, if it moved. Ray must be started."""
    sweep_dir = storage.absolute(sweep_dir)
    load_sweep(sweep_dir)  # a folder that is not a sweep is named as such, before any lock is taken in it
    with lock.hold(sweep_dir):
        return continue_sweep(sweep_dir, prepare_resume(sweep_dir, on_corrupt_checkpoint, data), on_corrupt_checkpoint)


class Resumable(NamedTuple):
    """What `prepare_resume` checked and read before Ray starts, for `continue_sweep`."""

    sweep: Sweep  # as recorded in sweep.json
    datasets: dict
    analysis: tune.ExperimentAnalysis  # Ray's record of the trials, read once (slow on a big sweep in S3)


def prepare_resume(sweep_dir: str, on_corrupt_checkpoint: str = "previous", data: str | None = None) -> Resumable:
    """resume's checks and data, before Ray starts."""
    check_fallback(on_corrupt_checkpoint)
    sweep_dir = storage.absolute(sweep_dir)
    sweep = load_sweep(sweep_dir)
    if data:
        sweep.data = storage.absolute(data)
    sweep.validate()
    loggers.check_reachable(
        sweep.loggers, remote=not storage.is_local(sweep_dir)
    )  # the loggers come back with the Tuner
    try:
        restorable = tune.Tuner.can_restore(sweep_dir)  # only looks for the state file: it may still be damaged
        if restorable:
            analysis = tune.ExperimentAnalysis(sweep_dir)  # reads the newest state file, as the resume will
            # The Tuner's pickle, walked opcode by opcode (nothing in it runs): whole, or a ValueError.
            for _ in pickletools.genops(storage.read_bytes(storage.join(sweep_dir, "tuner.pkl"))):
                pass
    except (OSError, storage.StorageError):  # the storage itself: said as such by the command line, not as damage
        raise
    except Exception as error:  # Ray's own state file, damaged
        raise SweepError(
            f"{sweep_dir}: Ray Tune's state cannot be read ({type(error).__name__}); the tables and checkpoints "
            "there are intact: report it with `sweeps report`, or run it again under another --name"
        ) from None
    if not restorable:
        raise SweepError(
            f"{sweep_dir} has no Ray Tune state to resume from (it was stopped before its first trial): "
            f"remove the folder and run `{command_line(sweep)}` again"
        )
    return Resumable(sweep, build_datasets(sweep), analysis)


def continue_sweep(sweep_dir: str, resumable: Resumable, on_corrupt_checkpoint: str = "previous") -> str:
    sweep_dir = storage.absolute(sweep_dir)
    checkpoints.mend_records(resumable.analysis)
    # The name the trials were made under, as Ray recorded it: `train` before version 0.2.
    trials = resumable.analysis.trials
    name = trials[0].trainable_name if trials else TRIAL_NAME
    tuner = tune.Tuner.restore(
        sweep_dir,
        trainable(resumable.sweep, resumable.datasets, on_corrupt_checkpoint, name=name),
        resume_unfinished=True,
        resume_errored=True,
    )
    return run_tuner(tuner, sweep_dir)


def run_tuner(tuner: tune.Tuner, sweep_dir: str) -> str:
    """Run the Tuner and write the tables; SweepInterrupted where a signal (Ctrl-C, SIGTERM, SIGHUP) stopped it first."""
    tune_settings()
    stop = signals.Stop()
    try:
        with _ray_logs_in_brief(), signals.stop_signals(stop):
            tuner.fit()  # on a stop signal, Tune saves the experiment's state and returns
    except KeyboardInterrupt:  # a signal before Tune's loop started: nothing of Tune's to save
        with contextlib.suppress(Exception):
            collect.write_tables(sweep_dir)
        raise SweepInterrupted(sweep_dir, stop.signal) from None
    except BaseException:
        # The tables keep what ran; failing to write them (Ray may have written no state yet) must not hide why.
        with contextlib.suppress(Exception):
            collect.write_tables(sweep_dir)
        raise
    trials, _ = collect.write_tables(sweep_dir)  # interrupted or not, the tables cover what has run
    if len(trials) and trials.status.isin(collect.UNFINISHED).any():
        raise SweepInterrupted(sweep_dir, stop.signal)
    return sweep_dir


class _DropResumeAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Resume experiment with: Tuner.restore" not in record.getMessage()


class _TrialFailureInOneLine(logging.Filter):
    """Tune logs each failed trial with the whole remote traceback (ray/tune/execution/tune_controller.py,
    _trial_task_failure): told here in one line, the exception's own last line; the traceback stays in the trial's
    error.txt, and the report names every trial's reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage().startswith("Trial task failed"):
            error = record.exc_info[1]
            lines = str(error).strip().splitlines()
            record.msg = (
                f"{record.getMessage()}: {lines[-1] if lines else type(error).__name__} (traceback in its error.txt)"
            )
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


@contextlib.contextmanager
def _ray_logs_in_brief():
    """Tune logs `Tuner.restore(...)` advice when interrupted (ray/tune/tune.py, the end of `run`); here the way
    back is `sweeps resume PATH`, which SweepInterrupted says instead. A failed trial is told in one line."""
    filters = [
        (logging.getLogger("ray.tune.tune"), _DropResumeAdvice()),
        (logging.getLogger("ray.tune.execution.tune_controller"), _TrialFailureInOneLine()),
    ]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


def tune_settings() -> None:
    """What Tune reads from the environment when a Tuner starts (new or resumed).
    - No TensorBoard: Tune adds its logger to the JSON and CSV ones of make_tuner unless told not to; it doubled
      Tune's own cost per reported epoch (`sweeps bench`), and nothing here reads it.
    - No warning that experiment snapshots come often: Tune forces one each time a trial has saved num_to_keep
      checkpoints, as make_tuner wants, and warns that it "may become a bottleneck" (a dozen times in `make demo`);
      in the quick grid the driver, snapshots and all, used 8% of the CPU time of each trial worker (measured)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
