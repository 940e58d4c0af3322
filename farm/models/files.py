"""Where each dataset's files are on this machine, without importing torch: the loaders read from
here, and a job run here is checked against it at submit (`require_files`) before it is recorded,
rather than failing in its first stage. Paths only; reading and decoding is farm.models.datasets."""

from __future__ import annotations

import shlex
from pathlib import Path

from farm import settings
from farm.errors import DatasetMissing

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def require_files(name: str, root: str | Path | None = None) -> None:
    """Raise DatasetMissing, with the words loading it would use, if `name`'s files are not on
    this machine (synthetic has none); reads nothing."""
    root = Path(root).expanduser() if root else None
    if name.lower().startswith("folder:"):
        path = Path(name[len("folder:"):]).expanduser()
        if not path.is_dir():
            raise DatasetMissing(f"image folder {path} not found on this machine")
    elif name.lower() == "fashion-mnist":
        fashion_dir(root)
    elif name.lower() == "cifar10":
        cifar_folder(root, download=False)


def fashion_dir(root: Path | None) -> Path:
    """The first folder holding all four IDX files: `root`, FARM_DATA_DIR's fashion-mnist/, the
    Debian package's."""
    candidates = [root] if root else []
    data_dir = settings.load().data_dir
    if data_dir:
        candidates.append(data_dir / "fashion-mnist")
    candidates.append(SYSTEM_FASHION_MNIST)
    for folder in candidates:
        if all(idx_file(folder, f) for f in FASHION_FILES.values()):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetMissing(
        f"Fashion-MNIST IDX files not found (looked in {looked}); run `apt-get install "
        f"dataset-fashion-mnist` or set FARM_DATA_DIR to a folder holding fashion-mnist/")


def idx_file(folder: Path, stem: str) -> Path | None:
    for path in (folder / f"{stem}.gz", folder / stem):
        if path.is_file():
            return path
    return None


def cifar_folder(root: Path | None, download: bool) -> Path:
    """The folder torchvision's CIFAR10 reads (cifar-10-batches-py/ in it), which must hold it
    unless it may download."""
    data_dir = settings.load().data_dir
    folder = root or data_dir or (settings.load().home / "data")
    if not download and not (folder / "cifar-10-batches-py").is_dir():
        raise DatasetMissing(
            f"CIFAR-10 not found in {folder}/cifar-10-batches-py; set FARM_DATA_DIR to a folder "
            f"holding it, or fetch it once (needs the internet): python -c "
            + shlex.quote(f"import torchvision; torchvision.datasets.CIFAR10({str(folder)!r}, download=True)"))
    return folder
