"""GPU packing: 1, 2, 4 and 8 pixel-model trials at once on one GPU, each its own process (as Ray runs trials of
`--gpus-per-trial 1/k`), their throughput over one trial's. One pixel trial cannot keep a GPU busy: its 784 steps
are 784 rounds of small kernels, launched one after the other from Python."""

from __future__ import annotations

import multiprocessing
import time

from sweeps.bench.harness import Bench, Row
from sweeps.bench.pixel import ENCODERS, Stepper, precisions

TRIALS = (1, 2, 4, 8)


def measure(bench: Bench) -> list[Row]:
    precision = "bf16" if "bf16" in precisions("cuda") else "fp32"  # the showcase's, where the GPU has it
    steps = bench.budget.pack_steps
    throughput = {n: n * steps / _packed(n, steps, precision) for n in TRIALS}  # steps per second, all trials
    return [
        bench.row(
            f"{n} trials packed on one GPU vs 1 (throughput)",
            throughput[n] / throughput[1],
            "4 trials" if n == 4 else None,
            f"{throughput[n]:.1f} vs {throughput[1]:.1f} training steps per second in all (recipe model in {precision}, "
            f"hidden 64, batch 64; {steps} timed steps per trial, from the first start to the last end)",
        )
        for n in TRIALS[1:]
    ]


def _packed(n: int, steps: int, precision: str) -> float:
    """Seconds from the first of `n` processes starting its timed steps to the last one ending. Each process builds
    its model and warms up before a barrier, so that no process's start-up is timed."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier, results = context.Barrier(n), context.Queue()
    workers = [
        context.Process(target=_worker, args=(barrier, results, steps, precision), daemon=True) for _ in range(n)
    ]
    for worker in workers:
        worker.start()
    try:
        spans = [results.get(timeout=600) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
    errors = [span for span in spans if isinstance(span, str)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} packed trials failed: {errors[0]}")
    return max(end for _, end in spans) - min(start for start, _ in spans)


def _worker(barrier, results, steps: int, precision: str) -> None:
    try:
        step = Stepper(ENCODERS["recipe"], precision, "cuda")
        for _ in range(2):  # warm up: CUDA context, cuDNN and autocast's first calls
            step()
        barrier.wait(timeout=600)
        start = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on one machine
        for _ in range(steps):
            step()  # waits for the GPU at the end of each step
        results.put((start, time.monotonic()))
    except Exception as error:  # reported by the parent as the measure's failure; the others must not wait for us
        barrier.abort()
        results.put(f"{type(error).__name__}: {error}")
