"""Threads: 2 torch threads over 1 per epoch, and 2 processes of 1 thread over 1 process of 2 (throughput).

Two spawned processes, started and warmed up before any timing, run synthetic-shaped fits on command."""

from __future__ import annotations

import copy
import multiprocessing
import time
from statistics import median

import torch

from lstm_ae.train import fit
from sweeps.bench.harness import Bench, Row, interleaved
from sweeps.bench.yardstick import CLIP, LR, SHAPES, make_model, one_epoch, random_splits


def measure(bench: Bench) -> list[Row]:
    budget = bench.budget
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    inboxes, outboxes = [context.Queue() for _ in range(2)], [context.Queue() for _ in range(2)]
    workers = [
        context.Process(target=_worker, args=(inboxes[i], outboxes[i], barrier, budget.thread_sizes), daemon=True)
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        for box in outboxes:
            box.get(timeout=300)  # ready
        k = budget.thread_epochs
        jobs = {
            "solo1": lambda: _alone(inboxes, outboxes, (1, k, False)),  # worker 0 alone: k epochs on 1 thread
            "pair": lambda: _pair(inboxes, outboxes, (1, k, True)),
            "solo2": lambda: _alone(inboxes, outboxes, (2, 2 * k, False)),  # the pair's work (2k epochs) on 2 threads
        }
        times = interleaved(jobs, budget.thread_repeats)
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for worker in workers:
            worker.join(timeout=30)
    return _rows(bench, *(median(times[j]) for j in ("solo1", "solo2", "pair")))


def _rows(bench: Bench, solo1: float, solo2: float, pair: float) -> list[Row]:
    k, sizes, repeats = bench.budget.thread_epochs, bench.budget.thread_sizes, bench.budget.thread_repeats
    per_epoch_1, per_epoch_2 = solo1 / k, solo2 / (2 * k)
    return [
        bench.row(
            "2 threads vs 1 (epoch speed-up)",
            per_epoch_1 / per_epoch_2,
            detail=f"synthetic shape, {sizes[0]} seqs: {per_epoch_1 * 1e3:.0f} ms per epoch on 1 thread, "
            f"{per_epoch_2 * 1e3:.0f} ms on 2 (median of {repeats})",
        ),
        bench.row(
            "2 procs x 1 thread vs 1 x 2 threads (throughput)",
            solo2 / pair,
            detail=f"{2 * k} epochs: {pair:.2f} s as 2 processes of 1 thread at once (each {pair / solo1:.2f}x its time "
            f"alone) vs {solo2:.2f} s in 1 process of 2 threads",
        ),
    ]


def _ask(inboxes, outboxes, job) -> list[tuple[float, float]]:
    for inbox in inboxes:
        inbox.put(job)
    return [box.get(timeout=600) for box in outboxes]


def _alone(inboxes, outboxes, job) -> float:
    ((start, end),) = _ask(inboxes[:1], outboxes[:1], job)
    return end - start


def _pair(inboxes, outboxes, job) -> float:
    """Both workers at once, one thread each: the wall time from the first start to the last end."""
    spans = _ask(inboxes, outboxes, job)
    return max(e for _, e in spans) - min(s for s, _ in spans)


def _worker(inbox, outbox, barrier, sizes) -> None:
    shape = SHAPES["synthetic"]
    splits = random_splits(shape, *sizes)
    template = make_model(shape)
    torch.set_num_threads(1)  # a new process starts with one thread per core
    one_epoch("fit", copy.deepcopy(template), splits, shape.batch_size)  # warm up: imports, first-call costs
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
