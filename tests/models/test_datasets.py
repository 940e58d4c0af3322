import gzip
import shutil

import pytest
import torch

from farm.errors import DatasetMissing, InvalidSpec, UnknownDataset
from farm.models import list_datasets, load_dataset
from farm.models.datasets import SYSTEM_FASHION_MNIST, require_files

needs_fashion = pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(),
                                   reason="apt-get install dataset-fashion-mnist")


@needs_fashion
def test_fashion_mnist_reads_the_installed_idx_files(monkeypatch):
    monkeypatch.delenv("FARM_DATA_DIR", raising=False)
    data = load_dataset("fashion-mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    # The published label order of the first training images, and 6000 of each class.
    assert data.train_y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert data.train_y.bincount().tolist() == [6000] * 10
    assert abs(data.train_x.mean().item()) < 0.01 and abs(data.train_x.std().item() - 1) < 0.01
    assert (data.num_classes, data.in_channels, data.input_size) == (10, 1, (28, 28))


@needs_fashion
def test_fashion_mnist_from_data_dir_with_subset(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    shutil.copytree(SYSTEM_FASHION_MNIST, folder)
    # Plain (un-gzipped) files are read too.
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        (folder / "t10k-labels-idx1-ubyte").write_bytes(f.read())
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("FARM_DATA_DIR", str(tmp_path))
    data = load_dataset("fashion-mnist", subset=300)
    assert len(data.train_x) == 300 and len(data.test_y) == 300


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("farm.models.files.SYSTEM_FASHION_MNIST", tmp_path / "nothing")
    monkeypatch.setenv("FARM_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetMissing, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    with pytest.raises(DatasetMissing, match="apt-get install dataset-fashion-mnist"):
        require_files("fashion-mnist")  # the check at submit says the same


def test_missing_cifar10_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetMissing, match="FARM_DATA_DIR"):
        load_dataset("cifar10")
    with pytest.raises(DatasetMissing, match="FARM_DATA_DIR"):
        require_files("cifar10")
    assert not any(tmp_path.iterdir())
    require_files("synthetic")  # nothing to find


def test_synthetic_is_deterministic_and_balanced():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_y.bincount().min() >= 100
    assert set(list_datasets()) == {"fashion-mnist", "cifar10", "synthetic"}


def test_bad_names_and_subsets():
    with pytest.raises(UnknownDataset, match="imagenet"):
        load_dataset("imagenet")
    with pytest.raises(InvalidSpec):
        load_dataset("synthetic", subset=0)
