"""The one shape every data set takes: train/val/test tensors shaped (N, T, F), labels, metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class DataError(ValueError):
    """A data file is missing, unreadable or malformed; the message names the file and the fix."""


@dataclass
class Split:
    x: torch.Tensor  # (N, T, F) float32
    y: torch.Tensor | None = None  # (N,) int64 class labels, where the data has them

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    meta: dict = field(default_factory=dict)  # seed, and whatever the loader knows (normaliser, tickers, ...)

    def items(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))

    @property
    def num_classes(self) -> int:
        return int(self.meta.get("num_classes", 0))


def split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Sizes of train/val/test for `n` items; rounding leftovers go to test."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
    return n_train, n_val, n - n_train - n_val


def seeded_permutation(n: int, seed: int) -> torch.Tensor:
    """The same permutation of range(n) for the same seed on any machine (CPU generator)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def head(splits: Splits, train: int | None = None, val: int | None = None, test: int | None = None) -> Splits:
    """The first `train`/`val`/`test` sequences of each split (None keeps a split whole): small data for quick runs.
    Per-sequence metadata (a `meta[key][split]` as long as the split, e.g. the S&P normaliser) is cut with it.
    The cuts are copies: a view would keep alive, and pickle with it, the whole data it was cut from."""
    sizes = {"train": train, "val": val, "test": test}
    parts = {
        name: Split(part.x[: sizes[name]].clone(), None if part.y is None else part.y[: sizes[name]].clone())
        for name, part in splits.items()
    }
    meta = {key: _cut(value, splits, sizes) for key, value in splits.meta.items()}
    return Splits(parts["train"], parts["val"], parts["test"], meta=meta)


def _cut(value, splits: Splits, sizes: dict):
    if not isinstance(value, dict):
        return value
    cut = dict(value)
    for name, part in splits.items():
        if name in cut and hasattr(cut[name], "__len__") and len(cut[name]) == len(part):
            cut[name] = cut[name][: sizes[name]]
    return cut
