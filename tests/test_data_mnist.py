import pytest
import torch

from lstm_ae.data import DataError, mnist


@pytest.mark.parametrize("view, shape", [("rows", (28, 28)), ("pixels", (784, 1))])
def test_views_shapes_and_scale(mnist_root, view, shape):
    splits = mnist.load(mnist_root, view=view, val_size=100, download=False)
    assert splits.train.x.shape == (2900, *shape) and splits.val.x.shape == (100, *shape)
    assert splits.test.x.shape == (500, *shape)
    assert splits.train.x.dtype == torch.float32
    assert 0 <= splits.train.x.min() and splits.train.x.max() == 1
    assert splits.train.y.dtype == torch.int64 and set(splits.test.y.tolist()) <= set(range(10))
    assert splits.num_classes == 10


def test_rows_and_pixels_are_the_same_images(mnist_root):
    rows = mnist.load(mnist_root, view="rows", val_size=100, download=False)
    pixels = mnist.load(mnist_root, view="pixels", val_size=100, download=False)
    assert torch.equal(rows.val.x.reshape(100, -1), pixels.val.x.reshape(100, -1))
    assert torch.equal(rows.val.y, pixels.val.y)


def test_train_val_split_is_seeded_and_disjoint(mnist_root):
    a = mnist.load(mnist_root, val_size=100, seed=3, download=False)
    b = mnist.load(mnist_root, val_size=100, seed=3, download=False)
    c = mnist.load(mnist_root, val_size=100, seed=4, download=False)
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    train = {tuple(img.flatten().tolist()) for img in a.train.x}
    assert not any(tuple(img.flatten().tolist()) in train for img in a.val.x)


def test_missing_files_name_the_folder_and_the_files(tmp_path):
    with pytest.raises(DataError) as error:
        mnist.load(tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in mnist.RAW_FILES:
        assert name in message


def test_unknown_view(mnist_root):
    with pytest.raises(ValueError, match="unknown MNIST view"):
        mnist.load(mnist_root, view="columns", download=False)


def _damaged(root, tmp_path, name, change):
    """A copy of the test MNIST files with `name` changed by `change(bytes) -> bytes`."""
    import shutil

    copy = shutil.copytree(root, tmp_path / "copy")
    path = copy / "MNIST" / "raw" / name
    path.write_bytes(change(path.read_bytes()))
    return copy


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("train-images-idx3-ubyte", lambda b: b"\x00\x00\x09\x99" + b[4:], "is not an MNIST image file"),
        ("train-images-idx3-ubyte", lambda b: b[: len(b) // 2], "truncated or damaged"),
        (
            "train-images-idx3-ubyte",
            lambda b: (
                b[:8]
                + (27).to_bytes(4, "big")
                + (29).to_bytes(4, "big")
                + b[16 : 16 + int.from_bytes(b[4:8], "big") * 27 * 29]
            ),
            "27 x 29 pixels",
        ),
        (
            "t10k-labels-idx1-ubyte",
            lambda b: b[:4] + (499).to_bytes(4, "big") + b[8:-1],
            "499 labels for the 500 images",
        ),
        ("train-labels-idx1-ubyte", lambda b: b[:-1] + b"\x0c", "label 12 is not a digit"),
        ("t10k-images-idx3-ubyte", lambda b: b"", "is not an MNIST image file"),
    ],
    ids=["magic", "truncated", "image-size", "counts", "label-range", "empty"],
)
def test_damaged_files_are_named_with_the_problem(mnist_root, tmp_path, name, change, message):
    root = _damaged(mnist_root, tmp_path, name, change)
    with pytest.raises(DataError, match=message) as error:
        mnist.load(root, download=False)
    assert name in str(error.value) and "\n" not in str(error.value)


def test_gzipped_files_read_as_the_plain_ones(mnist_root, tmp_path):
    import gzip
    import shutil

    copy = shutil.copytree(mnist_root, tmp_path / "gz")
    for path in (copy / "MNIST" / "raw").iterdir():
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    plain, zipped = mnist.load(mnist_root, val_size=100, download=False), mnist.load(copy, val_size=100, download=False)
    assert torch.equal(plain.test.x, zipped.test.x) and torch.equal(plain.train.y, zipped.train.y)


def test_too_few_training_images_name_the_files_not_an_option_the_user_never_set(mnist_root):
    with pytest.raises(DataError, match="has 3000 images: too few to hold out 10000 for validation") as error:
        mnist.load(mnist_root, download=False)  # val_size left at its default
    assert "MNIST's full files" in str(error.value)
