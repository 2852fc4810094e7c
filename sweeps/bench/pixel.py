"""Pixel: seconds per training step of pixel-by-pixel MNIST (784 steps of 1 pixel) as `mnist-pixels-classify` builds
its model (the recipe: layer-normalised encoder cell, the decoder told each pixel's row and column, chrono gate
biases, orthogonal recurrent weights), on random images and labels, fp32, 1 thread per trial.

Rows: on the CPU, the training step as it is (the fused layer, lstm_ae.fused; freed memory kept, lstm_ae.allocator)
over the step before both, at the showcase's shape (hidden 64, batch 64) and at the study's (hidden 100, batch 128),
and over the layers step by step with freed memory kept (the fused layer's own share); the recipe model over one with
an nn.LSTM encoder; bf16 over fp32 (fp16 too on a GPU); 2 threads over 1; and one trial's epoch on 50,000 images
projected from the median step. Every kind is stepped once per round, in turns, so that the ratios compare steps taken under the same load."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from statistics import median

import torch

from lstm_ae import fused
from lstm_ae.allocator import keep_freed_memory
from lstm_ae.model import LSTMAutoencoder, ModelConfig
from lstm_ae.precision import autocast, runnable
from lstm_ae.train import losses
from sweeps.bench.harness import Bench, Row, interleaved
from sweeps.experiments import PIXEL_RECIPE

HIDDEN, BATCH, STEPS, TRAIN_IMAGES = 64, 64, 784, 50_000
STUDY = (100, 128)  # the study's smallest pixel model (hidden 100) at mnist-pixels-classify's batch
ENCODERS = {"recipe": PIXEL_RECIPE["encoder_cell"], "plain": "lstm"}  # "layernorm", nn.LSTM
NAMES = {"recipe": "recipe model (layernorm encoder)", "plain": "nn.LSTM encoder"}


class Stepper:
    """One model, its Adam and a batch of random data; each call is one training step as the trainer takes it
    (autocast forward and loss, backward, clip at 1, Adam), in seconds. The cosine schedule's per-step update is
    left out: a few float operations next to 784 recurrent steps. `fused_layer` False: the layers run step by step;
    `memory_kept` False: freed memory goes back to the system (lstm_ae.allocator), as it did before `fit` kept it."""

    def __init__(
        self,
        encoder: str,
        precision: str,
        device: str,
        threads: int = 1,
        length: int = STEPS,
        seed: int = 0,
        batch: int = BATCH,
        hidden: int = HIDDEN,
        fused_layer: bool = True,
        memory_kept: bool = True,
    ):
        self.device, self.precision, self.threads, self.fused = torch.device(device), precision, threads, fused_layer
        self.memory_kept = memory_kept
        torch.manual_seed(seed)
        model_fields = {field.name for field in dataclasses.fields(ModelConfig)}  # (the recipe's schedule is not)
        recipe = {k: v for k, v in PIXEL_RECIPE.items() if k in model_fields}
        recipe.update(encoder_cell=encoder, steps=length)
        self.model = LSTMAutoencoder(1, hidden, num_classes=10, **recipe).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        # As the trainer does: only fp16 needs its gradients scaled (bf16 has fp32's range).
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.x = torch.rand(batch, length, 1, device=self.device)
        self.y = torch.randint(0, 10, (batch,), device=self.device)

    def __call__(self) -> float:
        torch.set_num_threads(self.threads)
        keep_freed_memory(self.memory_kept)
        try:
            start = time.perf_counter()
            self.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # kernels run asynchronously: wait for the step's last one
            return time.perf_counter() - start
        finally:
            torch.set_num_threads(1)  # the bench's own setting, as a trial of 1 CPU runs
            keep_freed_memory()

    def step(self) -> None:
        with contextlib.nullcontext() if self.fused else fused.step_by_step(), autocast(self.precision, self.device):
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


def measure(bench: Bench) -> list[Row]:
    device, kinds = bench.device, precisions(bench.device)
    jobs = {f"{encoder} {p}": Stepper(ENCODERS[encoder], p, device) for encoder in ENCODERS for p in kinds}
    if device == "cpu":  # (on a GPU the layers run step by step: nothing to compare)
        recipe, (hidden, batch) = ENCODERS["recipe"], STUDY
        jobs["recipe fp32 step by step"] = Stepper(recipe, "fp32", device, fused_layer=False)
        jobs["recipe fp32 before"] = Stepper(recipe, "fp32", device, fused_layer=False, memory_kept=False)
        jobs["study fp32"] = Stepper(recipe, "fp32", device, batch=batch, hidden=hidden)
        jobs["study fp32 before"] = Stepper(
            recipe, "fp32", device, batch=batch, hidden=hidden, fused_layer=False, memory_kept=False
        )
    # The warm-up round pays first-call costs (oneDNN's kernels, autocast's casts, Adam's state, the layers' buffers).
    times = interleaved(jobs, bench.budget.pixel_repeats, warmup=1)
    rows = []
    if device == "cpu":
        rows.append(_ratio(bench, times, "recipe fp32 before", "recipe fp32", "before"))
        rows.append(_ratio(bench, times, "study fp32 before", "study fp32", "before, study", *STUDY))
        rows.append(_ratio(bench, times, "recipe fp32 step by step", "recipe fp32", "fused layer"))
    rows.append(_ratio(bench, times, "recipe fp32", "plain fp32", "recipe vs nn.LSTM"))
    rows += [_ratio(bench, times, f"recipe {p}", "recipe fp32", f"{p} vs fp32") for p in kinds[1:]]
    if device == "cpu":
        rows.append(_threads(bench))
    rows.append(_epoch(bench, times, "recipe fp32", BATCH))
    if device == "cpu":
        rows.append(_epoch(bench, times, "study fp32", STUDY[1], STUDY[0]))
    return rows


def _threads(bench: Bench) -> Row:
    """One trial on 1 torch thread over 2. On a busy machine a step on 2 threads can take 50x longer (each of the
    small ops waits for both threads): the quick run times the first pixels of the sequence only."""
    length, repeats = bench.budget.pixel_thread_length, bench.budget.pixel_thread_repeats
    jobs = {
        f"recipe fp32 {n} thread{'s' * (n > 1)}": Stepper(ENCODERS["recipe"], "fp32", "cpu", n, length) for n in (1, 2)
    }
    times = interleaved(jobs, repeats, warmup=1)
    return _ratio(bench, times, *jobs, "threads", length=length)


RATIOS = {  # key: (quantity, the registry's target or None)
    # Before: the layers step by step and freed memory returned to the system, as the trainer ran until 0.5.
    "before": ("training step speed-up over before the fused layer, recipe model", "fused"),
    "before, study": ("training step speed-up over before the fused layer, the study's shape", None),
    "fused layer": ("fused layer vs step by step, both keeping freed memory, recipe model", None),
    "recipe vs nn.LSTM": ("recipe model vs nn.LSTM encoder, step time", None),
    "bf16 vs fp32": ("bf16 vs fp32 step time, recipe model", None),
    "fp16 vs fp32": ("fp16 vs fp32 step time, recipe model", None),
    "threads": ("2 threads vs 1 step speed-up, recipe model", None),
}


def _ratio(bench: Bench, times: dict, top: str, bottom: str, key: str, hidden=HIDDEN, batch=BATCH, length=STEPS) -> Row:
    """The median of each round's ratio of step times: a round's steps ran one after the other, under the same load."""
    ratios = [a / b for a, b in zip(times[top], times[bottom])]
    pixels = f"{STEPS} steps" if length == STEPS else f"the first {length} of {STEPS} steps"
    detail = (
        f"{median(times[top]) * 1e3:.0f} ms vs {median(times[bottom]) * 1e3:.0f} ms per step ({top} vs {bottom}; "
        f"hidden {hidden}, batch {batch}, {pixels}, {_where(bench)}); median of {len(ratios)} rounds' ratios, "
        f"which span {min(ratios):.2f}..{max(ratios):.2f}"
    )
    quantity, target = RATIOS[key]
    return bench.row(quantity, median(ratios), target, detail)


def _epoch(bench: Bench, times: dict, job: str, batch: int, hidden: int = HIDDEN) -> Row:
    """One trial's epoch, projected: the steps of an epoch times the median step. Training steps only: the epoch's
    validation pass (10,000 images, forward only) and the batches' indexing come on top."""
    steps, step_s = math.ceil(TRAIN_IMAGES / batch), median(times[job])
    detail = (
        f"{steps} steps of batch {batch} x {step_s * 1e3:.0f} ms (median of {len(times[job])}), {job}, hidden "
        f"{hidden}, {_where(bench)}; training steps only, no validation pass"
    )
    showcase = (hidden, batch) == (HIDDEN, BATCH)
    target = None if not showcase else "cpu epoch" if bench.device == "cpu" else "cuda epoch"
    quantity = f"projected epoch of one trial on {TRAIN_IMAGES:,} images (s), hidden {hidden}, batch {batch}"
    return bench.row(quantity, steps * step_s, target, detail)


def _where(bench: Bench) -> str:
    return "CPU, 1 torch thread unless named" if bench.device == "cpu" else torch.cuda.get_device_name(0)
