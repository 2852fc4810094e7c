"""The yardstick: one epoch of plain PyTorch, what `lstm_ae.train.fit` does with nothing around it, and the shapes
and random data both are timed on."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lstm_ae.data import Split, Splits
from lstm_ae.model import LSTMAutoencoder
from lstm_ae.train import Hyperparameters, fit

LR, CLIP = 1e-3, 1.0


@dataclass(frozen=True)
class Shape:
    steps: int
    features: int
    model: dict  # LSTMAutoencoder arguments besides input_size
    batch_size: int
    labels: bool = False


SHAPES = {
    "synthetic": Shape(50, 1, {"hidden_size": 40}, 32),
    "mnist-rows": Shape(28, 28, {"hidden_size": 64, "num_classes": 10}, 32, labels=True),
    "snp500-predict": Shape(53, 1, {"hidden_size": 60, "predict_next": True}, 32),
}


def bare_epoch(
    model,
    optimizer,
    train: Split,
    val: Split,
    batch_size: int,
    grad_clip: float = 0.0,
    recon_weight: float = Hyperparameters.recon_weight,
    generator: torch.Generator | None = None,
) -> dict:
    """One epoch of plain PyTorch, then the validation pass: what `fit` does, with nothing around it."""
    model.train()
    total = torch.zeros(())
    for batch in torch.randperm(len(train.x), generator=generator).split(batch_size):
        x, y = train.x[batch], None if train.y is None else train.y[batch]
        loss = _loss(model(x), x, y, recon_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
        optimizer.step()
        total += loss.detach() * len(batch)
    model.eval()
    val_total = torch.zeros(())
    with torch.no_grad():
        for start in range(0, len(val.x), 1024):  # fit's validation batches
            x = val.x[start : start + 1024]
            y = None if val.y is None else val.y[start : start + 1024]
            val_total += _loss(model(x), x, y, recon_weight) * len(x)
    return {"train_loss": float(total) / len(train.x), "val_loss": float(val_total) / len(val.x)}


def _loss(out, x, y, recon_weight: float) -> torch.Tensor:
    """Written out here rather than taken from lstm_ae.train, so that the yardstick shares none of the trainer's code."""
    mse = F.mse_loss(out.reconstruction, x)
    heads = []
    if out.logits is not None:
        heads.append(F.cross_entropy(out.logits, y))
    if out.prediction is not None:
        heads.append(F.mse_loss(out.prediction[:, :-1], x[:, 1:]))
    return recon_weight * mse + (1 - recon_weight) * torch.stack(heads).mean() if heads else mse


def random_splits(shape: Shape, n_train: int, n_val: int, seed: int = 0) -> Splits:
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        x = torch.rand(n, shape.steps, shape.features, generator=generator)
        return Split(x, torch.randint(0, 10, (n,), generator=generator) if shape.labels else None)

    return Splits(split(n_train), split(n_val), split(2))


def make_model(shape: Shape) -> LSTMAutoencoder:
    return LSTMAutoencoder.from_config({"input_size": shape.features, **shape.model}, seed=0)


def one_epoch(kind: str, model: LSTMAutoencoder, splits: Splits, batch_size: int) -> float:
    """Seconds for one epoch of `fit` (kind "fit") or of the bare loop (kind "bare"), validation included."""
    start = time.perf_counter()
    if kind == "fit":
        next(fit(model, splits, epochs=1, batch_size=batch_size, lr=LR, grad_clip=CLIP, seed=0, device="cpu"))
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
        bare_epoch(model, optimizer, splits.train, splits.val, batch_size, CLIP, 0.5, torch.Generator().manual_seed(0))
    return time.perf_counter() - start
