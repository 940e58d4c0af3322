"""A corrupt Fashion-MNIST file (bad magic, cut gzip, not gzip, cut data) is DatasetMissing with a
line that names the file and how to reinstall, never a bare ValueError or EOFError."""

import gzip

import numpy as np
import pytest

from farm.errors import DatasetMissing
from farm.models import load_dataset
from farm.models.datasets import FASHION_FILES


def _idx(array: np.ndarray) -> bytes:
    kind = 0x08  # unsigned bytes, as Fashion-MNIST stores them
    head = bytes([0, 0, kind, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return head + array.astype(np.uint8).tobytes()


def _good_files(folder):
    """Tiny but valid IDX .gz files: 5 train and 5 test images with labels."""
    rng = np.random.default_rng(0)
    for key, stem in FASHION_FILES.items():
        array = rng.integers(0, 256, (5, 28, 28)) if key.endswith("_x") else rng.integers(0, 10, 5)
        (folder / f"{stem}.gz").write_bytes(gzip.compress(_idx(array)))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    _good_files(folder)
    monkeypatch.setenv("FARM_DATA_DIR", str(tmp_path))
    return folder


def test_good_tiny_files_load(data_dir):
    data = load_dataset("fashion-mnist")
    assert data.train_x.shape == (5, 1, 28, 28) and data.test_y.shape == (5,)


STEM = FASHION_FILES["train_x"]
CORRUPT = {
    "bad magic": lambda good: gzip.compress(b"\x08\x03\x00\x00" + good[4:]),
    "truncated gzip": lambda good: gzip.compress(good)[:-40],
    "not gzip": lambda good: b"<html>404 Not Found</html>",
    "truncated data": lambda good: gzip.compress(good[:-100]),
    "empty": lambda good: b"",
}


@pytest.mark.parametrize("how", list(CORRUPT))
def test_corrupt_file_is_dataset_missing(data_dir, how):
    path = data_dir / f"{STEM}.gz"
    good = gzip.decompress(path.read_bytes())
    path.write_bytes(CORRUPT[how](good))
    with pytest.raises(DatasetMissing) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert str(path) in message and "corrupt" in message and "\n" not in message
    assert "apt-get install --reinstall dataset-fashion-mnist" in message and "FARM_DATA_DIR" in message
