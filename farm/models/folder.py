"""A user's own images, kept as an ImageFolder tree, loaded whole into a farm Dataset.

Two layouts, one sub-folder of images per class (named for the class; labels follow sorted names):
- root/train/<class>/... with root/val/<class>/... (or root/test/<class>/...);
- root/<class>/..., where a stable split sends 1 image in 5 to test.

`scan` lists and fingerprints the files without opening them and without importing torch, numpy
or PIL, so the scheduler can check a dataset name at submit as cheaply as farm.models.files does.
`load_folder` decodes (or reads back from a cache) and normalises.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from farm.errors import DatasetMissing, InvalidSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from farm.models.datasets import Dataset

PREFIX = "folder:"  # a dataset name "folder:/abs/path" means this loader
DEFAULT_IMAGE_SIZE = 32  # pixels a side that a folder's images are scaled to unless told
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# PIL modes that hold one channel; any other mode in the sample makes the dataset RGB.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
# Folders next to train/ that hold the test split, in order of preference (ImageNet says val).
TEST_FOLDERS = ("val", "test")
# Flat layout: 1 image in TEST_EVERY goes to test, chosen by a hash of its path.
TEST_EVERY = 5
# The shuffle's seeds, fixed and apart from the job's seed: a job's --subset always takes the
# same images whatever seed it trains with, so runs with different seeds compare like for like.
SHUFFLE_SEEDS = {"train": 1234, "test": 1235}
# Written into cache file names; bump it when decoding changes, so that no old file is read.
CACHE_VERSION = 1
# PIL releases the GIL while it decodes and resizes, so threads scale on a GPU host's cores.
DECODE_THREADS = min(8, os.cpu_count() or 1)
# Folders that never hold a class: macOS zip archives carry __MACOSX/ with ._ copies of each file.
IGNORED_FOLDERS = frozenset({"__MACOSX"})
MAX_BYTES = 8 << 30  # a dataset's images as float32, held whole in memory (and on the GPU while training)

Entries = tuple[tuple[str, int], ...]  # (path relative to root, label), sorted by path


@dataclass(frozen=True)
class FolderInfo:
    root: Path
    classes: tuple[str, ...]  # sorted class-folder names; label i is classes[i]
    train: Entries
    test: Entries
    # sha256 over every image's (split, relpath, label, size): the same for a copy on another
    # host, different once a file is added, removed, renamed or resized.
    fingerprint: str
    # sha256 over the folder's own path and every image's size and modification time: what the
    # decoded-image cache is keyed by, so another folder of same-named, same-sized files (BMPs)
    # or a file rewritten in place at its old size is decoded anew, not taken from the cache.
    stamp: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def is_folder(name: str) -> bool:
    return name.startswith(PREFIX)


def folder_path(name: str) -> Path:
    return Path(name[len(PREFIX):]).expanduser()


# --- scan: list the files ---------------------------------------------------------------------

def scan(root: str | Path) -> FolderInfo:
    """The classes and each split's (relative path, label), from file names alone."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetMissing(f"image folder {root} not found; give the path of a folder that holds "
                             f"one sub-folder of images per class")
    sizes: dict[str, os.stat_result] = {}
    if (root / "train").is_dir():
        classes, train, test = _split_layout(root, sizes)
    else:
        classes, train, test = _flat_layout(root, sizes)
    for split, entries in (("train", train), ("test", test)):
        if not entries:  # a flat folder of very few images can hash them all to one side
            raise InvalidSpec(f"image folder {root} gives no {split} images; add more images (1 in "
                              f"{TEST_EVERY} goes to test) or put them in train/ and val/ sub-folders")
    return FolderInfo(root, classes, train, test, _fingerprint(train, test, sizes), _stamp(root, sizes))


def _split_layout(root: Path, sizes: dict[str, int]) -> tuple[tuple[str, ...], Entries, Entries]:
    test_dir = next((root / name for name in TEST_FOLDERS if (root / name).is_dir()), None)
    if test_dir is None:
        raise InvalidSpec(f"image folder {root} has train/ but no val/ or test/ beside it; add one, "
                          f"or put the class folders directly in {root} for a 1-in-{TEST_EVERY} split")
    classes = _classes(root / "train")
    for name in _class_dirs(test_dir):
        if name not in classes:
            raise InvalidSpec(f"class {name!r} is in {test_dir} but not in {root / 'train'}; add its "
                              f"training images or remove it from {test_dir.name}/")
    train = _entries(root, root / "train", classes, sizes, required=True)
    # A test class may be absent or empty: it is only fewer test images.
    test = _entries(root, test_dir, classes, sizes, required=False)
    return classes, train, test


def _flat_layout(root: Path, sizes: dict[str, int]) -> tuple[tuple[str, ...], Entries, Entries]:
    classes = _classes(root)
    every = _entries(root, root, classes, sizes, required=True)
    # By a hash of the path, not by position: adding an image moves no other between splits.
    in_test = [_hash_int(path) % TEST_EVERY == 0 for path, _ in every]
    train = tuple(e for e, t in zip(every, in_test) if not t)
    test = tuple(e for e, t in zip(every, in_test) if t)
    return classes, train, test


def _classes(folder: Path) -> tuple[str, ...]:
    classes = _class_dirs(folder)
    if len(classes) < 2:
        raise InvalidSpec(f"{folder} has {len(classes)} class folder(s), and a classifier needs at "
                          f"least 2: put each class's images in a sub-folder named for the class")
    return classes


def _class_dirs(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not _ignored(p.name)))


def _entries(root: Path, split_dir: Path, classes: tuple[str, ...], sizes: dict[str, int], *,
             required: bool) -> Entries:
    entries = []
    for label, name in enumerate(classes):
        found = _images_under(root, split_dir / name, sizes)
        if required and not found:
            raise InvalidSpec(f"class folder {split_dir / name} holds no images "
                              f"({' '.join(IMAGE_EXTENSIONS)}); add some or remove the folder")
        entries += [(path, label) for path in found]
    return tuple(sorted(entries))


def _images_under(root: Path, folder: Path, sizes: dict[str, int]) -> list[str]:
    """Relative paths of the images anywhere below `folder`, recording each one's size."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _ignored(d)]  # pruned in place: os.walk skips them
        for name in files:
            if _ignored(name) or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(top, name)
            rel = Path(os.path.relpath(path, root)).as_posix()
            sizes[rel] = _stat(path)
            found.append(rel)
    return found


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as e:  # a dangling symlink, or no permission
        raise DatasetMissing(f"cannot read image {path} ({e.strerror}); fix or delete it") from None


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_FOLDERS


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(_utf8(text)).digest()[:8], "big")


def _utf8(text: str) -> bytes:
    # surrogateescape: a file name that is not valid UTF-8 still hashes, to its own bytes.
    return text.encode("utf-8", "surrogateescape")


def _fingerprint(train: Entries, test: Entries, sizes: dict[str, int]) -> str:
    digest = hashlib.sha256()
    rows = sorted([("train", p, y) for p, y in train] + [("test", p, y) for p, y in test])
    for split, path, label in rows:
        digest.update(_utf8(f"{split}\0{path}\0{label}\0{sizes[path].st_size}\n"))
    return digest.hexdigest()


def _stamp(root: Path, stats: dict[str, os.stat_result]) -> str:
    digest = hashlib.sha256(_utf8(f"{os.path.abspath(root)}\n"))
    for path in sorted(stats):
        digest.update(_utf8(f"{path}\0{stats[path].st_size}\0{stats[path].st_mtime_ns}\n"))
    return digest.hexdigest()


# --- channels: 1 or 3, from file headers ------------------------------------------------------

def channels(info: FolderInfo, *, sample: int = 64) -> int:
    """1 if every one of up to `sample` train images, spread over the split, is grayscale, else 3.
    Reads headers only (PIL's open decodes no pixels), so the worker can build the model first."""
    from PIL import Image

    n = len(info.train)
    k = min(sample, n)
    for i in sorted({j * n // k for j in range(k)}):
        path = info.root / info.train[i][0]
        try:
            with Image.open(path) as img:
                mode = img.mode
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file
            raise _unreadable(path, e) from None
        if mode not in GRAY_MODES:
            return 3
    return 1


def _unreadable(path: Path, e: Exception) -> DatasetMissing:
    reason = str(e).replace(str(path), "").strip(" :'\"") or type(e).__name__
    return DatasetMissing(f"cannot read image {path} ({reason}); fix or delete it, then run again")


# --- load_folder: decode, cache, normalise ----------------------------------------------------

def load_folder(root: str | Path, image_size: int, *, subset: int | None = None,
                cache_dir: Path | None = None, max_bytes: int | None = None,
                progress: Callable[[int, int], None] | None = None,
                normalise: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Dataset:
    """The folder as a Dataset of image_size x image_size images, float32 NCHW normalised by the
    train split's per-channel mean and std, or by `normalise` ((mean, std) per channel in 0..1
    units, as torchvision's Normalize takes them: how the user's checkpoint was trained). Both
    splits are shuffled by a fixed seed, and `subset` decodes only the first n of each. With
    `cache_dir`, the decoded uint8 images are kept there and read back, undecoded, while the
    folder's files are unchanged (FolderInfo.stamp). `max_bytes` (default memory_limit()) caps
    the float32 images."""
    _check_args(image_size, subset)
    info = scan(root)
    picked = {split: _shuffled(entries, SHUFFLE_SEEDS[split])[:subset]
              for split, entries in (("train", info.train), ("test", info.test))}
    cached = _find_cache(cache_dir, info, image_size, subset)
    in_channels = cached[1] if cached else channels(info)
    check_memory(info.root, sum(map(len, picked.values())), in_channels, image_size, max_bytes)
    images = _read_cache(cached[0], picked, in_channels, image_size) if cached else None
    if images is None:
        images = decode_splits(info.root, picked, image_size, in_channels, progress)
        if cache_dir is not None:
            _write_cache(_cache_path(cache_dir, info, image_size, subset, in_channels), images)
    return _dataset(info, images, picked, image_size, in_channels, normalise)


def _check_args(image_size: int, subset: int | None) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise InvalidSpec(f"image size must be a whole number of pixels, at least 8; got {image_size!r}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise InvalidSpec(f"subset must be a positive number of images per split; got {subset!r}")


def _shuffled(entries: Entries, seed: int) -> Entries:
    import numpy as np

    # RandomState, not default_rng: numpy keeps its stream fixed across releases (NEP 19), so a
    # subset is the same images on every host and after every upgrade.
    order = np.random.RandomState(seed).permutation(len(entries))
    return tuple(entries[i] for i in order)


def memory_limit() -> int:
    """Bytes of float32 images a job may hold: MAX_BYTES, or a quarter of this machine's memory
    where that is less. Training holds about four copies (the images, their augmented copy and
    its shuffled gather, the uint8 decode while loading): 6 GB of 1,024-px images under the 8 GiB
    limit were killed by the kernel on a 24 GB machine, with no word from farm."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no such sysconf here
        return MAX_BYTES
    return min(MAX_BYTES, total // 4)


def check_memory(root: Path, n: int, in_channels: int, image_size: int, max_bytes: int | None = None) -> None:
    """n images as float32 must fit the limit: the loader holds a dataset whole, as the others are."""
    max_bytes = memory_limit() if max_bytes is None else max_bytes
    need = n * in_channels * image_size * image_size * 4  # float32
    if need > max_bytes:
        raise InvalidSpec(
            f"{n} images from {root} at {image_size}x{image_size}x{in_channels} need "
            f"{need / 2**30:.1f} GiB as float32, over the {max_bytes / 2**30:.1f} GiB limit (at most "
            f"{MAX_BYTES / 2**30:.0f} GiB, and a quarter of this machine's memory); use a smaller "
            f"--image-size or --subset")


def decode_splits(root: Path, picked: dict[str, Entries], image_size: int, in_channels: int,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Each split's images as one uint8 (N, C, S, S) tensor, in the order given."""
    import torch

    out = {split: torch.empty((len(e), in_channels, image_size, image_size), dtype=torch.uint8)
           for split, e in picked.items()}
    jobs = [(split, i, root / path) for split, e in picked.items() for i, (path, _) in enumerate(e)]

    def decode_into(job: tuple[str, int, Path]) -> tuple[Path, DatasetMissing] | None:
        split, i, path = job
        try:
            out[split][i].numpy()[...] = decode_image(path, image_size, in_channels)  # PIL's arrays are read-only
        except DatasetMissing as e:  # every bad file in one message, not one a job
            return path, e
        return None

    every, bad = max(1, len(jobs) // 100), []
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        try:
            for done, error in enumerate(pool.map(decode_into, jobs), 1):
                if error is not None:
                    bad.append(error)
                if progress and (done % every == 0 or done == len(jobs)):
                    progress(done, len(jobs))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # interrupted: stop, rather than decode the rest
            raise
    if len(bad) == 1:
        raise bad[0][1]
    if bad:
        raise DatasetMissing(f"{len(bad)} images cannot be read; fix or delete them, then run again: "
                             + "; ".join(str(path) for path, _ in bad[:5])
                             + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    return out


def decode_image(path: Path, image_size: int, in_channels: int) -> np.ndarray:
    """One image as uint8 (C, S, S): its shorter side resized to S (antialiased), centre-cropped."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            # JPEG only: decode at the smallest 1/2, 1/4 or 1/8 scale that still covers S x S.
            img.draft("L" if in_channels == 1 else "RGB", (image_size, image_size))
            img = _to_8bit(img).convert("L" if in_channels == 1 else "RGB")
            img = _resize_crop(img, image_size)
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, ...
        raise _unreadable(path, e) from None
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _to_8bit(img):
    """16-bit grayscale to 8 bits by its top byte: PIL's own convert clips it at 255 (all white)."""
    if not img.mode.startswith("I;16"):
        return img
    import numpy as np
    from PIL import Image

    return Image.fromarray((np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8), "L")


def _resize_crop(img, size: int):
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new != (w, h):
        img = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)  # PIL antialiases
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def _cache_path(cache_dir: Path, info: FolderInfo, image_size: int, subset: int | None,
                in_channels: int) -> Path:
    return Path(cache_dir) / (f"folder-{info.stamp[:24]}-{image_size}px-{subset or 'all'}-"
                              f"{in_channels}ch-v{CACHE_VERSION}.pt")


def _find_cache(cache_dir: Path | None, info: FolderInfo, image_size: int,
                subset: int | None) -> tuple[Path, int] | None:
    """A cache file for this fingerprint, and its channel count: found before channels() is asked,
    so a cached load opens no image at all."""
    if cache_dir is None:
        return None
    found = [(p, c) for c in (1, 3) if (p := _cache_path(cache_dir, info, image_size, subset, c)).is_file()]
    return found[0] if len(found) == 1 else None


def _read_cache(path: Path, picked: dict[str, Entries], in_channels: int,
                image_size: int) -> dict[str, torch.Tensor] | None:
    """The cached images, or None (decode again) if the file is unreadable or does not fit."""
    import torch

    try:
        saved = torch.load(path, weights_only=True)
        images = {split: saved[split] for split in picked}
    except Exception:  # noqa: BLE001 - a cut or foreign file is only a cache miss
        return None
    fits = all(t.dtype == torch.uint8 and tuple(t.shape) == (len(picked[s]), in_channels, image_size,
                                                             image_size) for s, t in images.items())
    return images if fits else None


def _write_cache(path: Path, images: dict[str, torch.Tensor]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(images, tmp)
    os.replace(tmp, path)  # atomic: a crash leaves the old file or none, never half a file


def _dataset(info: FolderInfo, images: dict[str, torch.Tensor], picked: dict[str, Entries],
             image_size: int, in_channels: int, normalise=None) -> Dataset:
    import torch

    from farm.models.datasets import Dataset

    if normalise is None:  # the folder's own statistics
        mean, std = _stats(images["train"])
    else:  # as the user's model was trained: (mean, std) per channel in 0..1 units, one broadcast
        mean, std = (torch.tensor(v, dtype=torch.float32).mul(255).expand(in_channels).reshape(1, -1, 1, 1)
                     for v in normalise)
    norm = lambda u8: u8.float().sub_(mean).div_(std)  # noqa: E731 - in place: one float copy
    labels = lambda split: torch.tensor([y for _, y in picked[split]], dtype=torch.int64)  # noqa: E731
    to_unit = lambda t: tuple(round(float(v) / 255, 6) for v in t.flatten())  # noqa: E731 - 0..1 units
    return Dataset(PREFIX + str(info.root), norm(images["train"]), labels("train"),
                   norm(images["test"]), labels("test"), info.num_classes, in_channels,
                   (image_size, image_size), normalise=(to_unit(mean), to_unit(std)), classes=info.classes)


def _stats(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in 0-255 units, exact: from a 256-bin histogram
    in float64 rather than a float copy of every pixel."""
    import torch

    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(train.shape[1]):
        hist = torch.bincount(train[:, c].reshape(-1), minlength=256).double()
        mean = (hist * values).sum() / hist.sum()
        means.append(mean)
        stds.append(((hist * (values - mean) ** 2).sum() / hist.sum()).sqrt().clamp_min(1e-6))
    view = lambda xs: torch.stack(xs).float().view(1, -1, 1, 1)  # noqa: E731
    return view(means), view(stds)
