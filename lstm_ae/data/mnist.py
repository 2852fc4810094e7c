"""MNIST through torchvision, read row by row (28 steps of 28 pixels) or pixel by pixel (784 steps of 1).

    splits = mnist.load("../shared/data", view="rows")   # finds ../shared/data/MNIST/raw/
    splits.train.x.shape, splits.train.y.shape            # (50000, 28, 28), (50000,)

The 60,000 training images are split into train and validation (seeded); the official 10,000 are the test split.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
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
    if val_size < 1:
        raise ValueError(f"val_size must be at least 1, got {val_size}")
    if val_size >= len(train_images):
        folder = Path(root).resolve() / "MNIST" / "raw"
        raise DataError(
            f"the MNIST training file in {folder} has {len(train_images)} images: too few to hold out {val_size} "
            "for validation and train on the rest; put MNIST's full files there (60,000 training images)"
        )

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
    folder = Path(root).resolve() / "MNIST" / "raw"
    images_name, labels_name = RAW_FILES[:2] if train else RAW_FILES[2:]
    if download and not all(_find(folder, name) for name in RAW_FILES):
        _download(root, folder)
    images = _idx(folder, images_name, IMAGES_MAGIC, dims=3)
    labels = _idx(folder, labels_name, LABELS_MAGIC, dims=1)
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{_find(folder, images_name)}: images of {images.shape[1]} x {images.shape[2]} pixels, MNIST's are 28 x 28"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{_find(folder, labels_name)} has {len(labels)} labels for the {len(images)} images of {images_name}: "
            "the files do not belong together; put MNIST's own files there"
        )
    if len(labels) and labels.max() > 9:
        raise DataError(
            f"{_find(folder, labels_name)}: label {int(labels.max())} is not a digit 0-9: the file is damaged"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801  # IDX: unsigned bytes, 3 dimensions (images) or 1 (labels)


def _find(folder: Path, name: str) -> Path | None:
    """The file, plain or gzipped."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx(folder: Path, name: str, magic: int, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes, checked against its own header (magic number, sizes, length)."""
    path = _find(folder, name)
    if path is None:
        raise DataError(f"MNIST file {name} not found in {folder}: put {', '.join(RAW_FILES)} (or their .gz) there")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} cannot be read ({error}): the file is damaged; put MNIST's own file there") from None
    header = 4 + 4 * dims
    if len(data) < header or struct.unpack(">I", data[:4])[0] != magic:
        raise DataError(
            f"{path} is not an MNIST {'image' if dims == 3 else 'label'} file (its magic number is not {magic:#06x}): "
            "put MNIST's own file there"
        )
    shape = struct.unpack(f">{dims}I", data[4:header])
    if len(data) != header + math.prod(shape):
        raise DataError(
            f"{path} holds {len(data) - header} bytes after its header where {' x '.join(map(str, shape))} = "
            f"{math.prod(shape)} are declared: the file is truncated or damaged"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _download(root: str | Path, folder: Path) -> None:
    from torchvision.datasets import (
        MNIST,  # imported here: torchvision is slow to import and only the download needs it
    )

    try:
        MNIST(str(root), train=True, download=True)
    except (RuntimeError, OSError) as error:  # torchvision raises these for failed downloads
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"MNIST files not found in {folder} and could not be downloaded ({reason}); "
            f"put {', '.join(RAW_FILES)} (or their .gz) there"
        ) from None
