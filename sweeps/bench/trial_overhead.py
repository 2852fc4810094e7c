"""Trial overhead: one config as a real Ray Tune trial through `sweeps.runner`, over `fit` alone in the driver; and
checkpointing every epoch over checkpointing only the last."""

from __future__ import annotations

from statistics import median

from sweeps.bench.harness import Bench, Row, fit_alone, sweep_data, synthetic_sweep, timed_sweep
from sweeps.bench.yardstick import CLIP, LR

ONE_CONFIG = {"batch_size": [32], "lr": [LR], "grad_clip": [CLIP], "hidden_size": [40]}  # one synthetic trial


def measure(bench: Bench) -> list[Row]:
    budget, epochs = bench.budget, bench.budget.trial_epochs
    # One trial at a time on one reused worker: the first starts the worker (timed apart), then trials checkpoint
    # every epoch or only at the last (which the trial always checkpoints), alternating.
    every = [epochs] + [1, epochs] * budget.trial_repeats
    sweep = synthetic_sweep(
        budget.trial_preset,
        epochs=epochs,
        early_stop=False,
        max_concurrent=1,
        order="grid",  # the trials in `every`'s order
        overrides={**ONE_CONFIG, "checkpoint_every": every},
    )
    splits, config = sweep_data(sweep), sweep.configs()[0]
    alone = [fit_alone(sweep, splits, config) for _ in range(budget.trial_repeats)]
    result = timed_sweep(sweep, bench.out, "trial-overhead")
    alone += [fit_alone(sweep, splits, config) for _ in range(budget.trial_repeats)]
    return _rows(bench, result, alone, f"{len(splits.train)}/{len(splits.val)} seqs, {epochs} epochs")


def _rows(bench: Bench, result, alone: list[list[float]], sizes: str) -> list[Row]:
    epochs = bench.budget.trial_epochs
    metrics = result.metrics.sort_values(["trial_id", "epoch"]).copy()  # trial ids in the order the trials ran
    metrics["every"] = metrics.trial_id.map(result.trials.set_index("trial_id")["config/checkpoint_every"])
    metrics["epoch_s"] = metrics.groupby("trial_id").time_total_s.diff()  # epochs 2..: no start-up in them
    trials = metrics.groupby("trial_id").agg(
        total=("time_total_s", "max"), first=("time_total_s", "first"), every=("every", "first")
    )
    cold, warm = trials.iloc[0], trials.iloc[1:]
    each, last = warm.total[warm.every == 1], warm.total[warm.every == epochs]
    warm_epochs = metrics[metrics.trial_id != cold.name]
    later_epochs, report_only = (warm_epochs.epoch_s[warm_epochs.every == k].dropna() for k in (1, epochs))
    alone_total = median(sum(e) for e in alone)
    alone_epoch = median(t for e in alone for t in e[1:])
    ckpt_ms = (median(each) - median(last)) / max(1, epochs - 1) * 1e3
    return [
        bench.row(
            "trial vs fit alone (whole trial, reused worker)",
            median(each) / alone_total,
            "trial",
            f"{sizes}: in-trial {median(each):.2f} s (checkpoint every epoch, median of {len(each)}) vs fit alone "
            f"{alone_total:.2f} s (median of {len(alone)}, before and after); the sweep {result.wall_s:.1f} s for "
            f"{len(trials)} trials of {trials.total.sum():.1f} s; Ray start {bench.ray_start_s:.1f} s apart",
        ),
        bench.row(
            "trial vs fit alone (per epoch after the first)",
            median(later_epochs) / alone_epoch,
            "epoch",
            f"{median(later_epochs) * 1e3:.0f} ms in the trial with a checkpoint each epoch, "
            f"{median(report_only) * 1e3:.0f} ms with reports only, vs {alone_epoch * 1e3:.0f} ms alone "
            f"(each report waits for the driver to take it)",
        ),
        bench.row(
            "first trial on a fresh worker vs fit alone",
            cold.total / alone_total,
            detail=f"{cold.total:.2f} s, of which the first epoch {cold['first']:.2f} s vs {median(warm['first']):.2f} s "
            f"on the reused worker: first-use costs in a new process (the first Adam imports torch._dynamo), "
            f"paid once per worker",
        ),
        bench.row(
            "checkpoint every epoch vs only the last",
            median(each) / median(last),
            detail=f"{median(each):.2f} s vs {median(last):.2f} s per trial: {ckpt_ms:.0f} ms per checkpoint "
            f"(model.pt + metrics.parquet, handed to Ray)",
        ),
    ]
