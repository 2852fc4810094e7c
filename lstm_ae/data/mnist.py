"""MNIST through torchvision, read row by row (28 steps of 28 pixels) or pixel by pixel (784 steps of 1).

    splits = mnist.load("../shared/data", view="rows")   # finds ../shared/data/MNIST/raw/
    splits.train.x.shape, splits.train.y.shape            # (50000, 28, 28), (50000,)

The 60,000 training images are split into train and validation (seeded); the official 10,000 are the test split.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from lstm_ae.data.splits import DataError, Split, Splits, seeded_permutation

VIEWS = {"rows": (28, 28), "pixels": (784, 1)}  # (steps, features per step)
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def load(
    root: str | Path,
    view: str = "rows",
    val_size: int = 10_000,
    seed: int = 0,
    download: bool = True,
    raw: bool = False,
) -> Splits:
    """Pixels are floats in [0, 1]; with `raw=True` they stay uint8 (4x smaller to ship) until `scale`."""
    if view not in VIEWS:
        raise ValueError(f"unknown MNIST view {view!r}: use one of {sorted(VIEWS)}")
    train_images, train_labels = _read(root, train=True, download=download)
    test_images, test_labels = _read(root, train=False, download=download)
    if not 0 < val_size < len(train_images):
        raise ValueError(f"val_size must be between 1 and {len(train_images) - 1}, got {val_size}")

    order = seeded_permutation(len(train_images), seed)
    val_idx, train_idx = order[:val_size], order[val_size:]
    shape = VIEWS[view]
    splits = Splits(
        Split(train_images[train_idx].reshape(-1, *shape), train_labels[train_idx]),
        Split(train_images[val_idx].reshape(-1, *shape), train_labels[val_idx]),
        Split(test_images.reshape(-1, *shape), test_labels),
        meta={"seed": seed, "view": view, "num_classes": 10},
    )
    return splits if raw else scale(splits)


def scale(splits: Splits) -> Splits:
    """uint8 pixels 0..255 -> float32 in [0, 1]; splits already in floats are returned as they are."""
    if splits.train.x.dtype != torch.uint8:
        return splits
    as_float = {name: replace(part, x=part.x.float().div_(255)) for name, part in splits.items()}
    return replace(splits, **as_float)


def _read(root: str | Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST  # imported here: torchvision is slow to import and only MNIST needs it

    try:
        dataset = MNIST(str(root), train=train, download=download)
    except (RuntimeError, OSError) as error:  # torchvision raises these for missing files and failed downloads
        folder = Path(root).resolve() / "MNIST" / "raw"
        raise DataError(
            f"MNIST files not found in {folder} and could not be downloaded ({error}); "
            f"put {', '.join(RAW_FILES)} (or their .gz) there"
        ) from error
    return dataset.data, dataset.targets
