"""Image sizes, without importing torch: each dataset's, and the smallest each model takes.

The scheduler checks a job's model against its dataset's images before anything is recorded: a
model too large for them (inception_v3 on Fashion-MNIST's 28x28) was queued and failed only when
it ran, with torch's "Kernel size can't be greater than actual input size".
"""

from __future__ import annotations

# (height, width) of each dataset's images: the loaders' Dataset.input_size is taken from here.
IMAGE_SIZES = {"cifar10": (32, 32), "fashion-mnist": (28, 28), "synthetic": (16, 16)}
# (image channels, classes) of each: a model can be built without loading the data (a worker's
# job that waits for another job's artifact learns it before reading a file)
SHAPES = {"cifar10": (3, 10), "fashion-mnist": (1, 10), "synthetic": (3, 10)}

# The smallest square image (pixels a side) each model's forward pass takes, for models that
# need more than one pixel: measured with weights=None and one input channel on torchvision 0.29,
# one pixel fewer fails (mostly a pooling window left with nothing). They agree with the
# `min_size` torchvision gives its weights, which is not read instead because it describes the
# weights rather than the layers: Swin's says 224-256 and EfficientNet-V2's 33, and both run on
# 16 px. tests/models/test_sizes.py runs two of these and compares the rest with torchvision's.
# farm's own vgg11/vgg16 (CIFAR style) and resnet18/50 (3x3 stem, no max-pool) take any size,
# unlike torchvision's models of those names.
MIN_SIDES = {
    "tiny": 2,
    "alexnet": 63,
    "googlenet": 15,
    "inception_v3": 75,  # in eval; training with its auxiliary classifier needs 299
    "squeezenet1_0": 21,
    "squeezenet1_1": 17,
    "maxvit_t": 224,  # 221 to 224 only: its 7x7 windows must tile every stage
    **dict.fromkeys(("densenet121", "densenet161", "densenet169", "densenet201"), 29),
    **dict.fromkeys(("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"), 32),
    **dict.fromkeys(("vgg11_bn", "vgg13", "vgg13_bn", "vgg16_bn", "vgg19", "vgg19_bn"), 32),
    # exactly 224: the position embedding is built for it
    **dict.fromkeys(("vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32"), 224),
}


def too_small(model: str, dataset: str) -> str | None:
    """Why `dataset`'s images are too small for `model` (canonical names), or None if they fit."""
    height, width = IMAGE_SIZES[dataset]
    if why := too_small_input(model, height, width, f"{dataset}'s are"):
        return f"{why}; models made for small images: {', '.join(small_models(dataset))}"
    return None


def too_small_input(model: str, height: int, width: int, whose: str = "the input is") -> str | None:
    """Why images of height x width are too small for `model` (a canonical name), or None."""
    need = MIN_SIDES.get(model, 1)
    if min(height, width) >= need:
        return None
    return f"model {model} needs images of at least {need}x{need} pixels, but {whose} {height}x{width}"


def small_models(dataset: str) -> list[str]:
    """farm's own models (built for small images) that take `dataset`'s, in names.OWN_MODELS's
    order; read from there so a model added to farm is named too. Aliases (resnet, vgg) are left
    out: the hint names models as the error does, by their canonical names."""
    from farm.models.names import OWN_MODELS

    side = min(IMAGE_SIZES[dataset])
    return [m for m in OWN_MODELS if MIN_SIDES.get(m, 1) <= side]
