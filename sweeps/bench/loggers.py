"""Loggers: what each opt-in logger (`sweeps run --logger NAME`) adds to a sweep, per epoch a trial reports.

Two small synthetic trials, the same sweep without a logger and with each installed one, interleaved round by round.
Ray Tune's logger callbacks run in the driver, on every result, and a trial's next epoch waits for the driver to
take its report: their cost lands on every epoch. W&B runs in its offline mode (its files under OUT/wandb).
"""

from __future__ import annotations

import itertools
from statistics import median

from sweeps.bench.harness import Bench, Row, interleaved, synthetic_sweep, timed_sweep
from sweeps.loggers import LOGGERS, environment, installed

SMALL_TRIALS = {"hidden_size": [10], "batch_size": [64], "grad_clip": [1.0], "lr": [1e-3, 1e-2]}  # 2 trials, 1 per core


def measure(bench: Bench) -> list[Row]:
    available = installed(bench.budget.logger_names or LOGGERS)
    short = bench.budget.logger_epochs
    lengths = (short, 4 * short)  # two budgets: the difference per epoch, apart from what each trial pays once
    counter = itertools.count()

    def sweep(loggers: list[str], epochs: int):
        def timed() -> float:
            spec = synthetic_sweep("quick", epochs=epochs, early_stop=False, loggers=loggers, overrides=SMALL_TRIALS)
            result = timed_sweep(spec, bench.out, f"loggers-{'-'.join(loggers) or 'none'}-{next(counter)}")
            if len(result.trials) != len(SMALL_TRIALS["lr"]):
                raise RuntimeError(f"{len(result.trials)} trials: the figures per epoch assume one per lr")
            return result.wall_s

        return timed

    jobs = {(name, epochs): sweep([name] if name else [], epochs) for name in ["", *available] for epochs in lengths}
    # (W&B's logging actor gets WANDB_MODE and WANDB_DIR from the callback: see sweeps.loggers.callbacks.)
    with environment(WANDB_MODE="offline", WANDB_DIR=str(bench.out), WANDB_SILENT="true"):
        # A warm-up round where there are several (the first sweep pays the trial workers' first imports).
        times = interleaved(jobs, bench.budget.logger_rounds, warmup=int(bench.budget.logger_rounds > 1))
    wall = {key: median(seconds) for key, seconds in times.items()}
    trials = len(SMALL_TRIALS["lr"])
    per_epoch = {n: (wall[n, lengths[1]] - wall[n, short]) / (trials * (lengths[1] - short)) for n in ["", *available]}
    rows = []
    for name in available:
        extra_epoch = per_epoch[name] - per_epoch[""]
        extra_once = (wall[name, short] - wall["", short]) - extra_epoch * trials * short
        rows.append(
            bench.row(
                f"{name} vs no logger (sweep time, {lengths[1]} epochs)",
                wall[name, lengths[1]] / wall["", lengths[1]],
                detail=f"{extra_epoch * 1e3:+.0f} ms per reported epoch, {extra_once / trials:+.1f} s once per trial; "
                f"2 trials x {lengths[1]} epochs in {wall[name, lengths[1]]:.1f} s vs {wall['', lengths[1]]:.1f} s, "
                f"x {short} in {wall[name, short]:.1f} s vs {wall['', short]:.1f} s "
                f"(medians of {bench.budget.logger_rounds})",
            )
        )
    return rows  # none for a logger that is not installed
