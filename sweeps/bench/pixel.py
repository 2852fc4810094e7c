"""Pixel: seconds per training step of pixel-by-pixel MNIST (784 steps of 1 pixel) as `mnist-pixels-classify` builds
its model (the recipe: layer-normalised encoder cell, chrono gate biases, orthogonal recurrent weights), at the
showcase's shape (hidden 64, batch 64), on random images and labels.

Rows: bf16 over fp32 (fp16 too on a GPU) for the recipe model and for the plain nn.LSTM encoder; the recipe cell over
nn.LSTM; on the CPU, 2 threads over 1; and one trial's epoch on 50,000 images projected from the median step. Every
kind is stepped once per round, in turns, so that the ratios compare steps taken under the same load."""

from __future__ import annotations

import math
import time
from statistics import median

import torch

from lstm_ae.model import LSTMAutoencoder
from lstm_ae.precision import autocast, runnable
from lstm_ae.train import losses
from sweeps.bench.harness import Bench, Row, interleaved
from sweeps.experiments import PIXEL_RECIPE

HIDDEN, BATCH, STEPS, TRAIN_IMAGES = 64, 64, 784, 50_000
EXPERIMENT_BATCH = 128  # mnist-pixels-classify's own batch (the study's); the showcase ran at 64
CELLS = {"recipe": PIXEL_RECIPE["encoder_cell"], "plain": "lstm"}  # "layernorm", nn.LSTM
NAMES = {"recipe": "recipe model (layernorm cell)", "plain": "plain nn.LSTM encoder"}


class Stepper:
    """One model, its Adam and a batch of random data; each call is one training step as the trainer takes it
    (autocast forward and loss, backward, clip at 1, Adam), in seconds. The cosine schedule's per-step update is
    left out: a few float operations next to 784 recurrent steps."""

    def __init__(
        self,
        cell: str,
        precision: str,
        device: str,
        threads: int = 1,
        length: int = STEPS,
        seed: int = 0,
        batch: int = BATCH,
    ):
        self.device, self.precision, self.threads = torch.device(device), precision, threads
        torch.manual_seed(seed)
        recipe = {"gate_bias": PIXEL_RECIPE["gate_bias"], "recurrent_init": PIXEL_RECIPE["recurrent_init"]}
        model = LSTMAutoencoder(1, HIDDEN, num_classes=10, encoder_cell=cell, steps=STEPS, **recipe)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        # As the trainer does: only fp16 needs its gradients scaled (bf16 has fp32's range).
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.x = torch.rand(batch, length, 1, device=self.device)  # the model's init stays that of 784 steps
        self.y = torch.randint(0, 10, (batch,), device=self.device)

    def __call__(self) -> float:
        torch.set_num_threads(self.threads)
        try:
            start = time.perf_counter()
            self.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # kernels run asynchronously: wait for the step's last one
            return time.perf_counter() - start
        finally:
            torch.set_num_threads(1)  # the bench's own setting, as a trial of 1 CPU runs

    def step(self) -> None:
        with autocast(self.precision, self.device):
            loss = losses(self.model(self.x), self.x, self.y, 0.5)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()


def precisions(device: str) -> list[str]:
    """fp32 and bf16, and fp16 on a GPU; those the device cannot run (bf16 on CPUs without native bf16 and on older
    GPUs) left out."""
    return runnable(device, ("fp32", "bf16", "fp16") if device == "cuda" else ("fp32", "bf16"))


def projected_precision(device: str) -> str:
    """The showcase trains in bf16; fp32 where the device has no bf16."""
    return "bf16" if "bf16" in precisions(device) else "fp32"


def run(bench: Bench) -> list[Row]:
    device, kinds, low = bench.device, precisions(bench.device), projected_precision(bench.device)
    jobs = {f"{cell} {p}": Stepper(CELLS[cell], p, device) for cell in CELLS for p in kinds}
    jobs[f"recipe {low} batch {EXPERIMENT_BATCH}"] = Stepper(CELLS["recipe"], low, device, batch=EXPERIMENT_BATCH)
    # The warm-up round pays first-call costs (oneDNN's kernels, autocast's casts, Adam's state).
    times = interleaved(jobs, bench.budget.pixel_repeats, warmup=1)
    rows = [
        _ratio(bench, times, f"{cell} {p}", f"{cell} fp32", f"{p} vs fp32 step time, {NAMES[cell]}")
        for cell in CELLS
        for p in kinds[1:]
    ]
    rows.append(_ratio(bench, times, f"recipe {low}", f"plain {low}", f"recipe cell vs nn.LSTM step time, {low}"))
    if device == "cpu":
        rows.append(_threads(bench, low))
    rows.append(_epoch(bench, times, low))
    rows.append(_epoch(bench, times, low, EXPERIMENT_BATCH))
    return rows


def _threads(bench: Bench, precision: str) -> Row:
    """One trial at `precision` on 1 torch thread over 2. On a busy machine a step on 2 threads can take 50x longer (each of
    the thousands of small ops waits for both threads): the quick run times the first pixels of the sequence only."""
    length, repeats = bench.budget.pixel_thread_length, bench.budget.pixel_thread_repeats
    jobs = {
        f"recipe {precision} {n} thread{'s' * (n > 1)}": Stepper(CELLS["recipe"], precision, "cpu", n, length)
        for n in (1, 2)
    }
    times = interleaved(jobs, repeats, warmup=1)
    quantity = f"2 threads vs 1 step speed-up, recipe model in {precision}"
    return _ratio(bench, times, *jobs, quantity, length)


def _ratio(bench: Bench, times: dict, top: str, bottom: str, quantity: str, length: int = STEPS) -> Row:
    """The median of each round's ratio of step times: a round's steps ran one after the other, under the same load."""
    ratios = [a / b for a, b in zip(times[top], times[bottom])]
    pixels = f"{STEPS} steps" if length == STEPS else f"the first {length} of {STEPS} steps"
    detail = (
        f"{median(times[top]) * 1e3:.0f} ms vs {median(times[bottom]) * 1e3:.0f} ms per step ({top} vs {bottom}; "
        f"hidden {HIDDEN}, batch {BATCH}, {pixels}, {_where(bench)}); median of {len(ratios)} rounds' ratios, "
        f"which span {min(ratios):.2f}..{max(ratios):.2f}"
    )
    return bench.row(quantity, median(ratios), detail=detail)


def _epoch(bench: Bench, times: dict, precision: str, batch: int = BATCH) -> Row:
    """One trial's epoch, projected: the steps of an epoch times the median step. Training steps only: the epoch's
    validation pass (10,000 images, forward only) and the batches' indexing come on top."""
    chosen = f"recipe {precision}" + (f" batch {batch}" if batch != BATCH else "")
    steps, step_s = math.ceil(TRAIN_IMAGES / batch), median(times[chosen])
    others = ", ".join(
        f"{name} {math.ceil(TRAIN_IMAGES / BATCH) * median(t):.0f} s"
        for name, t in times.items()
        if name != chosen and "batch" not in name
    )
    detail = (
        f"{steps} steps of batch {batch} x {step_s * 1e3:.0f} ms (median of {len(times[chosen])}), {chosen}, "
        f"{_where(bench)}; training steps only, no validation pass"
        + (f"; at batch {BATCH}: {others}" if batch == BATCH else "")
    )
    target = "cpu epoch" if bench.device == "cpu" else "cuda epoch"
    quantity = f"projected epoch of one trial on {TRAIN_IMAGES:,} images (s)" + (
        f", batch {batch} (the experiment's)" if batch != BATCH else ""
    )
    return bench.row(quantity, steps * step_s, target, detail)


def _where(bench: Bench) -> str:
    return "CPU, 1 torch thread unless named" if bench.device == "cpu" else torch.cuda.get_device_name(0)
