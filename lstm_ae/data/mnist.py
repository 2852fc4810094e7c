"""MNIST through torchvision, read row by row (28 steps of 28 pixels) or pixel by pixel (784 steps of 1).

    splits = mnist.load("../shared/data", view="rows")   # finds ../shared/data/MNIST/raw/
    splits.train.x.shape, splits.train.y.shape            # (50000, 28, 28), (50000,)

The 60,000 training images are split into train and validation (seeded); the official 10,000 are the test split.
"""

from __future__ import annotations

import struct
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
) -> Splits:
    """Pixels are float32 in [0, 1]."""
    if view not in VIEWS:
        raise ValueError(f"unknown MNIST view {view!r}: use one of {sorted(VIEWS)}")
    train_images, train_labels = _read(root, train=True, download=download)
    test_images, test_labels = _read(root, train=False, download=download)
    if not 0 < val_size < len(train_images):
        raise ValueError(f"val_size must be between 1 and {len(train_images) - 1}, got {val_size}")

    order = seeded_permutation(len(train_images), seed)
    val_idx, train_idx = order[:val_size], order[val_size:]

    def pixels(images: torch.Tensor) -> torch.Tensor:  # uint8 0..255 -> float32 0..1, in the view's shape
        return images.reshape(-1, *VIEWS[view]).float().div_(255)

    return Splits(
        Split(pixels(train_images[train_idx]), train_labels[train_idx]),
        Split(pixels(train_images[val_idx]), train_labels[val_idx]),
        Split(pixels(test_images), test_labels),
        meta={"seed": seed, "view": view, "num_classes": 10},
    )


def write(root: str | Path, images: torch.Tensor, labels: torch.Tensor, train: bool) -> Path:
    """uint8 images (N, 28, 28) and their labels as MNIST's IDX files under root/MNIST/raw/, where `load` reads
    them: small data sets in MNIST's own format, for tests and benchmarks."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    images_file, labels_file = RAW_FILES[:2] if train else RAW_FILES[2:]
    n = len(images)
    (raw / images_file).write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.to(torch.uint8).numpy().tobytes())
    (raw / labels_file).write_bytes(struct.pack(">II", 0x801, n) + labels.to(torch.uint8).numpy().tobytes())
    return Path(root)


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
