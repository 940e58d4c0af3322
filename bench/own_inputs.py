"""A user's own model on their own images, end to end, as `farm submit` runs it: writes an
ImageFolder tree of real pictures (Fashion-MNIST's, as PNG files, train/ and val/), a model file
of a kind farm does not ship (a plain VGG-style CNN, its width and depth set here), then submits
it with `--dataset folder:PATH` and prints what the job recorded: accuracy, sparsity, size, and on
a GPU the per-layer and whole-model timings of the sparse kernels against cuDNN.

    python3 bench/own_inputs.py --out $OUT/own --image-size 32 -- --sparsity 0.9 --batches 1,32

Arguments after `--` go to `farm submit` as they are. FARM_HOME, FARM_DATA_DIR as for farm.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")

MODEL = '''"""A user's CNN: VGG-style stages of 3x3 convs with BatchNorm, max-pool between stages."""
from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels, num_classes, widths=(64, 128, 256, 512), depth=2):
        super().__init__()
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            for _ in range(depth):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
'''


def write_images(root: Path, per_split: dict[str, int]) -> int:
    """root/train/<class>/*.png from Fashion-MNIST's training set, root/val/<class>/*.png from its
    test set; returns the number of files written."""
    import numpy as np
    from PIL import Image

    from farm.models.files import FASHION_FILES, fashion_dir, idx_file
    from farm.models.idx import read_idx

    source = fashion_dir(None)
    splits = {"train": ("train_x", "train_y"), "val": ("test_x", "test_y")}
    written = 0
    for split, (xs, ys) in splits.items():
        x = read_idx(idx_file(source, FASHION_FILES[xs]))[: per_split[split]]
        y = read_idx(idx_file(source, FASHION_FILES[ys]))[: per_split[split]]
        for name in NAMES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, (pixels, label) in enumerate(zip(x, y)):
            Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(root / split / NAMES[label] / f"{i:05d}.png")
            written += 1
    return written


def farm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from farm.cli import main; main()", *args],
                          capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the images, model file and results")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--train", type=int, default=60000, help="training images (of 60,000)")
    ap.add_argument("--val", type=int, default=10000, help="held-out images (of 10,000)")
    ap.add_argument("submit", nargs="*", help="after --: farm submit options")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    images = args.out / "parts"
    if not images.is_dir():
        print(f"wrote {write_images(images, {'train': args.train, 'val': args.val}):,} PNG files in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    (args.out / "net.py").write_text(MODEL)
    t0 = time.perf_counter()
    done = farm("submit", f"{args.out / 'net.py'}:Net", "--dataset", f"folder:{images}",
                "--image-size", str(args.image_size), *args.submit, "--format", "json")
    wall = time.perf_counter() - t0
    print(done.stderr[-4000:], flush=True)
    if done.returncode != 0:
        sys.exit(done.returncode)
    detail = json.loads(done.stdout)
    (args.out / "job.json").write_text(json.dumps(detail, indent=1))
    job = detail["job"]["job_id"]
    for command in (["results", "--format", "markdown"], ["show", str(job), "--format", "json"]):
        shown = farm(*command)
        print(shown.stdout[-6000:] if command[0] == "results" else "", shown.stderr[-2000:], flush=True)
        if command[0] == "show":
            (args.out / "show.json").write_text(shown.stdout)
    print(f"submit took {wall:.0f} s")


if __name__ == "__main__":
    main()
