"""Parallel efficiency: the 24-trial synthetic quick grid (no ASHA) on all cores: (sum of each config's `fit` alone)
/ cores over the sweep's wall time; the same once its workers were up (Ray's task timeline); the same fits in as
many plain processes (no Ray: what the cores give); Ray Tune alone on trials that only sleep; the full run repeats
the grid on the study's 10,000 signals."""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import replace
from statistics import median

import torch

from lstm_ae.data import Splits
from sweeps.bench.harness import (
    RAY_LOG,
    Bench,
    Row,
    fit_alone,
    quiet,
    sweep_data,
    synthetic_sweep,
    timed_sweep,
    worker_starts,
)


def measure(bench: Bench) -> list[Row]:
    """The quick grid as `sweeps run` runs it (the target); Ray Tune alone on trials of the same length that only
    sleep; then the grid on the study's data, with longer trials (reported)."""
    quick = synthetic_sweep("quick", epochs=bench.budget.grid_epochs, early_stop=False)
    rows, epoch_s = _efficiency(bench, quick, "quick grid")
    rows.append(_tune_alone(bench, len(quick.configs()), quick.budget, epoch_s))
    if bench.budget.paper_epochs:
        paper = synthetic_sweep("paper", epochs=bench.budget.paper_epochs, early_stop=False)
        rows += _efficiency(bench, paper)[0]
    return rows


def _efficiency(bench: Bench, sweep, target: str | None = None) -> tuple[list[Row], float]:
    """(Sum of each config's `fit` alone in the driver) / cores, over the sweep's wall time (`runner.start`), and over
    the time after its workers started; the mean seconds per epoch of `fit` alone."""
    splits, grid, cores = sweep_data(sweep), sweep.configs(), bench.cores
    alone = [[] for _ in grid]

    def alone_pass():
        for i, config in enumerate(grid):
            alone[i].append(sum(fit_alone(sweep, splits, config)))

    alone_pass()
    result = timed_sweep(sweep, bench.out, f"grid-{sweep.preset}")
    plain = fits_in_processes(sweep, splits, grid, cores)
    for _ in range(bench.budget.bare_passes - 1):  # after the sweep too: drift on the machine cancels out
        alone_pass()
    work = sum(median(times) for times in alone)
    in_trial = result.trials.wall_time_s.sum()
    detail = (
        f"{len(grid)} trials of {sweep.budget} epochs on {len(splits.train)} seqs: sum of fit alone {work:.1f} s / "
        f"{cores} cores = {work / cores:.1f} s vs the sweep {result.wall_s:.1f} s (in-trial time sums to "
        f"{in_trial:.1f} s); Ray start {bench.ray_start_s:.1f} s apart"
    )
    quantity = f"{len(grid)}-trial grid on {cores} cores, {sweep.preset} preset ({work / len(grid):.1f} s per trial)"
    rows = [bench.row(quantity, work / cores / result.wall_s, target, detail)]
    if starts := worker_starts(result, bench.out / RAY_LOG):
        rows.append(_once_up(bench, work, result.wall_s, starts))
    rows.append(
        bench.row(
            f"... the same fits in {cores} plain processes, no Ray: what the cores give",
            work / cores / plain,
            detail=f"{work / cores:.1f} s per core vs {plain:.1f} s for the {len(grid)} fits shared by {cores} warm "
            f"processes (a pool, no Ray): below 1 where busy cores slow each other down; the yardstick for the rows "
            f"above, as noisy as they are",
        )
    )
    return rows, work / len(grid) / sweep.budget


def _once_up(bench: Bench, work: float, wall_s: float, starts: list[float]) -> Row:
    up = wall_s - median(starts)
    return bench.row(
        "... the same once its workers were up",
        work / bench.cores / up,
        detail=f"the sweep's {wall_s:.1f} s less the {median(starts):.1f} s its {len(starts)} trial workers took to "
        f"start ({', '.join(f'{s:.1f}' for s in starts)} s: new processes importing ray.tune and torch, once per "
        f"worker however many trials it runs) = {up:.1f} s",
    )


def _tune_alone(bench: Bench, trials: int, epochs: int, epoch_s: float) -> Row:
    """Ray Tune's own cost: a trainable that sleeps `epoch_s` per epoch and reports, as many trials and epochs as the
    grid, the same Tune settings (reused workers, JSON and CSV results). What no trainer could do better than."""
    from ray import tune

    from sweeps import tuner

    def sleeper(config):
        for epoch in range(1, config["epochs"] + 1):
            time.sleep(config["epoch_s"])
            tune.report({"epoch": epoch, "val_mse": 1.0})

    space = {"epochs": epochs, "epoch_s": epoch_s, "trial": tune.grid_search(list(range(trials)))}
    sleepers = tune.Tuner(
        tune.with_resources(sleeper, {"cpu": 1}),
        param_space=space,
        tune_config=tuner.tune_config(metric="val_mse", mode="min"),
        run_config=tune.RunConfig(
            name="tune-alone",
            storage_path=str((bench.out / "sweeps").resolve()),
            verbose=0,
            callbacks=tuner.result_loggers(),
        ),
    )
    with quiet(bench.out / RAY_LOG):
        start = time.perf_counter()
        tuner.tune_settings()
        sleepers.fit()
        wall = time.perf_counter() - start
    ideal = trials * epochs * epoch_s / bench.cores
    return bench.row(
        f"Ray Tune alone, trials that sleep as long ({trials} x {epochs} epochs of {epoch_s * 1e3:.0f} ms)",
        ideal / wall,
        detail=f"{ideal:.1f} s of sleep per core vs Tuner.fit {wall:.1f} s: what Tune costs per trial and per report "
        f"on this machine, whatever the trainer; the ceiling for the row above",
    )


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
