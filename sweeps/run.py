"""The runner: an experiment's sweep as a Ray Tune `Tuner`, on the embedded local Ray or a running cluster.

    sweep = Sweep("synthetic", preset="quick")
    folder = run(sweep, storage="results", name="demo")     # results/demo/: Ray's files + Parquet tables
    resume(folder)                                           # after an interruption

Everything that can be checked is checked before Ray starts, and raised as a SweepError: one line that
names the problem and the fix.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.variant_generator import format_vars

from lstm_ae.data import DataError
from sweeps import checkpoints, collect, hyperparameters, storage
from sweeps.checkpoints import FALLBACKS
from sweeps.experiments import EXPERIMENTS, SOURCES, Experiment
from sweeps.trial import ship, train

SEARCHES = ("grid", "optuna")
SWEEP_FILE = "sweep.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SweepError(Exception):
    """Bad input for a sweep: the message is one line that names the problem and the fix."""


@dataclass
class Sweep:
    """What defines a sweep; recorded in sweep.json so that `resume` rebuilds exactly the same one."""

    experiment: str
    preset: str = "quick"
    search: str = "grid"
    num_samples: int | None = None  # grid: repeats with seeds seed, seed+1, ...; optuna: trials (default: grid size)
    early_stop: bool = True
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    data: str | None = None  # MNIST's root folder or the S&P 500 CSV
    seed: int = 0
    epochs: int | None = None  # None: the preset's
    overrides: dict = field(default_factory=dict)  # hyperparameter -> values, from --set

    @property
    def entry(self) -> Experiment:
        return EXPERIMENTS[self.experiment]

    @property
    def budget(self) -> int:
        return self.epochs or self.entry.presets[self.preset].epochs

    def grid(self) -> dict:
        """The swept hyperparameters and their values: the preset's grid, with --set applied."""
        grid = {**self.entry.grid_for(self.preset), **{k: v for k, v in self.overrides.items() if len(v) > 1}}
        return {k: v for k, v in grid.items() if k not in self._pinned()}

    def fixed(self) -> dict:
        """The hyperparameters that take one value: the study's fixed ones, and those pinned with --set."""
        return {**{k: v for k, v in self.entry.fixed.items() if k not in self.grid()}, **self._pinned()}

    def configs(self) -> list[dict]:
        """Every point of the grid, with the fixed hyperparameters: the trials a grid search runs (per seed)."""
        return [{**self.fixed(), **point} for point in _points(self.grid())]

    def swept(self) -> dict:
        """What differs between a grid search's trials: the grid, and the seed of each repeat (--num-samples)."""
        seeds = {"seed": list(range(self.seed, self.seed + self.num_samples))} if self.num_samples and self.num_samples > 1 else {}
        return {**seeds, **self.grid()}

    def trial_order(self) -> list[dict]:
        """The swept values of each trial of a grid search, in a random order fixed by the seed. ASHA stops a trial
        that falls behind those that reached its rung before it; in the grid's own order the first arrivals all
        come from one corner (the small lr first), set a low bar and run long (measured: figure 5 of `sweeps bench`)."""
        points = _points(self.swept())
        random.Random(self.seed).shuffle(points)
        return points

    def _pinned(self) -> dict:
        return {k: v[0] for k, v in self.overrides.items() if len(v) == 1}

    def data_path(self) -> str | None:
        return self.data or SOURCES[self.entry.source].default_path

    def param_space(self) -> dict:
        preset = self.entry.presets[self.preset]
        space = {
            "experiment": self.experiment,
            "epochs": self.budget,
            "checkpoint_every": preset.checkpoint_every,
            "seed": self.seed,
            **self.fixed(),
        }
        if self.search == "optuna":
            return {**space, **self.entry.optuna_space(self.grid())}
        # The grid's trials come in trial_order(); the space says which values each swept name takes.
        return {**space, **{k: tune.grid_search(list(v)) for k, v in self.swept().items()}}

    def validate(self) -> None:
        """Everything that can be known wrong before Ray starts, as a SweepError."""
        if self.experiment not in EXPERIMENTS:
            raise SweepError(f"unknown experiment {self.experiment!r}: choose one of {', '.join(EXPERIMENTS)} (see `sweeps list`)")
        if self.preset not in self.entry.presets:
            raise SweepError(f"unknown preset {self.preset!r}: choose one of {', '.join(self.entry.presets)}")
        if self.search not in SEARCHES:
            raise SweepError(f"unknown search {self.search!r}: choose grid or optuna")
        allowed = hyperparameters.NAMES + self.entry.data_params
        for name in self.overrides:
            if name not in allowed:
                raise SweepError(f"unknown hyperparameter {name!r} in --set: choose among {', '.join(allowed)}")
        self._check_numbers()
        self._check_hyperparameters()

    def _check_numbers(self) -> None:
        checks = [
            (self.epochs is not None and self.epochs < 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.num_samples is not None and self.num_samples < 1, f"--num-samples must be at least 1, got {self.num_samples}"),
            (not self.cpus_per_trial > 0, f"--cpus-per-trial must be positive, got {self.cpus_per_trial}"),
            (self.max_concurrent is not None and self.max_concurrent < 1, f"--max-concurrent must be at least 1, got {self.max_concurrent}"),
            (not _is_gpu_share(self.gpus_per_trial), f"--gpus-per-trial must be 0, 1/k (0.5, 0.25, ...) or a whole number, got {self.gpus_per_trial}"),
        ]
        for failed, message in checks:
            if failed:
                raise SweepError(message)

    def _check_hyperparameters(self) -> None:
        """Every grid point through lstm_ae's own checks (model shape and training hyperparameters)."""
        values = {**{k: [v] for k, v in self.fixed().items()}, **self.grid()}
        for point in _points({k: v for k, v in values.items() if k in hyperparameters.NAMES}):
            try:
                hyperparameters.check(point, self.budget)
            except (ValueError, TypeError) as error:
                raise SweepError(f"impossible hyperparameter: {error} (set it with --set NAME=VALUES)") from None


def _points(values: dict) -> list[dict]:
    """Every combination of `values` (name -> list of values), as a dict per combination."""
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def _is_gpu_share(gpus: float) -> bool:
    if gpus == 0 or (gpus >= 1 and gpus == int(gpus)):
        return True
    return 0 < gpus < 1 and abs(1 / gpus - round(1 / gpus)) < 1e-6


def build_datasets(sweep: Sweep) -> dict:
    """The data every trial may need, built once in the driver: one Splits per value of the data hyperparameters."""
    entry = sweep.entry
    source = SOURCES[entry.source]
    path = sweep.data_path()
    if source.path and not path:
        raise SweepError(f"{sweep.experiment} needs --data: {source.path}")
    grid = {**{k: [v] for k, v in sweep.fixed().items()}, **sweep.grid()}
    combos = itertools.product(*(grid[name] for name in entry.data_params))
    try:
        return {
            key: entry.load(path, sweep.seed, sweep.preset, **dict(zip(entry.data_params, key)))
            for key in combos
        }
    except (DataError, ValueError) as error:
        raise SweepError(str(error)) from None


def trainable(sweep: Sweep, datasets: dict, on_corrupt_checkpoint: str = "previous"):
    # with_parameters puts the data in the object store once; every trial on a node reads the same copy.
    resources = {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial}
    data = {"experiment": sweep.experiment, "preset": sweep.preset, "seed": sweep.seed, "path": sweep.data_path()}
    parameters = tune.with_parameters(train, datasets=ship(datasets), data=data, on_corrupt_checkpoint=on_corrupt_checkpoint)
    return tune.with_resources(parameters, resources)


def trial_folder(swept: tuple[str, ...], trial) -> str:
    """A trial's folder: its id and swept values, as Ray names a grid's trials (Ray's name for a trial given
    to it as a point lacks the values)."""
    return f"{trial}_{format_vars({(name,): trial.config[name] for name in swept if name in trial.config})}"


def make_tuner(sweep: Sweep, datasets: dict, sweep_dir: str) -> tune.Tuner:
    entry = sweep.entry
    preset = entry.presets[sweep.preset]
    scheduler = None
    if sweep.early_stop:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=sweep.budget, grace_period=min(preset.grace_period, sweep.budget))
    if sweep.search == "optuna":
        search_alg, num_samples = OptunaSearch(seed=sweep.seed), sweep.num_samples or len(sweep.configs())
    else:
        trials = sweep.trial_order()
        # Tune ignores max_concurrent_trials when given a generator: the generator holds the limit itself.
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
    storage_path, name = os.path.split(sweep_dir.rstrip("/"))
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage_path,
        failure_config=tune.FailureConfig(max_failures=3),  # a killed worker restarts from its last checkpoint
        # The two best checkpoints by the metric, and always the latest (to resume from). Ray snapshots the
        # experiment each time a trial saved num_to_keep checkpoints: 1 would snapshot at every checkpoint.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=entry.metric, checkpoint_score_order=entry.mode),
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],  # result.json feeds collect; no TensorBoard files (see `fit`)
        verbose=1,
    )
    return tune.Tuner(trainable(sweep, datasets), param_space=sweep.param_space(), tune_config=tune_config, run_config=run_config)


def prepare(sweep: Sweep, storage_path: str, name: str | None) -> tuple[str, dict]:
    """Check the sweep, build its data and claim its folder: all before Ray starts."""
    sweep.validate()
    if sweep.data:
        sweep.data = storage.absolute(sweep.data)  # resume and report may run from another folder
    name = name or f"{sweep.experiment}-{sweep.preset}-{sweep.search}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not NAME_PATTERN.match(name):
        raise SweepError(f"sweep name {name!r} must be letters, digits, '.', '_' or '-' (no path): it names a folder under the storage path")
    sweep_dir = storage.join(storage.absolute(storage_path), name)
    if storage.exists(storage.join(sweep_dir, SWEEP_FILE)):
        raise SweepError(f"sweep folder {sweep_dir} already holds a sweep: continue it with `sweeps resume {sweep_dir}` or choose another --name")
    datasets = build_datasets(sweep)
    try:
        storage.check_writable(storage.absolute(storage_path))
    except OSError as error:
        raise SweepError(f"cannot write to the storage path {storage_path} ({error.strerror or error}): choose a writable --storage") from None
    return sweep_dir, datasets


def claim(sweep: Sweep, sweep_dir: str) -> None:
    """Create the sweep's folder and record the sweep in it, once Ray is up: from now on the folder is this sweep's."""
    storage.make_dirs(sweep_dir)
    storage.write_json(storage.join(sweep_dir, SWEEP_FILE), _record(sweep))


def run(sweep: Sweep, storage_path: str = "results", name: str | None = None) -> str:
    """Run a sweep to its end (Ray must be started) and write its tables; returns the sweep's folder."""
    sweep_dir, datasets = prepare(sweep, storage_path, name)
    claim(sweep, sweep_dir)
    return fit(make_tuner(sweep, datasets, sweep_dir), sweep_dir)


def load_sweep(sweep_dir: str) -> Sweep:
    record = storage.join(sweep_dir, SWEEP_FILE)
    if not storage.exists(record):
        raise SweepError(f"{sweep_dir} is not a sweep folder (no {SWEEP_FILE}): pass the folder `sweeps run` printed")
    return Sweep(**storage.read_json(record)["sweep"])


def resume(sweep_dir: str, on_corrupt_checkpoint: str = "previous") -> str:
    """Continue an interrupted sweep: finished trials stay as they are, the others go on from their last checkpoint
    (or, where it cannot be read, from their previous one or from scratch: `on_corrupt_checkpoint`)."""
    check_fallback(on_corrupt_checkpoint)
    sweep_dir = storage.absolute(sweep_dir)
    sweep = load_sweep(sweep_dir)
    if not tune.Tuner.can_restore(sweep_dir):
        raise SweepError(f"{sweep_dir} has no Ray Tune state to resume from (it was stopped before its first trial): start it again with `sweeps run`")
    checkpoints.mend_records(sweep_dir)
    tuner = tune.Tuner.restore(sweep_dir, trainable(sweep, build_datasets(sweep), on_corrupt_checkpoint),
                               resume_unfinished=True, resume_errored=True)
    return fit(tuner, sweep_dir)


def check_fallback(on_corrupt_checkpoint: str) -> None:
    if on_corrupt_checkpoint not in FALLBACKS:
        raise SweepError(f"unknown --corrupt-checkpoint {on_corrupt_checkpoint!r}: choose {' or '.join(FALLBACKS)}")


def fit(tuner: tune.Tuner, sweep_dir: str) -> str:
    tune_settings()
    try:
        tuner.fit()
    finally:  # interrupted or not, the tables cover what has run
        collect.write_tables(sweep_dir)
    return sweep_dir


def tune_settings() -> None:
    """What Tune reads from the environment when a Tuner starts (new or resumed).
    - No TensorBoard: Tune adds its logger to the JSON and CSV ones of make_tuner unless told not to; it doubled
      Tune's own cost per reported epoch (`sweeps bench`), and nothing here reads it.
    - No warning that experiment snapshots come often: Tune forces one each time a trial has saved num_to_keep
      checkpoints, as make_tuner wants, and warns that it "may become a bottleneck" (a dozen times in `make demo`);
      in the quick grid the driver, snapshots and all, used 8% of the CPU time of each trial worker (measured)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"


def relative(path: str) -> str:
    """A local path relative to the current folder (a report's commands work on any machine); URIs as they are."""
    return path if "://" in path else os.path.relpath(path)


def command_line(sweep: Sweep, relative_paths: bool = False) -> str:
    """The `sweeps run` command that runs this sweep again; with `relative_paths`, --data relative to the current folder."""
    defaults = Sweep(sweep.experiment)
    words = ["sweeps", "run", sweep.experiment, "--preset", sweep.preset, "--search", sweep.search, "--seed", str(sweep.seed)]
    options = {
        "--num-samples": sweep.num_samples,
        "--epochs": sweep.epochs,
        "--data": relative(sweep.data) if sweep.data and relative_paths else sweep.data,
        "--cpus-per-trial": sweep.cpus_per_trial if sweep.cpus_per_trial != defaults.cpus_per_trial else None,
        "--gpus-per-trial": sweep.gpus_per_trial or None,
        "--max-concurrent": sweep.max_concurrent,
    }
    for option, value in options.items():
        if value is not None:
            words += [option, str(value)]
    if not sweep.early_stop:
        words.append("--no-early-stop")
    for name, values in sweep.overrides.items():
        words += ["--set", f"{name}={','.join(map(str, values))}"]
    return shlex.join(words)


def _record(sweep: Sweep) -> dict:
    import optuna
    import ray
    import torch

    return {
        "command": command_line(sweep),
        "sweep": asdict(sweep),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "ray": ray.__version__, "optuna": optuna.__version__},
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def start_ray(address: str | None = None, sweep: Sweep | None = None) -> None:
    """Join the cluster at `address`, or start the embedded local one with its dashboard on 127.0.0.1.
    (The command line also sets, before Ray is imported, what keeps all of the local one on loopback.)"""
    import ray

    if address:
        check_cluster(address)
        context = ray.init(address=address)
    else:
        context = ray.init(include_dashboard=True, dashboard_host="127.0.0.1")
        if sweep is not None:
            _check_fits(sweep, ray.cluster_resources())  # a cluster may autoscale; this machine will not
    if context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}", flush=True)


def check_cluster(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds where no Ray cluster answers at `address`: Ray itself retries for minutes."""
    if address.startswith("ray://"):
        return  # Ray Client: its own connection checks apply
    # Ray's own resolution of `auto` (RAY_ADDRESS, then the last `ray start` on this machine) and of host:port.
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except ValueError as error:
        raise SweepError(f"--address {address} is not a Ray address ({error}): use auto or host:port") from None
    hint = "start one with `ray start --head` or `ray up cluster.yaml`, or leave out --address to run on a local Ray"
    if not resolved:
        raise SweepError(f"no running Ray cluster found for --address {address}: {hint}")
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise SweepError(f"no Ray cluster answers at {resolved} (--address {address}: {error.strerror or error}): {hint}") from None


def _check_fits(sweep: Sweep, resources: dict) -> None:
    for name, wanted in (("GPU", sweep.gpus_per_trial), ("CPU", sweep.cpus_per_trial)):
        if wanted > resources.get(name, 0):
            raise SweepError(f"each trial asks for {wanted:g} {name}s but this machine's Ray has {resources.get(name, 0):g}: "
                             f"lower --{name.lower()}s-per-trial, or run on a cluster with --address")
