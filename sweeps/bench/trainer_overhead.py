"""Trainer overhead: one epoch of `lstm_ae.train.fit` over the bare PyTorch loop (same model, data, batches, Adam,
clipping and validation), for the synthetic, MNIST-rows (classifier) and S&P (predictor) shapes."""

from __future__ import annotations

import copy
from statistics import median

from sweeps.bench.harness import Bench, Row, interleaved
from sweeps.bench.yardstick import SHAPES, make_model, one_epoch, random_splits


def measure(bench: Bench) -> list[Row]:
    return [_shape(bench, name) for name in SHAPES]


def _shape(bench: Bench, name: str) -> Row:
    shape, (n_train, n_val), repeats = SHAPES[name], bench.budget.sizes[name], bench.budget.repeats
    splits = random_splits(shape, n_train, n_val)
    template = make_model(shape)
    jobs = {kind: _epoch(kind, template, splits, shape.batch_size) for kind in ("fit", "bare")}
    times = interleaved(jobs, repeats, warmup=1)  # the warm-up round pays first-call costs
    # The median of each round's ratio: a round's two epochs ran back to back, under the same load.
    ratios = [f / b for f, b in zip(times["fit"], times["bare"])]
    detail = (
        f"fit {median(times['fit']) * 1e3:.0f} ms vs bare loop {median(times['bare']) * 1e3:.0f} ms per epoch "
        f"({n_train}/{n_val} seqs, batch {shape.batch_size}); "
        f"median of {repeats} rounds' ratios, which span {min(ratios):.2f}..{max(ratios):.2f}"
    )
    return bench.row(name, median(ratios), "epoch", detail)


def _epoch(kind: str, template, splits, batch_size: int):
    """One epoch of `kind` on a fresh copy of the model: every epoch timed starts from the same weights."""
    return lambda: one_epoch(kind, copy.deepcopy(template), splits, batch_size)
