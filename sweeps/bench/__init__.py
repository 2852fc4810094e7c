"""The benchmark: what the trainer, Ray Tune and the machine cost, as ratios measured side by side.

    python -m sweeps bench --quick                  # a few minutes on 2 cores
    python -m sweeps bench --out results/bench-x    # the full run: about 40 minutes on 2 cores

It prints a table (one row per quantity: measure, quantity, value, target, whether it holds, detail) and writes
`OUT/bench.parquet` (the same rows), `OUT/machine.json` (CPU, cores, versions, GPU, load average) and, under
`OUT/sweeps/`, the sweeps it ran, with Ray's output in `OUT/ray.log`. The measures, in the order of `MEASURES`, each
described in its module: trainer overhead, trial overhead, parallel efficiency, threads, early stopping (each
scheduler in each order of the grid), memory, loggers (what each opt-in logger adds per reported epoch), pixel (the
pixel-by-pixel MNIST model's step time: the fused layer, precisions, threads, a projected epoch), precision parity (bf16's accuracy against fp32's, over fp32's own noise between seeds)
and, with `device="cuda"` only, GPU packing. On "cuda" the bench runs only the measures written for a GPU.

Run it through the command line, which keeps the Ray it starts on 127.0.0.1 (`keep_ray_local`), as for every
command. Absolute times drift on a shared machine, so every measure is a ratio of two things run in the same bench,
interleaved where they can be and repeated, with medians taken (the projected pixel epoch, in seconds, is the one
absolute time). Ray's start-up is timed apart.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from sweeps import storage
from sweeps.bench import (
    early_stopping,
    gpu_packing,
    loggers,
    memory,
    parallel_efficiency,
    parity,
    pixel,
    threads,
    trainer_overhead,
    trial_overhead,
)
from sweeps.bench.harness import (
    FULL,
    MACHINE_FILE,
    NOT_RUN,
    QUICK,
    RESULTS_FILE,
    Bench,
    Row,
    Target,
    format_table,
    machine_info,
    start_local_ray,
    write,
)

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Measure:
    name: str
    rows: Callable[[Bench], list[Row]]  # the measure: its rows on this bench
    targets: dict[str, Target] = field(default_factory=dict)  # what its rows must reach, by the key the run gives
    ray: bool = False  # needs the bench's Ray, started once for all that do
    devices: tuple[str, ...] = ("cpu",)  # the devices it is run for


MEASURES = [
    Measure("trainer overhead", trainer_overhead.measure, {"epoch": ("<=", 1.05)}),
    Measure("trial overhead", trial_overhead.measure, {"trial": ("<=", 1.10), "epoch": ("<=", 1.10)}, ray=True),
    Measure("parallel efficiency", parallel_efficiency.measure, {"quick grid": (">=", 0.90)}, ray=True),
    Measure("threads", threads.measure),
    # The default scheduler, in the grid's own order as shuffled: a quarter of the epochs, the best within 5%.
    Measure("early stopping", early_stopping.measure, {"epochs": ("<=", 0.25), "best": ("<=", 1.05)}, ray=True),
    Measure("memory", memory.measure, {"store": ("<=", 1.5), "private": ("<=", 0.5)}, ray=True),
    Measure("loggers", loggers.measure, ray=True),
    # The fused layer at least 2.5x the step-by-step cells' speed; an epoch of one pixel trial (the showcase's shape) in
    # at most 200 s on the AVX-512 CPU (what the older one gives is reported); in seconds on a GPU.
    Measure(
        "pixel",
        pixel.measure,
        {"fused": (">=", 2.5), "cpu epoch": ("<=", 200), "cuda epoch": ("<=", 20)},
        devices=DEVICES,
    ),
    # bf16 within fp32's seed-to-seed noise, or the experiments' default precision stays fp32.
    Measure("precision parity", parity.measure, {"noise": ("<=", 1.0)}, devices=DEVICES),
    Measure("GPU packing", gpu_packing.measure, {"4 trials": (">=", 2.5)}, devices=("cuda",)),
]


def slug(name: str) -> str:
    """A measure's name on the command line: "precision parity" -> "precision-parity"."""
    return name.lower().replace(" ", "-")


def main(quick: bool = False, out: str | None = None, device: str = "cpu", only: list[str] | None = None) -> int:
    """`only`: the slugs of the measures to run (None: every measure for the device)."""
    if problem := _device_problem(device):
        print(f"sweeps: error: --device {device}: {problem}", file=sys.stderr)
        return 2
    by_slug = {slug(m.name): m for m in MEASURES}
    wanted = set(by_slug) if only is None else {name.lower() for name in only}
    if unknown := sorted(wanted - set(by_slug)):
        print(
            f"sweeps: error: --measure {unknown[0]}: no such measure; choose among {', '.join(by_slug)}",
            file=sys.stderr,
        )
        return 2
    if only is not None and (elsewhere := sorted(s for s in wanted if device not in by_slug[s].devices)):
        print(f"sweeps: error: --measure {elsewhere[0]} does not run on --device {device}", file=sys.stderr)
        return 2
    chosen = [m for name, m in by_slug.items() if name in wanted and device in m.devices]
    out = Path(out or storage.stamped("results/bench"))
    storage.require_writable(str(out), "--out")
    started = time.perf_counter()
    torch.set_num_threads(1)  # as a trial of 1 CPU runs
    machine = {**machine_info(), "mode": "quick" if quick else "full", "device": device}
    bench = Bench(QUICK if quick else FULL, out, machine["cores"], device)
    rows, ray_start_s = _run_all(chosen, bench)
    if ray_start_s is not None:
        machine["ray_start_s"] = round(ray_start_s, 2)
    machine.update(bench_s=round(time.perf_counter() - started, 1), load_average_at_end=list(os.getloadavg()))
    write(rows, machine, out)
    print(format_table(rows))
    where = f"{machine['cpu']}, {machine['cores']} cores" + (f", {machine['gpu']}" if device == "cuda" else "")
    print(f"\n{out / RESULTS_FILE}, {out / MACHINE_FILE} ({where}); bench took {machine['bench_s']:.0f} s")
    return 0 if all(math.isfinite(r.value) or r.quantity == NOT_RUN for r in rows) else 1


def _run_all(measures: list[Measure], bench: Bench) -> tuple[list[Row], float | None]:
    """The measures without Ray first, then Ray started once for the others (its start timed apart, None if not
    started); the rows in the registry's order."""
    import ray

    rows = [r for m in measures if not m.ray for r in _run(m, bench)]
    ray_start_s = None
    if any(m.ray for m in measures):
        try:
            ray_start_s = start_local_ray(bench.cores, bench.out)
            rows += [r for m in measures if m.ray for r in _run(m, replace(bench, ray_start_s=ray_start_s))]
        finally:
            ray.shutdown()
    order = [m.name for m in measures]
    return sorted(rows, key=lambda r: order.index(r.measure)), ray_start_s


def _run(measure: Measure, bench: Bench) -> list[Row]:
    """One measure's rows; a measure that fails is one row saying why, and the others still run."""
    start = time.perf_counter()
    print(f"bench: {measure.name} ...", file=sys.stderr, flush=True)
    try:
        rows = measure.rows(replace(bench, measure=measure.name, targets=measure.targets))
    except Exception as error:
        traceback.print_exc()
        rows = [Row(measure.name, "failed", float("nan"), detail=f"{type(error).__name__}: {error}")]
    print(f"bench: {measure.name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def _device_problem(device: str) -> str:
    """Why the bench cannot run on `device` ("" where it can): checked before anything is written."""
    if device not in DEVICES:
        return f"expected one of {', '.join(DEVICES)}"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU here"
    return ""
