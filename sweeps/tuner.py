"""A sweep (sweeps.sweep) as a Ray Tune `Tuner`: its search space, trainable, scheduler, searcher and settings; a new
Tuner or one restored from the sweep's folder; its run, which writes the Parquet tables and turns a stop signal into
SweepInterrupted. `sweeps.runner` is the way in: it checks everything first and provides Ray.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.variant_generator import format_vars

from sweeps import checkpoints, collect, folder, loggers, schedulers, signals, storage
from sweeps.errors import SweepInterrupted
from sweeps.sweep import FALLBACKS, Sweep
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


def trainable(sweep: Sweep, datasets: dict, on_corrupt_checkpoint: str = FALLBACKS[0], name: str | None = None):
    """`name`: Ray's name for it (TRIAL_NAME unless given), which names the trials (<name>_<id>) and their folders
    (<name>_<id>_<values>)."""
    # with_parameters puts the data in the object store once; every trial on a node reads the same copy.
    resources = {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial}
    source = {"experiment": sweep.experiment, "preset": sweep.preset, "seed": sweep.seed, "path": sweep.data_path()}
    pause_at = tuple(schedulers.rungs(sweep)) if schedulers.pauses(sweep) else ()
    parameters = tune.with_parameters(
        run_trial,
        datasets=ship(datasets),
        source=source,
        on_corrupt_checkpoint=on_corrupt_checkpoint,
        pause_at=pause_at,
    )
    # Ray takes the name from the function (Experiment.get_trainable_name, ray/tune/experiment/experiment.py) and
    # resumes a sweep only under the name it was made with (TunerInternal._validate_trainable).
    parameters.__name__ = name or TRIAL_NAME
    return tune.with_resources(parameters, resources)


def trial_folder(swept: tuple[str, ...], trial) -> str:
    """A trial's folder: its id and swept values, as Ray names a grid's trials (Ray's name for a trial given
    to it as a point lacks the values)."""
    return f"{trial}_{format_vars({(name,): trial.config[name] for name in swept if name in trial.config})}"


def new(sweep: Sweep, datasets: dict, sweep_dir: str) -> tune.Tuner:
    """The sweep's Tuner, writing in `sweep_dir`; `datasets`: the data built in the driver (runner.build_datasets)."""
    entry = sweep.entry
    scheduler = schedulers.for_sweep(sweep) if sweep.early_stop else None
    if sweep.search == "optuna":
        search_alg = OptunaSearch(
            seed=sweep.seed, study_name=storage.parent_and_name(sweep_dir)[1], storage=optuna_storage(sweep_dir)
        )
    else:
        # Tune ignores max_concurrent_trials when given a generator (ray/tune/tune.py, run(): it logs a warning and
        # drops it; a ConcurrencyLimiter wraps Searchers only): the generator holds the limit itself.
        search_alg = BasicVariantGenerator(
            points_to_evaluate=sweep.trial_order(), max_concurrent=sweep.max_concurrent or 0
        )
    config = tune_config(
        metric=entry.running_best,
        mode=entry.mode,
        scheduler=scheduler,
        search_alg=search_alg,
        num_samples=sweep.planned_trials(),
        max_concurrent_trials=sweep.max_concurrent,
        trial_dirname_creator=functools.partial(trial_folder, tuple(sweep.swept())),
    )
    storage_path, name = storage.parent_and_name(sweep_dir)
    storage_path, filesystem = storage.for_ray(storage_path)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage_path,
        storage_filesystem=filesystem,
        failure_config=tune.FailureConfig(max_failures=3),  # a killed worker restarts from its last checkpoint
        # The two best checkpoints by the metric, and always the latest (to resume from; it also carries the best
        # epoch's weights, which older checkpoints lack). Ray snapshots the experiment each time a trial saved
        # num_to_keep checkpoints: 1 would snapshot at every checkpoint.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=entry.metric, checkpoint_score_order=entry.mode
        ),
        callbacks=[*result_loggers(), *loggers.callbacks(sweep.loggers, sweep_dir)],
        verbose=1,
    )
    return tune.Tuner(
        trainable(sweep, datasets), param_space=param_space(sweep), tune_config=config, run_config=run_config
    )


def tune_config(**options) -> tune.TuneConfig:
    """Tune's settings for a sweep here, `options` on top: trial workers reused, as a fresh worker per short trial
    costs more than the trial itself."""
    return tune.TuneConfig(reuse_actors=True, **options)


def result_loggers() -> list:
    """Tune's result files of every trial: result.json feeds collect, progress.csv is for people; the other loggers
    only when asked for (TensorBoard's doubled Tune's cost per epoch)."""
    return [ResultJson(), ProgressCsv()]


class _KeepsTheDriversFile:
    """Tune's JSON and CSV loggers copy a trial's file from the sweep's storage over the driver's own each time the
    trial starts from a checkpoint (LoggerCallback._restore_from_remote, Ray 2.60), to carry the file over to a new
    driver. In the same driver that copy is as old as the last sync of the driver's files to storage (every 10 s or
    so): a trial that goes on after a pause at a rung or a killed worker lost the results logged since, for good
    (seen: the epoch a trial paused at, gone from its result.json). The driver's own file, where it has one, is never
    older. (Saved in tuner.pkl by name: a rename breaks resuming the sweeps made before it.)"""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if not os.path.exists(os.path.join(trial.local_path, file_name)):
            super()._restore_from_remote(file_name, trial)


class ResultJson(_KeepsTheDriversFile, JsonLoggerCallback):
    pass


class ProgressCsv(_KeepsTheDriversFile, CSVLoggerCallback):
    pass


def optuna_storage(sweep_dir: str):
    """Optuna's study as a journal file in a local sweep folder, which `optuna-dashboard PATH` shows live and
    `optuna.load_study` reads; Ray pickles the searcher with it, so a resumed sweep goes on writing the same file.
    A sweep on S3 or GCS keeps the study in memory (Optuna's journal needs a file system with appends)."""
    if not storage.is_local(sweep_dir):
        return None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(storage.join(sweep_dir, OPTUNA_FILE)))


def restored(
    sweep_dir: str, sweep: Sweep, datasets: dict, analysis: tune.ExperimentAnalysis, on_corrupt_checkpoint: str
) -> tune.Tuner:
    """The sweep's Tuner as Ray saved it, to go on with its unfinished and errored trials; `analysis`: Ray's record
    of them (folder.ray_state), whose checkpoint records are mended first, as is a tuner.pkl cut short."""
    checkpoints.mend_records(analysis)
    if not folder.tuner_saved_whole(sweep_dir):
        new(sweep, datasets, sweep_dir)  # Tune's constructor saves tuner.pkl again: the Tuner as the sweep began
    # The name the trials were made under, as Ray recorded it: `train` before version 0.2 (docs/files.md: a sweep of
    # any earlier version resumes).
    name = analysis.trials[0].trainable_name if analysis.trials else TRIAL_NAME
    path, filesystem = storage.for_ray(sweep_dir)
    return tune.Tuner.restore(
        path,
        trainable(sweep, datasets, on_corrupt_checkpoint, name=name),
        resume_unfinished=True,
        resume_errored=True,
        storage_filesystem=filesystem,
    )


def fit(tuner: tune.Tuner, sweep_dir: str) -> str:
    """Run the Tuner and write the tables; SweepInterrupted where a signal (Ctrl-C, SIGTERM, SIGHUP) stopped it in
    Tune's loop (before it, the KeyboardInterrupt goes on: runner.start and resume tell it as SweepInterrupted)."""
    tune_settings()
    stop = signals.Stop()
    try:
        with _ray_logs_in_brief(), signals.stop_signals(stop):
            tuner.fit()  # on a stop signal, Tune saves the experiment's state and returns
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


def skip_usage_tags() -> None:
    """Tune tags its usage statistics with the sweep's callbacks as it starts, importing every logger integration it
    knows to count them (MLflow's and W&B's import mlflow, fastapi and wandb where installed, as `make install`
    installs them: 1.7 s of each sweep's start in the driver), whether the statistics are sent or not
    (ray/air/_internal/usage.py tag_callbacks, Ray 2.60). They are off here unless a user turned them on
    (cluster.keep_ray_local): then there is nothing to count."""
    from ray._common.usage.usage_lib import usage_stats_enabled
    from ray.air._internal import usage

    if not usage_stats_enabled():
        usage.tag_callbacks = lambda callbacks: False


def tune_settings() -> None:
    """What Tune reads from the environment when a Tuner starts (new or resumed), and no usage tags (skip_usage_tags).
    - No TensorBoard: Tune adds its logger to the JSON and CSV ones of make_tuner unless told not to; it doubled
      Tune's own cost per reported epoch (`sweeps bench`), and nothing here reads it.
    - No warning that experiment snapshots come often: Tune forces one each time a trial has saved num_to_keep
      checkpoints, as make_tuner wants, and warns that it "may become a bottleneck" (a dozen times in `make demo`);
      in the quick grid the driver, snapshots and all, used 8% of the CPU time of each trial worker (measured)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    skip_usage_tags()
