"""farm.models.folder on real images: Fashion-MNIST pictures written out as PNG/JPEG files into
ImageFolder trees, then scanned and loaded back."""

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from farm.errors import DatasetMissing, InvalidSpec
from farm.models.files import FASHION_FILES, SYSTEM_FASHION_MNIST
from farm.models.folder import (PREFIX, channels, decode_image, folder_path, is_folder, load_folder,
                                scan)
from farm.models.idx import read_idx

pytestmark = pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(),
                                reason="apt-get install dataset-fashion-mnist")

CLASSES = ("bag", "dress", "sneaker", "trouser")  # sorted, so label i is CLASSES[i]
FASHION_LABEL = {"trouser": 1, "dress": 3, "sneaker": 7, "bag": 8}
N_TRAIN, N_TEST = 30, 10  # per class


@pytest.fixture(scope="module")
def fashion():
    """The first N_TRAIN + N_TEST test-set images of each class we use, by class name."""
    x = read_idx(SYSTEM_FASHION_MNIST / f"{FASHION_FILES['test_x']}.gz")
    y = read_idx(SYSTEM_FASHION_MNIST / f"{FASHION_FILES['test_y']}.gz")
    return {name: x[y == label][:N_TRAIN + N_TEST] for name, label in FASHION_LABEL.items()}


def write_split_tree(root: Path, fashion, *, test_folder="test") -> dict[str, tuple[bytes, int]]:
    """root/train/<class>/ and root/<test_folder>/<class>/ as grayscale PNGs; relpath -> (pixels, label)."""
    written = {}
    for label, name in enumerate(CLASSES):
        for i, pixels in enumerate(fashion[name]):
            split = "train" if i < N_TRAIN else test_folder
            rel = f"{split}/{name}/{i:03d}.png"
            save(root / rel, pixels)
            written[rel] = (pixels.tobytes(), label)
    return written


def write_flat_tree(root: Path, fashion) -> None:
    for name in CLASSES:
        for i, pixels in enumerate(fashion[name]):
            save(root / name / f"{i:03d}.png", pixels)


def save(path: Path, pixels: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kw)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, fashion):
    """A train/test tree that no test changes; copy it to change it."""
    root = tmp_path_factory.mktemp("tree") / "clothes"
    return root, write_split_tree(root, fashion)


@pytest.fixture
def own_tree(tmp_path, tree):
    root = tmp_path / "clothes"
    shutil.copytree(tree[0], root)
    return root, tree[1]


def source_stats(written):
    train = np.stack([np.frombuffer(px, np.uint8) for rel, (px, _) in written.items()
                      if rel.startswith("train/")]).astype(np.float64)
    return train.mean(), train.std()


def raw(x: torch.Tensor, mean: float, std: float) -> np.ndarray:
    """Undo the normalisation: back to 0-255 values, still unrounded."""
    return (x.double() * std + mean).numpy()


def standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / x.std(unbiased=False)


# --- names --------------------------------------------------------------------------------------

def test_dataset_names_with_the_prefix_are_folders():
    assert is_folder("folder:/data/cats") and not is_folder("fashion-mnist")
    assert folder_path("folder:/data/cats") == Path("/data/cats")
    assert folder_path(PREFIX + "~/cats") == Path.home() / "cats"


def test_scan_imports_neither_torch_nor_pil(tree):
    # The scheduler checks a folder at submit; that must not cost torch's import.
    code = ("import sys; from farm.models.folder import scan; scan(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tree[0])], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# --- scan ---------------------------------------------------------------------------------------

def test_scan_reads_the_train_test_layout(own_tree):
    root, written = own_tree
    # Ignored: other files, hidden files and folders; counted: a nested folder within a class.
    (root / "train/bag/notes.txt").write_text("not an image")
    save(root / "train/bag/.hidden.png", np.zeros((28, 28), np.uint8))
    save(root / "train/.cache/x.png", np.zeros((28, 28), np.uint8))
    save(root / "train/dress/extra/deep/999.PNG", np.zeros((28, 28), np.uint8))
    info = scan(root)
    assert info.root == root and info.classes == CLASSES and info.num_classes == 4
    assert len(info.train) == 4 * N_TRAIN + 1 and len(info.test) == 4 * N_TEST
    assert ("train/dress/extra/deep/999.PNG", 1) in info.train
    assert [p for p, _ in info.train] == sorted(p for p, _ in info.train)
    for path, label in info.train + info.test:
        assert path.split("/")[1] == CLASSES[label]
        if path in written:
            assert written[path][1] == label


def test_scan_prefers_val_to_test(own_tree, fashion):
    root, _ = own_tree
    save(root / "val/bag/000.png", fashion["bag"][0])
    save(root / "val/dress/000.png", fashion["dress"][0])
    info = scan(root)
    assert info.test == (("val/bag/000.png", 0), ("val/dress/000.png", 1))


def test_scan_splits_a_flat_folder_one_in_five_stably(tmp_path, fashion):
    root = tmp_path / "flat"
    write_flat_tree(root, fashion)
    info = scan(root)
    assert info.classes == CLASSES
    assert len(info.train) + len(info.test) == 4 * (N_TRAIN + N_TEST)
    assert 0.1 < len(info.test) / (4 * (N_TRAIN + N_TEST)) < 0.3
    assert all(p.startswith(CLASSES[y] + "/") for p, y in info.train + info.test)
    assert scan(root) == info
    # A new file that sorts first in its class moves no other image between splits.
    save(root / "bag/000a.png", fashion["bag"][0][::-1])
    again = scan(root)
    assert set(info.train) <= set(again.train) and set(info.test) <= set(again.test)
    assert len(again.train) + len(again.test) == len(info.train) + len(info.test) + 1


def test_fingerprint_follows_the_files_not_the_place(own_tree, tmp_path, fashion):
    root, _ = own_tree
    first = scan(root).fingerprint
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(root, copy)
    assert scan(copy).fingerprint == first
    save(root / "train/bag/100.png", fashion["bag"][0])
    added = scan(root).fingerprint
    assert added != first
    (root / "train/bag/100.png").rename(root / "train/bag/101.png")
    renamed = scan(root).fingerprint
    assert renamed not in (first, added)
    with open(root / "train/bag/101.png", "ab") as f:
        f.write(b"\0")  # one byte longer
    assert scan(root).fingerprint not in (first, added, renamed)


# --- channels -----------------------------------------------------------------------------------

def test_channels_is_one_for_grayscale_and_three_once_rgb_appears(own_tree, fashion):
    root, _ = own_tree
    save(root / "train/bag/000.jpg", fashion["bag"][0], quality=95)  # a grayscale JPEG is mode L
    assert channels(scan(root)) == 1
    # One class in RGB: the sample spreads over the sorted train list, so it meets them.
    for i, pixels in enumerate(fashion["sneaker"][:N_TRAIN]):
        save(root / f"train/sneaker/{i:03d}.png", np.stack([pixels] * 3, axis=-1))
    assert channels(scan(root)) == 3


# --- load_folder --------------------------------------------------------------------------------

def test_load_folder_gives_the_source_pixels_and_labels(tree):
    root, written = tree
    data = load_folder(root, 28)
    assert data.name == PREFIX + str(root)
    assert (data.num_classes, data.in_channels, data.input_size) == (4, 1, (28, 28))
    assert data.train_x.shape == (4 * N_TRAIN, 1, 28, 28) and data.test_x.shape == (4 * N_TEST, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    # Normalised by the train split's own mean and std.
    assert abs(data.train_x.mean().item()) < 1e-5 and abs(data.train_x.std(unbiased=False).item() - 1) < 1e-5
    # Undone with the stats of the source pixels, every image is exactly its PNG, with its label.
    mean, std = source_stats(written)
    for split in ("train", "test"):
        x = raw(getattr(data, f"{split}_x"), mean, std)
        assert np.abs(x - x.round()).max() < 1e-3
        got = Counter((img.round().astype(np.uint8).tobytes(), int(y))
                      for img, y in zip(x, getattr(data, f"{split}_y")))
        assert got == Counter(v for rel, v in written.items() if rel.startswith(split + "/"))


def test_load_folder_shuffles_the_same_way_every_time_and_everywhere(tree, tmp_path):
    root, _ = tree
    first, second = load_folder(root, 28), load_folder(root, 28)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    third = load_folder(copy, 28)
    for other in (second, third):
        for field in ("train_x", "train_y", "test_x", "test_y"):
            assert torch.equal(getattr(first, field), getattr(other, field))
    # Shuffled: the sorted file list would give the labels in blocks.
    assert first.train_y.tolist() != sorted(first.train_y.tolist())
    assert len(set(first.train_y[:12].tolist())) >= 3 and len(set(first.test_y[:8].tolist())) >= 2


def test_load_folder_makes_rgb_when_any_image_is_colour(own_tree, fashion):
    root, _ = own_tree
    for i, pixels in enumerate(fashion["sneaker"][:N_TRAIN]):
        colour = np.stack([pixels, 255 - pixels, pixels // 2], axis=-1)
        save(root / f"train/sneaker/{i:03d}.jpg", colour, quality=90)
        (root / f"train/sneaker/{i:03d}.png").unlink()
    data = load_folder(root, 16)
    assert data.in_channels == 3 and data.train_x.shape == (4 * N_TRAIN, 3, 16, 16)
    assert data.test_x.shape == (4 * N_TEST, 3, 16, 16)
    per_channel = data.train_x.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(1).abs().max() < 1e-5
    assert (per_channel.std(1, unbiased=False) - 1).abs().max() < 1e-5
    # A grayscale image becomes three equal channels.
    gray = decode_image(root / "train/bag/000.png", 28, 3)
    assert (gray == fashion["bag"][0]).all()


def test_decode_image_resizes_the_shorter_side_then_crops_the_centre(tmp_path):
    tall = np.full((40, 20), 128, np.uint8)
    tall[:10], tall[30:] = 255, 0
    save(tmp_path / "tall.png", tall)
    assert (decode_image(tmp_path / "tall.png", 20, 1) == 128).all()
    # 120x40, shrunk to 60x20, keeps its centre 20 columns: inside the grey band (30-89 -> 15-44).
    wide = np.full((40, 120), 128, np.uint8)
    wide[:, :30], wide[:, 90:] = 255, 0
    save(tmp_path / "wide.png", wide)
    out = decode_image(tmp_path / "wide.png", 20, 3)
    assert out.shape == (3, 20, 20) and (out == 128).all()
    # Antialiased: a 1-px checkerboard shrunk 4x is grey, not a sample of black and white.
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    save(tmp_path / "board.png", board)
    small = decode_image(tmp_path / "board.png", 16, 1)
    assert small.shape == (1, 16, 16) and np.abs(small.astype(int) - 127.5).max() < 8


def test_decode_image_keeps_the_top_byte_of_16_bit_grayscale(tmp_path):
    Image.fromarray(np.full((12, 12), 0x8040, np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    assert (decode_image(tmp_path / "deep.png", 12, 1) == 0x80).all()


def test_subset_decodes_only_the_first_n_of_each_split(own_tree):
    root, written = own_tree
    full = load_folder(root, 28)
    n = 8
    sub = load_folder(root, 28, subset=n)
    assert sub.train_x.shape[0] == n and sub.test_x.shape[0] == n
    assert torch.equal(sub.train_y, full.train_y[:n]) and torch.equal(sub.test_y, full.test_y[:n])
    assert torch.allclose(sub.train_x, standardise(full.train_x[:n]), atol=1e-4)
    assert torch.allclose(standardise(sub.test_x), standardise(full.test_x[:n]), atol=1e-4)
    # Break the last train image of the full load, which no subset of 8 holds: only the full
    # load reads it.
    mean, std = source_stats(written)
    last = raw(full.train_x[-1], mean, std).round().astype(np.uint8).tobytes()
    victim = next(rel for rel, (px, _) in written.items() if px == last and rel.startswith("train/"))
    (root / victim).write_bytes(b"not a png at all")
    again = load_folder(root, 28, subset=n)
    assert torch.equal(again.train_x, sub.train_x) and torch.equal(again.test_x, sub.test_x)
    with pytest.raises(DatasetMissing, match=victim.split("/")[-1]) as e:
        load_folder(root, 28)
    assert str(root / victim) in str(e.value) and "\n" not in str(e.value)


def test_progress_counts_every_decoded_image(tree):
    calls = []
    load_folder(tree[0], 28, subset=20, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (40, 40)
    assert [d for d, _ in calls] == sorted({d for d, _ in calls}) and len(calls) >= 10


def test_cache_is_read_back_without_decoding(own_tree, tmp_path):
    root, _ = own_tree
    cache = tmp_path / "cache"
    first = load_folder(root, 20, cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temporary file left over
    # Other bytes under the old sizes and times: only decoding could tell, and none decodes any more.
    for path in root.rglob("*.png"):
        st = path.stat()
        path.write_bytes(b"\xff" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DatasetMissing):
        load_folder(root, 20)
    cached = load_folder(root, 20, cache_dir=cache)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, field), getattr(cached, field))
    assert (cached.in_channels, cached.input_size, cached.name) == (1, (20, 20), first.name)
    # Another size or subset is another cache file, so it decodes (and here meets the bad files).
    with pytest.raises(DatasetMissing):
        load_folder(root, 24, cache_dir=cache)
    with pytest.raises(DatasetMissing):
        load_folder(root, 20, subset=5, cache_dir=cache)


def _bmp_tree(root: Path, fashion, start: int) -> Path:
    """BMP files, whose size depends on the image size only: other pictures, same sizes."""
    for split, n in (("train", 6), ("val", 2)):
        for name in ("bag", "dress"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(fashion[name][start + i]).save(folder / f"{i}.bmp")
    return root


def test_same_names_and_sizes_elsewhere_or_rewritten_in_place_miss_the_cache(tmp_path, fashion):
    cache = tmp_path / "cache"
    a = _bmp_tree(tmp_path / "a", fashion, 0)
    b = _bmp_tree(tmp_path / "b", fashion, 10)
    assert scan(a).fingerprint == scan(b).fingerprint  # the job's identity: names and sizes
    from_a = load_folder(a, 28, cache_dir=cache)
    from_b = load_folder(b, 28, cache_dir=cache)
    assert not torch.equal(from_a.train_x, from_b.train_x)  # b's own pictures, not a's cached ones
    shutil.copy(b / "train/bag/0.bmp", a / "train/bag/0.bmp")  # a's file rewritten at its old size
    again = load_folder(a, 28, cache_dir=cache)
    assert len(list(cache.iterdir())) == 3
    assert not torch.equal(again.train_x, from_a.train_x)


def test_a_broken_cache_file_is_decoded_again(own_tree, tmp_path):
    root, _ = own_tree
    cache = tmp_path / "cache"
    first = load_folder(root, 28, subset=10, cache_dir=cache)
    (path,) = cache.iterdir()
    path.write_bytes(b"half a file")
    again = load_folder(root, 28, subset=10, cache_dir=cache)
    assert torch.equal(first.train_x, again.train_x)
    assert path.stat().st_size > 10 * 28 * 28  # written again, whole


def test_a_new_image_misses_the_cache(own_tree, tmp_path, fashion):
    root, _ = own_tree
    cache = tmp_path / "cache"
    load_folder(root, 28, cache_dir=cache)
    save(root / "train/bag/100.png", fashion["bag"][0])
    assert load_folder(root, 28, cache_dir=cache).train_x.shape[0] == 4 * N_TRAIN + 1
    assert len(list(cache.iterdir())) == 2


def test_max_bytes_refuses_before_decoding(tree):
    need = 4 * (N_TRAIN + N_TEST) * 28 * 28 * 4
    with pytest.raises(InvalidSpec, match=r"GiB.*--image-size or --subset") as e:
        load_folder(tree[0], 28, max_bytes=need - 1)
    assert "\n" not in str(e.value)
    assert load_folder(tree[0], 28, max_bytes=need).train_x.shape[0] == 4 * N_TRAIN
    # The subset is what counts.
    assert load_folder(tree[0], 28, subset=10, max_bytes=need // 4).train_x.shape[0] == 10


# --- errors -------------------------------------------------------------------------------------

def one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_missing_folder_is_dataset_missing(tmp_path):
    with pytest.raises(DatasetMissing, match="not found") as e:
        scan(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in one_line(e)


def test_one_class_is_not_a_classifier(tmp_path, fashion):
    save(tmp_path / "only/bag/0.png", fashion["bag"][0])
    with pytest.raises(InvalidSpec, match="1 class folder") as e:
        scan(tmp_path / "only")
    one_line(e)


def test_a_class_without_images_is_refused(own_tree):
    root, _ = own_tree
    (root / "train/empty").mkdir()
    (root / "train/empty/readme.txt").write_text("nothing here")
    with pytest.raises(InvalidSpec, match="empty holds no images") as e:
        scan(root)
    one_line(e)


def test_a_test_class_missing_from_train_is_named(own_tree, fashion):
    root, _ = own_tree
    save(root / "test/coat/0.png", fashion["bag"][0])
    with pytest.raises(InvalidSpec, match="'coat'") as e:
        scan(root)
    one_line(e)


def test_train_without_val_or_test_is_refused(own_tree):
    root, _ = own_tree
    shutil.rmtree(root / "test")
    with pytest.raises(InvalidSpec, match="no val/ or test/") as e:
        scan(root)
    one_line(e)


def test_a_flat_folder_too_small_for_a_test_split_is_refused(tmp_path, fashion):
    # Two images whose paths both hash to train (checked when this test was written).
    save(tmp_path / "tiny/bag/000.png", fashion["bag"][0])
    save(tmp_path / "tiny/dress/000.png", fashion["dress"][0])
    with pytest.raises(InvalidSpec, match="no test images") as e:
        scan(tmp_path / "tiny")
    one_line(e)


@pytest.mark.parametrize("size", [7, 0, -28, 28.0, "28", True, None])
def test_image_size_must_be_an_int_of_at_least_8(tree, size):
    with pytest.raises(InvalidSpec, match="image size") as e:
        load_folder(tree[0], size)
    one_line(e)


@pytest.mark.parametrize("subset", [0, -1, 2.5])
def test_subset_must_be_positive(tree, subset):
    with pytest.raises(InvalidSpec, match="subset"):
        load_folder(tree[0], 28, subset=subset)
