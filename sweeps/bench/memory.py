"""Memory: an MNIST sweep (the study's split) with 2 trials at once: object store and trial workers' memory over the
data shipped, against the same sweep on the quick preset's small split."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from statistics import median

import torch

from lstm_ae.data import mnist
from sweeps.bench.harness import Bench, Row, SweepResult, timed_sweep

REPO = Path(__file__).resolve().parents[2]


def measure(bench: Bench) -> list[Row]:
    """The same 2-trial MNIST sweep on the study's split and on the quick preset's small one: what the trial workers
    hold privately beyond the small sweep's, per byte of data shipped beyond it (0: the data is never copied)."""
    runs = {preset: _watched_mnist_sweep(bench.out, preset) for preset in ("quick", "paper")}
    (_, small_watch, small_shipped), (big, watch, shipped) = runs["quick"], runs["paper"]
    private, small_private = (median(w["uss"] for w in v.workers.values()) for v in (watch, small_watch))
    store = watch.store_peak - watch.store_start
    mb = 1 / 2**20
    data = f"MNIST {'real' if mnist_root(bench.out)[1] else 'generated'}, {len(big.trials)} trials of 1 CPU at once"
    workers = ", ".join(f"{w['rss'] * mb:.0f}/{w['uss'] * mb:.0f}" for w in watch.workers.values()) or "none seen"
    return [
        bench.row(
            "object store peak vs data shipped",
            store / shipped,
            "store",
            f"{data}, the study's split: object store +{store * mb:.1f} MB at its peak for {shipped * mb:.1f} MB "
            f"shipped; 1 = once per node, {len(big.trials)} = once per trial. {watch.store_error}".strip(),
        ),
        bench.row(
            "trial worker's own memory vs data shipped",
            (private - small_private) / (shipped - small_shipped),
            "private",
            f"median peak USS (memory no other process shares) per trial worker: {private * mb:.0f} MB with "
            f"{shipped * mb:.1f} MB of data vs {small_private * mb:.0f} MB with {small_shipped * mb:.1f} MB (quick "
            f"preset); peak RSS/USS: {workers} MB. 1 would be a copy per trial; near 0, the trials read the object "
            f"store's copy (numpy, zero-copy)",
        ),
    ]


def _watched_mnist_sweep(out: Path, preset: str) -> tuple[SweepResult, MemoryWatch, int]:
    from sweeps.runner import build_datasets
    from sweeps.sweep import Sweep
    from sweeps.trial import ship

    overrides = {"hidden_size": [64], "batch_size": [128], "lr": [1e-3, 5e-3]}  # 2 trials, at once on 2 cores
    sweep = Sweep(
        "mnist-rows", preset=preset, epochs=1, early_stop=False, data=str(mnist_root(out)[0]), overrides=overrides
    )
    watch = MemoryWatch()
    result = timed_sweep(sweep, out, f"memory-{preset}", watch)
    shipped = len(
        pickle.dumps(ship(build_datasets(sweep)), protocol=5)
    )  # what with_parameters puts in the object store
    return result, watch, shipped


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
        try:  # Ray's own number, as `ray memory --stats-only` prints it
            import ray
            from ray._private import internal_api

            self._state = self._state or internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
            return float(internal_api.get_memory_info_reply(self._state).store_stats.object_store_bytes_used)
        except Exception as error:  # a private API: say so rather than fail the measure
            self.store_error = f"object store not read ({type(error).__name__}: {error})"
            return float("nan")


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
