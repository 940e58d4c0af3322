"""Model and dataset names, without importing torch.

The scheduler checks every job of a sweep against these names before writing anything; importing
torch and torchvision for that took 3 of the 5 s of a 1,000-job `farm sweep submit`. The registry
and the loaders build what the names stand for, and tests/models/test_names.py keeps them in step.
"""

from __future__ import annotations

OWN_MODELS = ("resnet18", "resnet20", "resnet32", "resnet50", "resnet56", "tiny", "vgg11", "vgg16")
ALIASES = {"resnet": "resnet20", "vgg": "vgg16"}  # documented defaults of the short names
DATASETS = ("cifar10", "fashion-mnist", "synthetic")


def canonical_model(name: str) -> str | None:
    """The registry key for `name` (alias resolved, lower case), or None if no model has it.
    Only a name that is not farm's own costs the torchvision import, to look it up there."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in OWN_MODELS:
        return key
    from farm.models.registry import list_models

    return key if key in list_models() else None


def canonical_dataset(name: str) -> str | None:
    key = name.lower()
    return key if key in DATASETS else None


def split_ref(ref: str) -> tuple[str, str | None]:
    """A user's model file: 'models/net.py:build' -> ('models/net.py', 'build'); a bare 'net.py'
    -> ('net.py', None). Anything else comes back whole, as a registry name."""
    path, sep, name = ref.rpartition(":")
    if sep and path.endswith(".py"):
        return path, name or None
    return ref, None


def is_model_file(ref: str) -> bool:
    """A model named by a Python file (farm.models.user) rather than by the registry."""
    return split_ref(ref)[0].endswith(".py")
