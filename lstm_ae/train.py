"""Training: `fit` yields one flat dict of metrics per epoch; `evaluate` gives the same metrics on any split.

    training = fit(model, splits, epochs=10, batch_size=64, lr=1e-3)
    for metrics in training:               # {"epoch": 1, "train_loss": ..., "val_loss": ..., "val_mse": ...}
        torch.save(training.state(), "state.pt")
    fit(model, splits, epochs=20, batch_size=64, lr=1e-3, start=torch.load("state.pt"))  # goes on at epoch 11

The loss is recon_weight x MSE(reconstruction) + (1 - recon_weight) x the heads' loss (cross-entropy for
the classifier, MSE of x[t+1] for the predictor), so the default 0.5 is the study's average of the two.
It knows nothing of where it runs: sweeps, notebooks and tests all drive it the same way.

The recipe options: `schedule="cosine"` anneals the learning rate to 0 over the whole budget, batch by batch;
`"plateau"` halves it whenever the validation loss has gone more than PLATEAU_PATIENCE epochs without improving
(by 0.01%): a high rate's fast start, then calmer steps once its loss spikes stall progress;
`precision="bf16"` runs forward and loss under bfloat16 autocast (CPUs with native bf16, recent GPUs: which
device runs which is lstm_ae.precision's to say, and Fit refuses one it cannot), `"fp16"` under float16 autocast
with a gradient scaler (CUDA only). A state carries the schedule and the scaler.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from lstm_ae import fused
from lstm_ae.allocator import keep_freed_memory
from lstm_ae.data import Split, Splits
from lstm_ae.model import LSTMAutoencoder, Output
from lstm_ae.precision import PRECISIONS, autocast, check_precision

SCHEDULES = ("constant", "cosine", "plateau")
PLATEAU_PATIENCE = 10  # "plateau" halves the rate at the 11th epoch in a row without a better validation loss
HIGHER_IS_BETTER = ("accuracy",)  # of the metrics below, these are maximised; every other one is an error


def direction(metric: str) -> str:
    """ "max" for a metric to maximise (`val_accuracy`), "min" for every loss and error (`val_mse`, `train_ce`)."""
    return "max" if any(word in metric for word in HIGHER_IS_BETTER) else "min"


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int  # the total to reach, counting the epochs of a `start` state
    batch_size: int
    lr: float
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    recon_weight: float = 0.5  # share of the reconstruction loss when a head adds its own
    seed: int = 0  # batch order
    schedule: str = "constant"  # "constant", "cosine" (to 0 at the last batch of `epochs`) or "plateau"
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + gradient scaler, CUDA only)

    def __post_init__(self):
        for name in ("lr", "grad_clip", "recon_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
        problems = [
            (
                not _whole(self.epochs) or self.epochs < 0,
                f"epochs must be a whole number of 0 or more, got {self.epochs!r}",
            ),
            (
                not _whole(self.batch_size) or self.batch_size < 1,
                f"batch_size must be a whole number of at least 1, got {self.batch_size!r}",
            ),
            (not 0 < self.lr < math.inf, f"lr must be positive and finite, got {self.lr}"),
            (
                not 0 <= self.grad_clip < math.inf,
                f"grad_clip must be 0 (off) or positive and finite, got {self.grad_clip}",
            ),
            (not 0 <= self.recon_weight <= 1, f"recon_weight must be within [0, 1], got {self.recon_weight}"),
            (self.schedule not in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (
                self.precision not in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
        ]
        for failed, message in problems:
            if failed:
                raise ValueError(message)


def losses(out: Output, x: torch.Tensor, y: torch.Tensor | None, recon_weight: float) -> dict:
    """The batch's losses as tensors: `loss` (to minimise), `mse`, and `ce`/`accuracy`/`pred_mse` per head."""
    parts = {"mse": F.mse_loss(out.reconstruction, x)}
    if out.logits is not None:
        parts["ce"] = F.cross_entropy(out.logits, y)
        parts["accuracy"] = (out.logits.argmax(dim=1) == y).float().mean()
    if out.prediction is not None:
        parts["pred_mse"] = F.mse_loss(out.prediction[:, :-1], x[:, 1:])
    heads = [parts[k] for k in ("ce", "pred_mse") if k in parts]
    if heads:
        parts["loss"] = recon_weight * parts["mse"] + (1 - recon_weight) * torch.stack(heads).mean()
    else:
        parts["loss"] = parts["mse"]
    return parts


@torch.no_grad()
def evaluate(
    model: LSTMAutoencoder,
    split: Split,
    recon_weight: float = Hyperparameters.recon_weight,
    normalizer=None,
    batch_size: int = 1024,
    precision: str = "fp32",
) -> dict:
    """Mean `loss`, `mse` and head metrics over a whole split (floats, unprefixed), under `precision`'s autocast.

    With the split's `normalizer` (S&P 500: `splits.meta["normalizer"]["val"]`), also the mean absolute errors
    in the data's original units, `mae_original` and `pred_mae_original`: dollars, comparable across normalisers.
    """
    model.eval()
    device = next(model.parameters()).device
    check_precision(precision, device)
    totals = _Totals()
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        rows = slice(start, start + len(x))
        y = None if split.y is None else split.y[rows].to(device)
        with autocast(precision, device):
            out = model(x)
            parts = losses(out, x, y, recon_weight)
        if normalizer is not None:
            parts.update(_errors_in_original_units(out, x, normalizer, rows))
        totals.add(parts, len(x))
    return totals.means()


def per_step_mean(train: Split) -> torch.Tensor:
    """(T, F): the training split's mean at each step (for MNIST, the mean image): the best reconstruction that
    knows nothing of the sequence at hand, the baseline a reconstruction must beat to have learned anything."""
    return train.x.float().mean(dim=0)


def baseline_mse(train: Split, split: Split) -> float:
    """The MSE of drawing `train`'s per-step mean for every sequence of `split`."""
    return float(F.mse_loss(per_step_mean(train).expand_as(split.x), split.x.float()))


def _errors_in_original_units(out: Output, x: torch.Tensor, normalizer, rows: slice) -> dict:
    def original(values: torch.Tensor) -> torch.Tensor:
        return normalizer.invert(values.float().cpu(), rows)  # the normaliser's parameters live on the CPU

    truth = original(x)
    errors = {"mae_original": (original(out.reconstruction) - truth).abs().mean()}
    if out.prediction is not None:
        errors["pred_mae_original"] = (original(out.prediction)[:, :-1] - truth[:, 1:]).abs().mean()
    return errors


class Fit:
    """An iterator over epochs: each step trains one epoch, evaluates on validation and returns the metrics."""

    def __init__(self, model: LSTMAutoencoder, splits: Splits, hp: Hyperparameters, device=None, start=None):
        self.hp = hp
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device)
        # Data lives on the device whole; batches are index slices (a per-sample Dataset costs more than the model).
        self.train = _to(splits.train, self.device)
        self.val = _to(splits.val, self.device)
        self.val_normalizer = splits.meta.get("normalizer", {}).get("val")  # S&P 500: errors in dollars too
        check_precision(hp.precision, self.device)
        # Fused: one kernel over all parameters instead of a dozen small ops per tensor (with foreach clipping, a
        # visible share of a small epoch on a CPU: docs/performance.md).
        self.optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr, fused=True)
        self.schedule = None
        if hp.schedule == "cosine":
            batches = hp.epochs * math.ceil(len(self.train) / hp.batch_size)
            self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, batches))
        elif hp.schedule == "plateau":
            self.schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=0.5, patience=PLATEAU_PATIENCE
            )
        # fp16's small range needs the loss scaled up before backward; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=hp.precision == "fp16")
        self.generator = torch.Generator().manual_seed(hp.seed)
        self.epoch = 0
        if start is not None:
            self.load_state(start)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.epoch >= self.hp.epochs:
            raise StopIteration
        train_metrics = self._train_epoch()
        self.epoch += 1
        val_metrics = evaluate(
            self.model, self.val, self.hp.recon_weight, self.val_normalizer, precision=self.hp.precision
        )
        if self.hp.schedule == "plateau":
            self.schedule.step(val_metrics["loss"])
        return {
            "epoch": self.epoch,
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"val_{k}": v for k, v in val_metrics.items()},
        }

    def state(self) -> dict:
        """What a checkpoint needs to continue exactly: tensors and numbers only (loadable with weights_only).
        The tensors are the live ones: save them before the next epoch."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "rng": self.generator.get_state(),
            "hyperparameters": asdict(self.hp),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule and state.get("schedule"):
            self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["rng"])

    def _train_epoch(self) -> dict:
        self.model.train()
        totals = _Totals()
        order = torch.randperm(len(self.train), generator=self.generator).to(self.device)
        for batch in order.split(self.hp.batch_size):
            y = None if self.train.y is None else self.train.y[batch]
            x = self.train.x[batch]
            with autocast(self.hp.precision, self.device):
                parts = losses(self.model(x), x, y, self.hp.recon_weight)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(parts["loss"]).backward()
            totals.add(parts, len(batch))
            # The step's graph goes now, not when the next step's forward replaces it: the fused layers hand their
            # buffers back with it, so one set of them serves every step.
            del parts
            if self.hp.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.hp.grad_clip, foreach=True)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.hp.schedule == "cosine":
                self.schedule.step()
        return totals.means()


def fit(model: LSTMAutoencoder, splits: Splits, *, device=None, start: dict | None = None, **hyperparameters) -> Fit:
    """Train `model` on `splits.train` up to `epochs` (from `start`'s epoch when given), one epoch per step;
    `hyperparameters`: the fields of Hyperparameters, by name. The process keeps the memory it frees for the next
    step (lstm_ae.allocator), and drops the fused layers' buffers of earlier fits."""
    hp = Hyperparameters(**hyperparameters)
    keep_freed_memory()
    fused.release_buffers()
    return Fit(model, splits, hp, device=device, start=start)


class _Totals:
    """Sums of batch means weighted by batch size, kept as tensors so the device is not synced every batch."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, parts: dict, n: int) -> None:
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float() * n
        self.count += n

    def means(self) -> dict:
        return {key: float(total) / self.count for key, total in self.sums.items()}


def _to(split: Split, device: torch.device) -> Split:
    return Split(split.x.to(device), None if split.y is None else split.y.to(device))
