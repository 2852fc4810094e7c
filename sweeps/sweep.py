"""What a sweep is, without Ray: its definition (experiment, preset, search, options, --set), the checks of
everything that can be known wrong before Ray starts, its record (sweep.json) and the command that reproduces it.

    sweep = Sweep("synthetic", preset="quick", overrides={"lr": [1e-3, 1e-2]})
    sweep.validate()          # SweepError: one line naming the problem and the fix
    sweep.configs()           # the grid's trials
"""

from __future__ import annotations

import itertools
import math
import os
import random
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sweeps import hyperparameters, loggers, storage
from sweeps.errors import SweepError, first_line
from sweeps.experiments import EXPERIMENTS, SOURCES, Experiment, grid_size

MAX_COUNT = 1_000_000  # epochs or trials: more is a typo, and would fill the memory before it starts
# Trials in one sweep: Ray Tune keeps every trial in the driver's memory and in the experiment state it rewrites as
# trials report, and a grid is expanded whole before the first trial starts (asked for 24 million, it sat for
# minutes without a word). A sweep larger than this is a typo or a job for several sweeps.
MAX_TRIALS = 10_000
FALLBACKS = ("previous", "scratch")  # where a trial goes on when its checkpoint cannot be read
SEARCHES = ("grid", "optuna")
# What a trial reads from its config besides the hyperparameters, which --set may also pin or sweep: the checkpoint
# frequency (the bench's trial-overhead measure alternates trials that checkpoint every epoch and only at the last).
PER_TRIAL = ("checkpoint_every",)
STORAGE = "results"  # where sweeps go unless --storage says otherwise
# --scheduler: how early stopping decides (sweeps.asha builds each), the default first.
SCHEDULERS = {
    "promotion": "ASHA by promotion (a trial waits at each rung until it ranks among those it passes on)",
    "asha": "Ray's ASHA (which passes the first trial to reach a rung)",
    "hyperband": "Ray's synchronous HyperBand (brackets whose trials wait at each milestone for the whole bracket)",
}
DEFAULT_SCHEDULER = next(iter(SCHEDULERS))
WITHOUT_GRACE = ("hyperband",)  # brackets that follow from the budget and the factor: no --grace-period
# A rung passes on 1/factor of its trials. promotion: a third (syne-tune's default; on the bench's 100-epoch grid a
# quarter missed the best, a third found it in either order: docs/performance.md); asha: Ray's default.
REDUCTION_FACTORS = {"promotion": 3, "asha": 4, "hyperband": 3}
# --order: the order a grid's trials start in. shuffled (by the seed): early stopping meets the grid's corners in no
# particular order; grid: the grid's own, in which the first arrivals all come from one corner (the bench's worst case).
ORDERS = ("shuffled", "grid")
SWEEP_FILE = "sweep.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME_LENGTH = 128  # a folder name may have 255 bytes; Ray's paths inside it grow long enough already


@dataclass
class Sweep:
    """What defines a sweep; recorded in sweep.json so that `resume` rebuilds exactly the same one."""

    experiment: str
    preset: str = "quick"
    search: str = "grid"
    num_samples: int | None = None  # grid: repeats with seeds seed, seed+1, ...; optuna: trials (default: grid size)
    early_stop: bool = True
    scheduler: str = DEFAULT_SCHEDULER
    reduction_factor: int | None = None  # rung to rung, 1/this goes on; None: the scheduler's (REDUCTION_FACTORS)
    order: str = ORDERS[0]
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    data: str | None = None  # MNIST's root folder or the S&P 500 CSV
    seed: int = 0
    epochs: int | None = None  # None: the preset's
    checkpoint_every: int | None = None  # epochs between checkpoints (the last is always one); None: the preset's
    grace_period: int | None = None  # epochs ASHA lets every trial run before it may stop it; None: the preset's
    overrides: dict = field(default_factory=dict)  # hyperparameter -> values, from --set
    loggers: list = field(default_factory=list)  # names of loggers.LOGGERS, from --logger

    def __post_init__(self):
        if self.reduction_factor is None:  # recorded as a number: a resume keeps it whatever later defaults say
            self.reduction_factor = self.default_reduction_factor()

    def default_reduction_factor(self) -> int | None:
        """The share a rung passes on unless --reduction-factor says otherwise: the preset's, else the scheduler's."""
        entry = EXPERIMENTS.get(self.experiment)
        preset = entry.presets.get(self.preset) if entry else None
        return (preset and preset.reduction_factor) or REDUCTION_FACTORS.get(self.scheduler)

    @property
    def entry(self) -> Experiment:
        return EXPERIMENTS[self.experiment]

    @property
    def budget(self) -> int:
        return self.epochs or self.entry.presets[self.preset].epochs

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.entry.presets[self.preset].checkpoint_every

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
        """What differs between a grid search's trials: the grid, and the seed of each repeat (--num-samples; for
        Optuna that counts trials, which share the seed)."""
        repeats = self.num_samples if self.search == "grid" and self.num_samples else 1
        seeds = {"seed": list(range(self.seed, self.seed + repeats))} if repeats > 1 else {}
        return {**seeds, **self.grid()}

    def planned_trials(self) -> int:
        """How many trials the sweep runs, counted without expanding the grid."""
        if self.search == "optuna":
            return self.num_samples or grid_size(self.grid())
        return (self.num_samples or 1) * grid_size(self.grid())

    def _trials_said(self) -> str:
        points = grid_size(self.grid())
        if self.search == "optuna":
            return f"--num-samples {self.num_samples:,}" if self.num_samples else f"a grid of {points:,} points"
        return f"a grid of {points:,} points" + (f", {self.num_samples:,} times" if self.num_samples else "")

    def trial_order(self) -> list[dict]:
        """The swept values of each trial of a grid search, by default in a random order fixed by the seed. Ray's ASHA
        stops a trial that falls behind those that reached its rung before it; in the grid's own order the first
        arrivals all come from one corner (the small lr first), set a low bar and run long (measured: the early
        stopping measure of `sweeps bench`)."""
        points = _points(self.swept())
        if self.order == "shuffled":
            random.Random(self.seed).shuffle(points)
        return points

    def values(self, name: str) -> list:
        """The values a hyperparameter takes in this sweep (an Optuna range: the grid's values it searches between),
        or lstm_ae's default where nothing sets it."""
        grid = self.grid()
        if name in grid:
            return list(grid[name])
        return [self.fixed().get(name, hyperparameters.default(name))]

    def _pinned(self) -> dict:
        return {k: v[0] for k, v in self.overrides.items() if len(v) == 1}

    def data_path(self) -> str | None:
        return self.data or SOURCES[self.entry.source].default_path

    def validate(self) -> None:
        """Everything that can be known wrong before Ray starts, as a SweepError."""
        if self.experiment not in EXPERIMENTS:
            raise SweepError(
                f"unknown experiment {self.experiment!r}: choose one of {', '.join(EXPERIMENTS)} (see `sweeps list`)"
            )
        if self.preset not in self.entry.presets:
            raise SweepError(f"unknown preset {self.preset!r}: choose one of {', '.join(self.entry.presets)}")
        if self.search not in SEARCHES:
            raise SweepError(f"unknown search {self.search!r}: choose grid or optuna")
        if self.scheduler not in SCHEDULERS:
            raise SweepError(f"unknown --scheduler {self.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
        if self.order not in ORDERS:
            raise SweepError(f"unknown --order {self.order!r}: choose {' or '.join(ORDERS)}")
        if self.order != ORDERS[0] and self.search != "grid":
            raise SweepError(f"--order {self.order} orders a grid's trials: drop it, or use --search grid")
        allowed = hyperparameters.NAMES + self.entry.data_params + PER_TRIAL
        for name in self.overrides:
            if name not in allowed:
                raise SweepError(f"unknown hyperparameter {name!r} in --set: choose among {', '.join(allowed)}")
        self._check_checkpoint_every()
        self._check_numbers()
        self._check_hyperparameters()
        loggers.check_installed(self.loggers)

    def _check_checkpoint_every(self) -> None:
        values = self.overrides.get("checkpoint_every", [])
        if values and self.checkpoint_every is not None:
            raise SweepError("--checkpoint-every and --set checkpoint_every=... say the same: give one")
        if any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_COUNT for v in values):
            raise SweepError(f"checkpoint_every must be whole numbers of epochs from 1 to {MAX_COUNT:,}, got {values}")
        if len(values) > 1 and self.search != "grid":
            raise SweepError("--set checkpoint_every=... with several values sweeps a grid: use --search grid")

    def _check_numbers(self) -> None:
        checks = [
            (
                self.epochs is not None and not 1 <= self.epochs <= MAX_COUNT,
                f"--epochs must be 1 to {MAX_COUNT:,}, got {self.epochs}",
            ),
            (
                self.checkpoint_every is not None and not 1 <= self.checkpoint_every <= MAX_COUNT,
                f"--checkpoint-every must be 1 to {MAX_COUNT:,} epochs, got {self.checkpoint_every}",
            ),
            (
                self.grace_period is not None and not 1 <= self.grace_period <= self.budget,
                f"--grace-period must be 1 to the budget of {self.budget:,} epochs, got {self.grace_period}",
            ),
            (
                self.grace_period is not None and not self.early_stop,
                "--grace-period sets ASHA's first rung, which --no-early-stop turns off: drop one of the two",
            ),
            (
                self.grace_period is not None and self.scheduler in WITHOUT_GRACE,
                "--grace-period sets ASHA's first rung; HyperBand's brackets follow from the budget and "
                "--reduction-factor: drop --grace-period",
            ),
            (
                isinstance(self.reduction_factor, bool)
                or not isinstance(self.reduction_factor, int)
                or not 2 <= self.reduction_factor <= 100,
                f"--reduction-factor must be a whole number from 2 to 100, got {self.reduction_factor}",
            ),
            (
                self.num_samples is not None and not 1 <= self.num_samples <= MAX_COUNT,
                f"--num-samples must be 1 to {MAX_COUNT:,}, got {self.num_samples}",
            ),
            (
                self.planned_trials() > MAX_TRIALS,
                f"{self.planned_trials():,} trials asked for ({self._trials_said()}): at most {MAX_TRIALS:,} in one "
                "sweep; lower --num-samples or sweep fewer values",
            ),
            (
                not 0 <= self.seed < 2**32,
                f"--seed must be 0 to 2**32 - 1 (what numpy and Optuna's sampler take), got {self.seed}",
            ),
            (
                not 0 < self.cpus_per_trial < math.inf,
                f"--cpus-per-trial must be positive and finite, got {self.cpus_per_trial}",
            ),
            (
                self.max_concurrent is not None and self.max_concurrent < 1,
                f"--max-concurrent must be at least 1, got {self.max_concurrent}",
            ),
            (
                not _is_gpu_share(self.gpus_per_trial),
                f"--gpus-per-trial must be 0, 1/k (0.5, 0.25, ...) or a whole number, got {self.gpus_per_trial}",
            ),
        ]
        for failed, message in checks:
            if failed:
                raise SweepError(message)

    def _check_hyperparameters(self) -> None:
        """Every grid point through lstm_ae's own checks (model shape and training hyperparameters)."""
        values = {**{k: [v] for k, v in self.fixed().items()}, **self.grid()}
        if "fp16" in self.values("precision") and not self.gpus_per_trial:
            raise SweepError(
                "precision fp16 runs on CUDA GPUs only: give --gpus-per-trial, or use bf16 or fp32 on CPUs"
            )
        for point in _points({k: v for k, v in values.items() if k in hyperparameters.NAMES}):
            try:
                hyperparameters.check(point, self.budget)
            except (ValueError, TypeError) as error:
                raise SweepError(f"impossible hyperparameter: {error} (set it with --set NAME=VALUES)") from None


def _points(values: dict) -> list[dict]:
    """Every combination of `values` (name -> list of values), as a dict per combination."""
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def _is_gpu_share(gpus: float) -> bool:
    if not math.isfinite(gpus):
        return False
    if gpus == 0 or (gpus >= 1 and gpus == int(gpus)):
        return True
    return 0 < gpus < 1 and abs(1 / gpus - round(1 / gpus)) < 1e-6


def load_sweep(sweep_dir: str) -> Sweep:
    record = storage.join(sweep_dir, SWEEP_FILE)
    if not storage.exists(record):
        raise SweepError(f"{sweep_dir} is not a sweep folder (no {SWEEP_FILE}): pass the folder `sweeps run` printed")
    try:
        # A sweep recorded before --scheduler existed ran Ray's ASHA, one recorded before --reduction-factor a quarter
        # per rung: it resumes with them (docs/files.md, what earlier versions wrote).
        sweep = Sweep(**{"scheduler": "asha", "reduction_factor": 4, **storage.read_json(record)["sweep"]})
    except (ValueError, TypeError, KeyError) as error:  # not JSON, not an object, fields of another version
        raise SweepError(
            f"{record} is damaged ({type(error).__name__}: {first_line(error)}): "
            "restore it from a copy of the sweep folder"
        ) from None
    if sweep.experiment not in EXPERIMENTS:
        raise SweepError(
            f"{record} names the experiment {sweep.experiment!r}, which this version does not have: {', '.join(EXPERIMENTS)}"
        )
    return sweep


def check_fallback(on_corrupt_checkpoint: str) -> None:
    if on_corrupt_checkpoint not in FALLBACKS:
        raise SweepError(f"unknown --corrupt-checkpoint {on_corrupt_checkpoint!r}: choose {' or '.join(FALLBACKS)}")


def relative(path: str) -> str:
    """A local path relative to the current folder (a report's commands work on any machine); URIs as they are."""
    return os.path.relpath(path) if storage.is_local(path) else path


def command_line(sweep: Sweep, relative_paths: bool = False) -> str:
    """The `sweeps run` command that runs this sweep again; with `relative_paths`, --data relative to the current folder."""
    defaults = Sweep(sweep.experiment)
    words = [
        "sweeps",
        "run",
        sweep.experiment,
        "--preset",
        sweep.preset,
        "--search",
        sweep.search,
        "--seed",
        str(sweep.seed),
    ]
    options = {
        "--num-samples": sweep.num_samples,
        "--epochs": sweep.epochs,
        "--checkpoint-every": sweep.checkpoint_every,
        "--grace-period": sweep.grace_period,
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
    else:
        if sweep.scheduler != defaults.scheduler:
            words += ["--scheduler", sweep.scheduler]
        if sweep.reduction_factor != sweep.default_reduction_factor():
            words += ["--reduction-factor", str(sweep.reduction_factor)]
    if sweep.order != defaults.order:
        words += ["--order", sweep.order]
    for name in sweep.loggers:
        words += ["--logger", name]
    for name, values in sweep.overrides.items():
        words += ["--set", f"{name}={','.join(map(str, values))}"]
    return shlex.join(words)


def record(sweep: Sweep) -> dict:
    import optuna
    import ray
    import torch

    return {
        "command": command_line(sweep),
        "sweep": asdict(sweep),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "ray": ray.__version__,
            "optuna": optuna.__version__,
        },
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
