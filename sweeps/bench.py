"""The benchmark: what the trainer, Ray Tune and the machine cost, as ratios measured side by side.

    python -m sweeps bench --quick                  # under 2 minutes on 2 cores
    python -m sweeps bench --out results/bench-x    # the full run: under 20 minutes on 2 cores

It prints a table (one row per measure: figure, value, target, whether it holds, detail) and writes
`OUT/bench.parquet` (the same rows), `OUT/machine.json` (CPU, cores, versions, GPU, load average) and, under
`OUT/sweeps/`, the sweeps it ran, with Ray's output in `OUT/ray.log`. The figures:

1. trainer overhead: one epoch of `lstm_ae.train.fit` over a bare PyTorch loop (same model, data, batches,
   Adam, clipping and validation), for the synthetic, MNIST-rows (classifier) and S&P (predictor) shapes.
2. trial overhead: one config as a real Ray Tune trial through `sweeps.run`, over `fit` alone in the driver;
   and checkpointing every epoch over checkpointing only the last.
3. parallel efficiency: the 24-trial synthetic quick grid (no ASHA) on all cores: (sum of each config's `fit`
   alone) / cores over the sweep's wall time; the same once its workers were up (Ray's task timeline); the same
   fits in as many plain processes (no Ray: what the cores give); Ray Tune alone on trials that only sleep; the
   full run repeats the grid on the study's 10,000 signals.
4. threads: 2 torch threads over 1 per epoch, and 2 processes of 1 thread over 1 process of 2 (throughput).
5. ASHA: the grid at a medium budget with ASHA over without: epochs trained, best val_mse, wall time.
6. memory: an MNIST sweep (the study's split) with 2 trials at once: object store and trial workers' memory
   over the data shipped.

Run it through the command line, which keeps the Ray it starts on 127.0.0.1 (`keep_ray_local`), as for every
command. Absolute times drift on a shared machine, so every figure is a ratio of two things run in the same bench,
interleaved where they can be and repeated, with medians taken. Ray's start-up is timed apart.
"""

from __future__ import annotations

import contextlib
import copy
import math
import multiprocessing
import os
import pickle
import platform
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median

import pandas as pd
import torch
import torch.nn.functional as F

from lstm_ae.data import Split, Splits, mnist
from lstm_ae.model import LSTMAutoencoder
from lstm_ae.train import fit

RESULTS_FILE = "bench.parquet"
MACHINE_FILE = "machine.json"
RAY_LOG = "ray.log"
LR, CLIP = 1e-3, 1.0
REPO = Path(__file__).resolve().parent.parent
FIGURES = ("1 trainer overhead", "2 trial overhead", "3 parallel efficiency", "4 threads", "5 ASHA", "6 memory")
ONE_CONFIG = {"batch_size": [32], "lr": [LR], "grad_clip": [CLIP], "hidden_size": [40]}  # one synthetic trial


@dataclass(frozen=True)
class Shape:
    steps: int
    features: int
    model: dict  # LSTMAutoencoder arguments besides input_size
    batch_size: int
    labels: bool = False


SHAPES = {
    "synthetic": Shape(50, 1, {"hidden_size": 40}, 32),
    "mnist-rows": Shape(28, 28, {"hidden_size": 64, "num_classes": 10}, 32, labels=True),
    "snp500-predict": Shape(53, 1, {"hidden_size": 60, "predict_next": True}, 32),
}


@dataclass(frozen=True)
class Budget:
    repeats: int  # figure 1: timed epochs of each kind per shape
    sizes: dict  # figure 1: shape -> (train, validation) sequences
    thread_sizes: tuple  # figure 4: synthetic (train, validation) sequences
    thread_epochs: int  # figure 4: epochs per run
    thread_repeats: int
    trial_preset: str  # figure 2: the synthetic preset whose data the trial uses
    trial_epochs: int
    trial_repeats: int  # trials of each checkpoint frequency; fit alone runs this many times before and after
    bare_passes: int  # figure 3: each config's fit alone, before (and after) the sweep
    paper_epochs: int  # figure 3: the grid again on the study's 10,000 signals (0: not run)
    asha_epochs: int  # figure 5: the grid with and without ASHA


QUICK = Budget(
    repeats=5,
    sizes={"synthetic": (400, 100), "mnist-rows": (400, 100), "snp500-predict": (400, 100)},
    thread_sizes=(200, 50),  # 2 threads on a busy machine can be many times slower: keep the work small
    thread_epochs=1,
    thread_repeats=2,
    trial_preset="quick",
    trial_epochs=4,
    trial_repeats=2,
    bare_passes=1,
    paper_epochs=0,
    asha_epochs=4,  # the least that lets ASHA (grace 3) stop anything: too few for its target, which needs the full run
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
    bare_passes=2,
    paper_epochs=10,  # trials of about 5 s
    asha_epochs=100,  # ASHA's rungs at 3, 12 and 48 epochs: curves have separated by then
)


@dataclass
class Row:
    figure: str  # one of FIGURES
    measure: str
    value: float
    target: str = ""  # "<= 1.05", ">= 0.9" or "" (reported only)
    holds: bool | None = None
    detail: str = ""


def row(figure: str, measure: str, value: float, target: tuple[str, float] | None = None, detail: str = "") -> Row:
    if target is None:
        return Row(figure, measure, float(value), detail=detail)
    op, bound = target
    holds = None if not math.isfinite(value) else bool(value <= bound if op == "<=" else value >= bound)
    return Row(figure, measure, float(value), f"{op} {bound:g}", holds, detail)


# --- the yardstick -------------------------------------------------------------------------------------------


def bare_epoch(model, optimizer, train: Split, val: Split, batch_size: int, grad_clip: float = 0.0,
               recon_weight: float = 0.5, generator: torch.Generator | None = None) -> dict:
    """One epoch of plain PyTorch, then the validation pass: what `fit` does, with nothing around it."""
    model.train()
    total = torch.zeros(())
    for batch in torch.randperm(len(train.x), generator=generator).split(batch_size):
        x, y = train.x[batch], None if train.y is None else train.y[batch]
        loss = _loss(model(x), x, y, recon_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += loss.detach() * len(batch)
    model.eval()
    val_total = torch.zeros(())
    with torch.no_grad():
        for start in range(0, len(val.x), 1024):  # fit's validation batches
            x = val.x[start : start + 1024]
            y = None if val.y is None else val.y[start : start + 1024]
            val_total += _loss(model(x), x, y, recon_weight) * len(x)
    return {"train_loss": float(total) / len(train.x), "val_loss": float(val_total) / len(val.x)}


def _loss(out, x, y, recon_weight: float) -> torch.Tensor:
    mse = F.mse_loss(out.reconstruction, x)
    heads = []
    if out.logits is not None:
        heads.append(F.cross_entropy(out.logits, y))
    if out.prediction is not None:
        heads.append(F.mse_loss(out.prediction[:, :-1], x[:, 1:]))
    return recon_weight * mse + (1 - recon_weight) * torch.stack(heads).mean() if heads else mse


def random_splits(shape: Shape, n_train: int, n_val: int, seed: int = 0) -> Splits:
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        x = torch.rand(n, shape.steps, shape.features, generator=generator)
        return Split(x, torch.randint(0, 10, (n,), generator=generator) if shape.labels else None)

    return Splits(split(n_train), split(n_val), split(2))


def _model(shape: Shape) -> LSTMAutoencoder:
    return LSTMAutoencoder.from_config({"input_size": shape.features, **shape.model}, seed=0)


# --- 1. trainer overhead -------------------------------------------------------------------------------------


def trainer_overhead(budget: Budget) -> list[Row]:
    rows = []
    for name, shape in SHAPES.items():
        splits = random_splits(shape, *budget.sizes[name])
        template = _model(shape)
        times = {"fit": [], "bare": []}
        for i in range(budget.repeats + 1):  # round 0 warms up (first-call costs) and is not counted
            for kind in ("fit", "bare") if i % 2 else ("bare", "fit"):  # alternate who goes first
                elapsed = _one_epoch(kind, copy.deepcopy(template), splits, shape.batch_size)
                if i:
                    times[kind].append(elapsed)
        # The median of each round's ratio: a round's two epochs ran back to back, under the same load.
        ratios = [f / b for f, b in zip(times["fit"], times["bare"])]
        detail = (f"fit {median(times['fit']) * 1e3:.0f} ms vs bare loop {median(times['bare']) * 1e3:.0f} ms per epoch "
                  f"({budget.sizes[name][0]}/{budget.sizes[name][1]} seqs, batch {shape.batch_size}); "
                  f"median of {budget.repeats} rounds' ratios, which span {min(ratios):.2f}..{max(ratios):.2f}")
        rows.append(row(FIGURES[0], name, median(ratios), ("<=", 1.05), detail))
    return rows


def _one_epoch(kind: str, model: LSTMAutoencoder, splits: Splits, batch_size: int) -> float:
    start = time.perf_counter()
    if kind == "fit":
        next(fit(model, splits, epochs=1, batch_size=batch_size, lr=LR, grad_clip=CLIP, seed=0, device="cpu"))
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        bare_epoch(model, optimizer, splits.train, splits.val, batch_size, CLIP, 0.5, torch.Generator().manual_seed(0))
    return time.perf_counter() - start


# --- 4. threads ----------------------------------------------------------------------------------------------


def threads(budget: Budget) -> list[Row]:
    """Two spawned processes (started and warmed up before any timing) run synthetic-shaped fits on command."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    inboxes, outboxes = [context.Queue() for _ in range(2)], [context.Queue() for _ in range(2)]
    workers = [context.Process(target=_thread_worker, args=(inboxes[i], outboxes[i], barrier, budget.thread_sizes), daemon=True)
               for i in range(2)]
    for worker in workers:
        worker.start()
    try:
        for box in outboxes:
            box.get(timeout=300)  # ready
        k = budget.thread_epochs
        times = {"solo1": [], "solo2": [], "pair": []}
        for i in range(budget.thread_repeats):
            jobs = ["solo1", "pair", "solo2"]
            for job in jobs if i % 2 == 0 else jobs[::-1]:
                if job == "pair":  # both at once, one thread each: wall from the first start to the last end
                    spans = _ask(inboxes, outboxes, (1, k, True))
                    times[job].append(max(e for _, e in spans) - min(s for s, _ in spans))
                else:  # worker 0 alone: k epochs on 1 thread, or the pair's work (2k epochs) on 2 threads
                    (start, end), = _ask(inboxes[:1], outboxes[:1], (1, k, False) if job == "solo1" else (2, 2 * k, False))
                    times[job].append(end - start)
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for worker in workers:
            worker.join(timeout=30)
    solo1, solo2, pair = (median(times[j]) for j in ("solo1", "solo2", "pair"))
    per_epoch_1, per_epoch_2 = solo1 / k, solo2 / (2 * k)
    return [
        row(FIGURES[3], "2 threads vs 1 (epoch speed-up)", per_epoch_1 / per_epoch_2,
            detail=f"synthetic shape, {budget.thread_sizes[0]} seqs: {per_epoch_1 * 1e3:.0f} ms per epoch on 1 thread, "
                   f"{per_epoch_2 * 1e3:.0f} ms on 2 (median of {budget.thread_repeats})"),
        row(FIGURES[3], "2 procs x 1 thread vs 1 x 2 threads (throughput)", solo2 / pair,
            detail=f"{2 * k} epochs: {pair:.2f} s as 2 processes of 1 thread at once (each {pair / solo1:.2f}x its time alone) "
                   f"vs {solo2:.2f} s in 1 process of 2 threads"),
    ]


def _ask(inboxes, outboxes, job) -> list[tuple[float, float]]:
    for inbox in inboxes:
        inbox.put(job)
    return [box.get(timeout=600) for box in outboxes]


def _thread_worker(inbox, outbox, barrier, sizes) -> None:
    shape = SHAPES["synthetic"]
    splits = random_splits(shape, *sizes)
    template = _model(shape)
    torch.set_num_threads(1)  # a new process starts with one thread per core
    _one_epoch("fit", copy.deepcopy(template), splits, shape.batch_size)  # warm up: imports, first-call costs
    outbox.put("ready")
    while (job := inbox.get()) is not None:
        n_threads, epochs, together = job
        torch.set_num_threads(n_threads)
        model = copy.deepcopy(template)
        if together:
            barrier.wait()
        start = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on one machine
        for _ in fit(model, splits, epochs=epochs, batch_size=shape.batch_size, lr=LR, grad_clip=CLIP, device="cpu"):
            pass
        outbox.put((start, time.monotonic()))


# --- Ray: the runner's own sweeps ---------------------------------------------------------------------------


def start_ray(cores: int, out: Path) -> float:
    """A fresh local Ray (address="local": never one another program started on this machine); seconds taken."""
    import ray

    start = time.perf_counter()
    with _quiet(out / RAY_LOG):
        ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - start


@contextlib.contextmanager
def _quiet(log: Path):
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
    datasets: dict
    trials: pd.DataFrame
    metrics: pd.DataFrame
    wall_s: float  # run.fit: Tuner.fit, then the Parquet tables
    started: float  # time.time() when run.fit began


def run_sweep(sweep, out: Path, name: str, watch=None, space: dict | None = None) -> SweepResult:
    """A sweep through the project's runner (as `sweeps run` does), timing `run.fit`: Tuner.fit, then the tables."""
    from sweeps import collect, run, storage

    folder, datasets = run.prepare(sweep, str(out / "sweeps"), name)
    run.claim(sweep, folder)
    with _quiet(out / RAY_LOG), watch or contextlib.nullcontext():
        tuner = run.make_tuner(sweep, datasets, folder, space)  # puts the data in the object store
        started, start = time.time(), time.perf_counter()
        run.fit(tuner, folder)
        wall = time.perf_counter() - start
    trials, metrics = (storage.read_parquet(storage.join(folder, table)) for table in (collect.TRIALS_FILE, collect.METRICS_FILE))
    return SweepResult(folder, datasets, trials, metrics, wall, started)


def worker_starts(result: SweepResult, log: Path) -> list[float]:
    """Seconds from the start of the sweep until each of its trial workers was up: a new process, which imports
    ray.tune, torch and the trial's code before its actor's __init__ ends (Ray's task timeline)."""
    import ray

    with _quiet(log):  # Ray warns that the timeline will come from the dashboard in a later version
        events = ray.timeline()
    inits = sorted((e for e in events if e.get("cat", "").endswith(".__init__") and e["ts"] / 1e6 >= result.started), key=lambda e: e["ts"])
    ends = {}
    for event in inits:  # the first actor of each worker process (one per worker: Tune reuses them)
        ends.setdefault(event["tid"], (event["ts"] + event["dur"]) / 1e6 - result.started)
    return sorted(ends.values())


def fit_alone(sweep, splits: Splits, config: dict) -> list[float]:
    """What a trial does (build the model from its config, fit), in the driver without Ray; seconds per epoch."""
    from sweeps.trial import start_fit

    start = time.perf_counter()
    run, _ = start_fit({"experiment": sweep.experiment, "seed": sweep.seed, "epochs": sweep.budget, **config}, splits, device="cpu")
    epochs = []
    for metrics in run:
        epochs.append(time.perf_counter() - start - sum(epochs))
        if not math.isfinite(metrics["train_loss"]):  # the trial stops there too
            break
    return epochs


def _checkpoint_space(sweep, every: list[int]) -> dict:
    """The sweep's search space with trials that checkpoint every `every[i]` epochs (the registry's presets untouched)."""
    from ray import tune

    from sweeps.run import param_space

    return {**param_space(sweep), "checkpoint_every": tune.grid_search(every)}


# --- 2. trial overhead ---------------------------------------------------------------------------------------


def trial_overhead(budget: Budget, out: Path, ray_start_s: float) -> list[Row]:
    from sweeps.run import build_datasets
    from sweeps.sweep import Sweep

    epochs = budget.trial_epochs
    # One trial at a time on one reused worker: the first starts the worker (timed apart), then trials checkpoint
    # every epoch or only at the last (which the trial always checkpoints), alternating.
    every = [epochs] + [1, epochs] * budget.trial_repeats
    sweep = Sweep("synthetic", preset=budget.trial_preset, epochs=epochs, early_stop=False, max_concurrent=1, overrides=ONE_CONFIG)
    splits, config = build_datasets(sweep)[()], sweep.configs()[0]
    alone = [fit_alone(sweep, splits, config) for _ in range(budget.trial_repeats)]
    result = run_sweep(sweep, out, "trial-overhead", space=_checkpoint_space(sweep, every))
    alone += [fit_alone(sweep, splits, config) for _ in range(budget.trial_repeats)]

    metrics = result.metrics.sort_values(["trial_id", "epoch"]).copy()  # trial ids in the order the trials ran
    metrics["every"] = metrics.trial_id.map(result.trials.set_index("trial_id")["config/checkpoint_every"])
    metrics["epoch_s"] = metrics.groupby("trial_id").time_total_s.diff()  # epochs 2..: no start-up in them
    trials = metrics.groupby("trial_id").agg(total=("time_total_s", "max"), first=("time_total_s", "first"), every=("every", "first"))
    cold, warm = trials.iloc[0], trials.iloc[1:]
    each, last = warm.total[warm.every == 1], warm.total[warm.every == epochs]
    warm_epochs = metrics[metrics.trial_id != cold.name]
    later_epochs, report_only = (warm_epochs.epoch_s[warm_epochs.every == k].dropna() for k in (1, epochs))
    alone_total = median(sum(e) for e in alone)
    alone_epoch = median(t for e in alone for t in e[1:])
    ckpt_ms = (median(each) - median(last)) / max(1, epochs - 1) * 1e3
    sizes = f"{len(splits.train)}/{len(splits.val)} seqs, {epochs} epochs"
    return [
        row(FIGURES[1], "trial vs fit alone (whole trial, reused worker)", median(each) / alone_total, ("<=", 1.10),
            f"{sizes}: in-trial {median(each):.2f} s (checkpoint every epoch, median of {len(each)}) vs fit alone {alone_total:.2f} s "
            f"(median of {len(alone)}, before and after); the sweep {result.wall_s:.1f} s for {len(trials)} trials of {trials.total.sum():.1f} s; "
            f"Ray start {ray_start_s:.1f} s apart"),
        row(FIGURES[1], "trial vs fit alone (per epoch after the first)", median(later_epochs) / alone_epoch, ("<=", 1.10),
            f"{median(later_epochs) * 1e3:.0f} ms in the trial with a checkpoint each epoch, {median(report_only) * 1e3:.0f} ms with reports only, "
            f"vs {alone_epoch * 1e3:.0f} ms alone (each report waits for the driver to take it)"),
        row(FIGURES[1], "first trial on a fresh worker vs fit alone", cold.total / alone_total,
            detail=f"{cold.total:.2f} s, of which the first epoch {cold['first']:.2f} s vs {median(warm['first']):.2f} s on the reused worker: "
                   f"first-use costs in a new process (the first Adam imports torch._dynamo), paid once per worker"),
        row(FIGURES[1], "checkpoint every epoch vs only the last", median(each) / median(last),
            detail=f"{median(each):.2f} s vs {median(last):.2f} s per trial: {ckpt_ms:.0f} ms per checkpoint (model.pt + metrics.parquet, handed to Ray)"),
    ]


# --- 3. parallel efficiency and 5. ASHA -----------------------------------------------------------------------


def parallel_efficiency(budget: Budget, out: Path, cores: int, ray_start_s: float) -> list[Row]:
    """The quick grid as `sweeps run` runs it (the target); Ray Tune alone on trials of the same length that only
    sleep; then the grid on the study's data, with longer trials (reported)."""
    from sweeps.sweep import Sweep

    quick = Sweep("synthetic", preset="quick", early_stop=False)
    rows, epoch_s = _efficiency(quick, budget, out, cores, ray_start_s, (">=", 0.90))
    rows.append(_tune_alone(len(quick.configs()), quick.budget, epoch_s, cores, out))
    if budget.paper_epochs:
        paper = Sweep("synthetic", preset="paper", epochs=budget.paper_epochs, early_stop=False)
        rows += _efficiency(paper, budget, out, cores, ray_start_s)[0]
    return rows


def _tune_alone(trials: int, epochs: int, epoch_s: float, cores: int, out: Path) -> Row:
    """Ray Tune's own cost: a trainable that sleeps `epoch_s` per epoch and reports, as many trials and epochs as the
    grid, the same Tune settings (reused workers, JSON and CSV results). What no trainer could do better than."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sweeps import run

    def sleeper(config):
        for epoch in range(1, config["epochs"] + 1):
            time.sleep(config["epoch_s"])
            tune.report({"epoch": epoch, "val_mse": 1.0})

    space = {"epochs": epochs, "epoch_s": epoch_s, "trial": tune.grid_search(list(range(trials)))}
    tuner = tune.Tuner(tune.with_resources(sleeper, {"cpu": 1}), param_space=space,
                       tune_config=tune.TuneConfig(metric="val_mse", mode="min", reuse_actors=True),
                       run_config=tune.RunConfig(name="tune-alone", storage_path=str((out / "sweeps").resolve()), verbose=0,
                                                 callbacks=[JsonLoggerCallback(), CSVLoggerCallback()]))
    with _quiet(out / RAY_LOG):
        start = time.perf_counter()
        run.tune_settings()
        tuner.fit()
        wall = time.perf_counter() - start
    ideal = trials * epochs * epoch_s / cores
    return row(FIGURES[2], f"Ray Tune alone, trials that sleep as long ({trials} x {epochs} epochs of {epoch_s * 1e3:.0f} ms)", ideal / wall,
               detail=f"{ideal:.1f} s of sleep per core vs Tuner.fit {wall:.1f} s: what Tune costs per trial and per report on this "
                      f"machine, whatever the trainer; the ceiling for the row above")


def _efficiency(sweep, budget: Budget, out: Path, cores: int, ray_start_s: float, target=None) -> tuple[list[Row], float]:
    """(Sum of each config's `fit` alone in the driver) / cores, over the sweep's wall time (`run.fit`), and over
    the time after its workers started; the mean seconds per epoch of `fit` alone."""
    from sweeps.run import build_datasets

    splits, grid = build_datasets(sweep)[()], sweep.configs()
    bare = [[] for _ in grid]

    def bare_pass():
        for i, config in enumerate(grid):
            bare[i].append(sum(fit_alone(sweep, splits, config)))

    bare_pass()
    result = run_sweep(sweep, out, f"grid-{sweep.preset}")
    plain = fits_in_processes(sweep, splits, grid, cores)
    for _ in range(budget.bare_passes - 1):  # after the sweep too: drift on the machine cancels out
        bare_pass()
    work = sum(median(times) for times in bare)
    in_trial = result.trials.wall_time_s.sum()
    epoch_s = work / len(grid) / sweep.budget
    detail = (f"{len(grid)} trials of {sweep.budget} epochs on {len(splits.train)} seqs: sum of fit alone {work:.1f} s / {cores} cores "
              f"= {work / cores:.1f} s vs the sweep {result.wall_s:.1f} s (in-trial time sums to {in_trial:.1f} s); Ray start {ray_start_s:.1f} s apart")
    measure = f"{len(grid)}-trial grid on {cores} cores, {sweep.preset} preset ({work / len(grid):.1f} s per trial)"
    rows = [row(FIGURES[2], measure, work / cores / result.wall_s, target, detail)]
    starts = worker_starts(result, out / RAY_LOG)
    if starts:
        up = result.wall_s - median(starts)
        rows.append(row(FIGURES[2], "... the same once its workers were up", work / cores / up,
                        detail=f"the sweep's {result.wall_s:.1f} s less the {median(starts):.1f} s its {len(starts)} trial workers took to start "
                               f"({', '.join(f'{s:.1f}' for s in starts)} s: new processes importing ray.tune and torch, once per worker "
                               f"however many trials it runs) = {up:.1f} s"))
    rows.append(row(FIGURES[2], f"... the same fits in {cores} plain processes, no Ray: what the cores give", work / cores / plain,
                    detail=f"{work / cores:.1f} s per core vs {plain:.1f} s for the {len(grid)} fits shared by {cores} warm processes "
                           f"(a pool, no Ray): below 1 where busy cores slow each other down; the yardstick for the rows above, as noisy as they are"))
    return rows, epoch_s


def fits_in_processes(sweep, splits: Splits, grid: list[dict], cores: int) -> float:
    """Seconds for `cores` warm processes (imports and first-use costs paid before timing) to run each config's
    `fit` alone, sharing the grid as Ray would: what the machine allows, without Ray."""
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(cores, mp_context=context, initializer=_warm_fitter, initargs=(sweep, splits)) as pool:
        while len(set(pool.map(_pid, range(4 * cores)))) < cores:  # every process has started and warmed up
            pass
        start = time.perf_counter()
        list(pool.map(_pooled_fit, grid))
        return time.perf_counter() - start


_POOLED: dict = {}  # in each pool process: the sweep and its data


def _warm_fitter(sweep, splits: Splits) -> None:
    torch.set_num_threads(1)  # as a trial of 1 CPU runs
    _POOLED.update(sweep=sweep, splits=splits)
    fit_alone(replace(sweep, epochs=1), splits, sweep.configs()[0])  # imports, the first Adam's torch._dynamo


def _pid(_) -> int:
    time.sleep(0.1)  # long enough that one process cannot take every call
    return os.getpid()


def _pooled_fit(config: dict) -> float:
    return sum(fit_alone(_POOLED["sweep"], _POOLED["splits"], config))


def asha(budget: Budget, out: Path) -> list[Row]:
    from sweeps import collect
    from sweeps.sweep import Sweep

    runs = {early_stop: run_sweep(Sweep("synthetic", preset="quick", epochs=budget.asha_epochs, early_stop=early_stop), out,
                                  f"asha-{'on' if early_stop else 'off'}")
            for early_stop in (False, True)}
    result, full_grid = runs[True], runs[False]
    epochs, all_epochs = result.trials.epochs.sum(), full_grid.trials.epochs.sum()
    best, full_best = (collect.ranked(r.trials, "val_mse", "min").best_val_mse.iloc[0] for r in (result, full_grid))
    grace = Sweep("synthetic").entry.presets["quick"].grace_period
    return [
        row(FIGURES[4], "epochs trained, ASHA vs all", epochs / all_epochs, ("<=", 0.35),
            f"{epochs} of {all_epochs} epochs ({len(result.trials)} trials, {budget.asha_epochs} epochs each, grace {grace}); "
            f"{int(result.trials.stopped_early.sum())} stopped early"),
        row(FIGURES[4], "best val_mse, ASHA vs all", best / full_best, ("<=", 1.05), f"{best:.5f} with ASHA vs {full_best:.5f} without"),
        row(FIGURES[4], "wall time, ASHA vs all", result.wall_s / full_grid.wall_s,
            detail=f"sweep {result.wall_s:.1f} s vs {full_grid.wall_s:.1f} s"),
    ]


# --- 6. memory -----------------------------------------------------------------------------------------------


class MemoryWatch:
    """Peak memory of this Ray's trial workers (psutil) and of its object store, sampled in a thread."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.workers: dict[int, dict] = {}  # pid -> peak rss/uss
        self.store_start = self.store_peak = float("nan")
        self.store_error = ""
        self._state = None  # Ray's global state client, made once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.store_start = self.store_peak = self._store_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self):
        import psutil

        # Only this driver's Ray: its raylet is our child and the workers are the raylet's.
        for process in psutil.Process().children(recursive=True):
            try:
                title = " ".join(process.cmdline())
                if not title.startswith("ray::") or not ("ImplicitFunc" in title or title.startswith("ray::train")):
                    continue
                memory = process.memory_full_info()
            except (psutil.Error, OSError):
                continue  # ended meanwhile
            peak = self.workers.setdefault(process.pid, {"rss": 0, "uss": 0})
            peak["rss"], peak["uss"] = max(peak["rss"], memory.rss), max(peak["uss"], memory.uss)
        self.store_peak = max(self.store_peak, self._store_bytes())

    def _store_bytes(self) -> float:
        try:  # Ray's own figure, as `ray memory --stats-only` prints it
            from ray._private import internal_api

            self._state = self._state or internal_api.get_state_from_address(_gcs_address())
            return float(internal_api.get_memory_info_reply(self._state).store_stats.object_store_bytes_used)
        except Exception as error:  # a private API: say so rather than fail the figure
            self.store_error = f"object store not read ({type(error).__name__}: {error})"
            return float("nan")


def _gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def mnist_root(out: Path) -> tuple[Path, bool]:
    """The real MNIST next to the project (../shared/data), or random images in its files under `out`, enough for the
    paper preset's split (10,000 of the training images for validation)."""
    for candidate in (Path.cwd().parent / "shared" / "data", REPO.parent / "shared" / "data"):
        if any((candidate / "MNIST" / "raw" / f"train-images-idx3-ubyte{gz}").exists() for gz in ("", ".gz")):
            return candidate, True
    if (out / "mnist").exists():
        return out / "mnist", False
    generator = torch.Generator().manual_seed(0)
    for train, n in ((True, 20_000), (False, 2_000)):
        images = torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8)
        mnist.write(out / "mnist", images, torch.randint(0, 10, (n,), generator=generator), train)
    return out / "mnist", False


def memory(out: Path) -> list[Row]:
    """The same 2-trial MNIST sweep on the study's split and on the quick preset's small one: what the trial workers
    hold privately beyond the small sweep's, per byte of data shipped beyond it (0: the data is never copied)."""
    runs = {preset: _watched_mnist_sweep(out, preset) for preset in ("quick", "paper")}
    (_, small_watch, small_shipped), (big, watch, shipped) = runs["quick"], runs["paper"]
    private, small_private = (median(w["uss"] for w in v.workers.values()) for v in (watch, small_watch))
    store = watch.store_peak - watch.store_start
    mb = 1 / 2**20
    data = f"MNIST {'real' if mnist_root(out)[1] else 'generated'}, {len(big.trials)} trials of 1 CPU at once"
    workers = ", ".join(f"{w['rss'] * mb:.0f}/{w['uss'] * mb:.0f}" for w in watch.workers.values()) or "none seen"
    return [
        row(FIGURES[5], "object store peak vs data shipped", store / shipped, ("<=", 1.5),
            f"{data}, the study's split: object store +{store * mb:.1f} MB at its peak for {shipped * mb:.1f} MB shipped; "
            f"1 = once per node, {len(big.trials)} = once per trial. {watch.store_error}".strip()),
        row(FIGURES[5], "trial worker's own memory vs data shipped", (private - small_private) / (shipped - small_shipped), ("<=", 0.5),
            f"median peak USS (memory no other process shares) per trial worker: {private * mb:.0f} MB with {shipped * mb:.1f} MB of data "
            f"vs {small_private * mb:.0f} MB with {small_shipped * mb:.1f} MB (quick preset); peak RSS/USS: {workers} MB. "
            f"1 would be a copy per trial; near 0, the trials read the object store's copy (numpy, zero-copy)"),
    ]


def _watched_mnist_sweep(out: Path, preset: str) -> tuple[SweepResult, MemoryWatch, int]:
    from sweeps.sweep import Sweep
    from sweeps.trial import ship

    sweep = Sweep("mnist-rows", preset=preset, epochs=1, early_stop=False, data=str(mnist_root(out)[0]),
                  overrides={"hidden_size": [64], "batch_size": [128], "lr": [1e-3, 5e-3]})  # 2 trials, at once on 2 cores
    watch = MemoryWatch()
    result = run_sweep(sweep, out, f"memory-{preset}", watch)
    return result, watch, len(pickle.dumps(ship(result.datasets), protocol=5))  # what with_parameters puts in the object store


# --- the table, the files, the command ------------------------------------------------------------------------


def machine_info() -> dict:
    import ray

    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines() if line.startswith("model name")), platform.processor())
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(_total_memory() / 2**30, 1),
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


def _total_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


def format_table(rows: list[Row]) -> str:
    header = ("figure", "measure", "value", "target", "holds", "detail")
    lines = [(r.figure, r.measure, f"{r.value:.3f}", r.target or "-", {True: "yes", False: "NO", None: "-"}[r.holds], r.detail) for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(5)]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)) + "  " + line[5] for line in [header, *lines])


def write(rows: list[Row], machine: dict, out: Path) -> None:
    from sweeps import storage

    frame = pd.DataFrame([vars(r) for r in rows], columns=list(Row.__dataclass_fields__))
    frame["holds"] = frame["holds"].astype("boolean")  # None where there is no target
    storage.write_parquet(str(out / RESULTS_FILE), frame)
    storage.write_json(str(out / MACHINE_FILE), machine)


def _figure(number: int, measure, *args) -> list[Row]:
    """One figure's rows; a figure that fails is one row saying why, and the others still run."""
    start = time.perf_counter()
    print(f"bench: {FIGURES[number - 1]} ...", file=sys.stderr, flush=True)
    try:
        rows = measure(*args)
    except Exception as error:
        traceback.print_exc()
        rows = [Row(FIGURES[number - 1], "failed", float("nan"), detail=f"{type(error).__name__}: {error}")]
    print(f"bench: {FIGURES[number - 1]}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def _check_out(out: Path) -> None:
    """Before anything is measured: a folder that cannot be written is bad input, not a failure ten minutes in."""
    from sweeps import storage
    from sweeps.sweep import SweepError

    try:
        storage.check_writable(str(out))
    except OSError as error:
        raise SweepError(f"cannot write to --out {out} ({error.strerror or error}): choose a writable folder") from None


def main(quick: bool = False, out: str | None = None) -> int:
    import ray

    budget = QUICK if quick else FULL
    out = Path(out or f"results/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    _check_out(out)
    started = time.perf_counter()
    torch.set_num_threads(1)  # as a trial of 1 CPU runs
    machine = {**machine_info(), "mode": "quick" if quick else "full"}
    cores = machine["cores"]
    rows = _figure(1, trainer_overhead, budget) + _figure(4, threads, budget)
    ray_start_s = start_ray(cores, out)
    try:
        rows += _figure(2, trial_overhead, budget, out, ray_start_s)
        rows += _figure(3, parallel_efficiency, budget, out, cores, ray_start_s)
        rows += _figure(5, asha, budget, out)
        rows += _figure(6, memory, out)
    finally:
        ray.shutdown()
    rows.sort(key=lambda r: FIGURES.index(r.figure))
    machine.update(ray_start_s=round(ray_start_s, 2), bench_s=round(time.perf_counter() - started, 1), load_average_at_end=list(os.getloadavg()))
    write(rows, machine, out)
    print(format_table(rows))
    print(f"\n{out / RESULTS_FILE}, {out / MACHINE_FILE} ({machine['cpu']}, {cores} cores); bench took {machine['bench_s']:.0f} s")
    return 0 if all(math.isfinite(r.value) for r in rows) else 1
