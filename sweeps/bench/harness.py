"""What every measure shares: the budgets, the row and its table, timing side by side, Ray and its sweeps, the files."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from lstm_ae.data import Splits
from sweeps import signals
from sweeps.sweep import ORDERS, SCHEDULERS

RESULTS_FILE = "bench.parquet"
MACHINE_FILE = "machine.json"
RAY_LOG = "ray.log"

Target = tuple[str, float]  # ("<=", 1.05): the value must be at most 1.05
NOT_RUN = "not run on this device"  # the quantity of a measure's one row where the device lacks what it measures


# The synthetic quick preset's grid with the options these measures were set on: 12 epochs (--epochs 12) on 1,000
# signals (--set n=1000): trials of about half a second, the quick bench a few minutes, its rows comparable over time.
QUICK_SYNTHETIC = {"epochs": 12, "n": 1000}


@dataclass(frozen=True)
class Budget:
    repeats: int  # trainer overhead: timed epochs of each kind per shape
    sizes: dict  # trainer overhead: shape -> (train, validation) sequences
    thread_sizes: tuple  # threads: synthetic (train, validation) sequences
    thread_epochs: int  # threads: epochs per run
    thread_repeats: int
    trial_preset: str  # trial overhead: the synthetic preset whose data the trial uses
    trial_epochs: int
    trial_repeats: int  # trials of each checkpoint frequency; fit alone runs this many times before and after
    grid_epochs: int  # parallel efficiency: the epochs of each trial of the quick grid
    bare_passes: int  # parallel efficiency: each config's fit alone, before (and after) the sweep
    paper_epochs: int  # parallel efficiency: the grid again on the study's 10,000 signals (0: not run)
    early_stop_epochs: int  # early stopping: the grid's budget, with each scheduler and without
    early_stop_grace: int  # early stopping: the first rung
    early_stop_runs: tuple  # early stopping: (scheduler, order) of each sweep with early stopping
    pixel_repeats: int  # pixel: timed training steps of each kind, after one to warm up
    pixel_thread_length: int  # pixel: the pixels per sequence when 1 thread and 2 are compared
    pixel_thread_repeats: int
    pack_steps: int  # GPU packing: timed steps per packed trial
    logger_epochs: int  # loggers: the shorter budget of the 2 trials (the longer is 4x), without and with each logger
    logger_rounds: int
    logger_names: tuple | None  # loggers: which (None: every installed one)
    parity_images: dict  # precision parity: view -> training images (one pass, batch 64)
    parity_seeds: int  # precision parity: seeds (at least 2), each trained in fp32 and bf16
    parity_val: int  # precision parity: validation images


QUICK = Budget(
    repeats=5,
    sizes={"synthetic": (400, 100), "mnist-rows": (400, 100), "snp500-predict": (400, 100)},
    thread_sizes=(200, 50),  # 2 threads on a busy machine can be many times slower: keep the work small
    thread_epochs=1,
    thread_repeats=2,
    trial_preset="quick",
    trial_epochs=4,
    trial_repeats=2,
    grid_epochs=4,  # Tune's cost per trial and per report shows as well as at 12, in a third of the time
    bare_passes=1,
    paper_epochs=0,
    # Rungs at 1 and 3 (a third on at each): at least 58 of the 216 epochs (27%); asynchronous promotion trains more,
    # and the quarter of the target holds at the full budget only (docs/performance.md).
    early_stop_epochs=9,
    early_stop_grace=1,
    early_stop_runs=(("promotion", "grid"),),  # the default in the order that is Ray's ASHA's worst
    pixel_repeats=3,  # a pixel step takes about half a second on one busy core: 4 kinds x 4 steps stay under 15 s
    pixel_thread_length=98,  # an eighth of the sequence: 2 threads on 2 busy cores took 30 s per 784-pixel step
    pixel_thread_repeats=2,
    pack_steps=5,
    logger_epochs=1,
    logger_rounds=1,
    logger_names=("tensorboard",),  # each logger costs 2 sweeps of several seconds, even this small
    parity_images={"rows": 640, "pixels": 128},  # the shape of the rows only: their accuracies are noise
    parity_seeds=2,
    parity_val=256,
)
FULL = Budget(
    repeats=5,
    # The study's synthetic and S&P sizes; a fifth of MNIST's 50,000/10,000, to keep its 12 timed epochs short.
    sizes={"synthetic": (6000, 2000), "mnist-rows": (10000, 2000), "snp500-predict": (5400, 1800)},
    thread_sizes=(1000, 200),
    thread_epochs=2,
    thread_repeats=3,
    trial_preset="paper",
    trial_epochs=5,
    trial_repeats=3,
    grid_epochs=QUICK_SYNTHETIC["epochs"],
    bare_passes=2,
    paper_epochs=10,  # trials of about 5 s
    early_stop_epochs=100,
    early_stop_grace=2,  # rungs at 2, 6, 18 and 54 (a quarter on at each: 2, 8, 32)
    early_stop_runs=tuple((scheduler, order) for scheduler in SCHEDULERS for order in ORDERS),
    pixel_repeats=9,
    pixel_thread_length=784,
    pixel_thread_repeats=3,
    pack_steps=20,
    logger_epochs=10,
    logger_rounds=2,
    logger_names=None,
    # Rows: a fifth of an epoch (98% accuracy after one); pixels: 200 steps, where the recipe passes 50% (9 minutes of
    # the 2 cores' time for 6 runs: the pixels' parity over whole epochs is the showcase's to show).
    parity_images={"rows": 10_000, "pixels": 12_800},
    parity_seeds=3,
    parity_val=2000,
)


@dataclass
class Row:
    measure: str  # the name of the measure that gave it
    quantity: str  # what the value is
    value: float
    target: str = ""  # "<= 1.05", ">= 0.9" or "" (reported only)
    holds: bool | None = None
    detail: str = ""


def row(measure: str, quantity: str, value: float, target: Target | None = None, detail: str = "") -> Row:
    if target is None:
        return Row(measure, quantity, float(value), detail=detail)
    op, bound = target
    holds = None if not math.isfinite(value) else bool(value <= bound if op == "<=" else value >= bound)
    return Row(measure, quantity, float(value), f"{op} {bound:g}", holds, detail)


@dataclass(frozen=True)
class Bench:
    """What a measure is given: the budget, the output folder, the machine, and its own name and targets."""

    budget: Budget
    out: Path
    cores: int
    device: str = "cpu"
    ray_start_s: float = math.nan  # NaN until Ray has started
    measure: str = ""
    targets: dict[str, Target] = field(default_factory=dict)

    def row(self, quantity: str, value: float, target: str | None = None, detail: str = "") -> Row:
        """A row of this measure; `target` names one of its targets in the registry (None: reported only)."""
        return row(self.measure, quantity, value, self.targets[target] if target else None, detail)

    def not_run(self, reason: str) -> Row:
        """The one row of a measure this device cannot take (bf16 parity on a CPU without bf16): why, no value."""
        return Row(self.measure, NOT_RUN, math.nan, detail=reason)


def interleaved(jobs: dict[str, Callable[[], float]], rounds: int, warmup: int = 0) -> dict[str, list[float]]:
    """Each job's seconds, one run of each per round, the order reversed every other round: jobs compared share the
    machine's load as closely as they can. The first `warmup` rounds (first-call costs) are not counted."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for i in range(warmup + rounds):
        names = list(jobs) if (i - warmup) % 2 == 0 else list(jobs)[::-1]
        for name in names:
            elapsed = jobs[name]()
            if i >= warmup:
                times[name].append(elapsed)
    return times


# --- Ray and the runner's own sweeps ---------------------------------------------------------------------------


def synthetic_sweep(preset: str, **options):
    """A synthetic sweep as the bench times it: the quick preset with QUICK_SYNTHETIC's options, the paper preset as
    it is; `options` on top, as Sweep's fields."""
    from sweeps.sweep import Sweep

    if preset == "quick":
        overrides = {"n": [QUICK_SYNTHETIC["n"]], **options.pop("overrides", {})}
        options = {"epochs": QUICK_SYNTHETIC["epochs"], **options, "overrides": overrides}
    return Sweep("synthetic", preset=preset, **options)


def sweep_data(sweep) -> Splits:
    """The one data set of a sweep that sweeps no data hyperparameter, built as the driver builds it."""
    from sweeps.runner import build_datasets

    (splits,) = build_datasets(sweep).values()
    return splits


def start_local_ray(cores: int, out: Path) -> float:
    """A fresh local Ray (address="local": never one another program started on this machine); seconds taken."""
    import ray

    start = time.perf_counter()
    with quiet(out / RAY_LOG), signals.handlers_kept():
        ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - start


@contextlib.contextmanager
def quiet(log: Path):
    """Ray's and Tune's output (Python's and the C++ core's alike) into a log file, not between the bench's lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@dataclass
class SweepResult:
    folder: str
    trials: pd.DataFrame
    metrics: pd.DataFrame
    wall_s: float  # runner.start: the checks, the data, the Tuner's run, the Parquet tables
    started: float  # time.time() when runner.start was called


def timed_sweep(sweep, out: Path, name: str, watch=None) -> SweepResult:
    """A sweep as `sweeps run` runs it (runner.start, on the bench's Ray), timed whole, under OUT/sweeps/."""
    from sweeps import collect, runner, storage

    with quiet(out / RAY_LOG), watch or contextlib.nullcontext():
        started, start = time.time(), time.perf_counter()
        folder = runner.start(sweep, str(out / "sweeps"), name)
        wall = time.perf_counter() - start
    tables = (collect.TRIALS_FILE, collect.METRICS_FILE)
    trials, metrics = (storage.read_parquet(storage.join(folder, table)) for table in tables)
    return SweepResult(folder, trials, metrics, wall, started)


def worker_starts(result: SweepResult, log: Path) -> list[float]:
    """Seconds from the start of the sweep until each of its trial workers was up: a new process, which imports
    ray.tune, torch and the trial's code before its actor's __init__ ends (Ray's task timeline)."""
    import ray

    with quiet(log):  # Ray warns that the timeline will come from the dashboard in a later version
        events = ray.timeline()
    inits = [e for e in events if e.get("cat", "").endswith(".__init__") and e["ts"] / 1e6 >= result.started]
    ends = {}
    for event in sorted(inits, key=lambda e: e["ts"]):  # the first actor of each worker process (Tune reuses them)
        ends.setdefault(event["tid"], (event["ts"] + event["dur"]) / 1e6 - result.started)
    return sorted(ends.values())


def fit_alone(sweep, splits: Splits, config: dict) -> list[float]:
    """What a trial does (build the model from its config, fit), in the driver without Ray; seconds per epoch."""
    from sweeps.trial import start_fit

    start = time.perf_counter()
    config = {"experiment": sweep.experiment, "seed": sweep.seed, "epochs": sweep.budget, **config}
    training, _ = start_fit(config, splits, device="cpu")
    epochs = []
    for metrics in training:
        epochs.append(time.perf_counter() - start - sum(epochs))
        if not math.isfinite(metrics["train_loss"]):  # the trial stops there too
            break
    return epochs


# --- the machine, the table, the files ---------------------------------------------------------------------------


def machine_info() -> dict:
    import psutil
    import ray

    models = (
        line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines() if line.startswith("model name")
    )
    return {
        "cpu": next(models, platform.processor()),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def format_table(rows: list[Row]) -> str:
    header = ("measure", "quantity", "value", "target", "holds", "detail")
    verdict = {True: "yes", False: "NO", None: "-"}
    lines = [(r.measure, r.quantity, f"{r.value:.3f}", r.target or "-", verdict[r.holds], r.detail) for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(5)]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)) + "  " + line[5] for line in [header, *lines]
    )


def write(rows: list[Row], machine: dict, out: Path) -> None:
    from sweeps import storage

    frame = pd.DataFrame([vars(r) for r in rows], columns=list(Row.__dataclass_fields__))
    frame["holds"] = frame["holds"].astype("boolean")  # None where there is no target
    storage.write_parquet(str(out / RESULTS_FILE), frame)
    storage.write_json(str(out / MACHINE_FILE), machine)
