"""Models and datasets: `get_model("resnet20", in_channels=1)`, `load_dataset("fashion-mnist")`.

The names below load on first use, so `farm.models.names` (what the scheduler validates specs
with) is importable without paying for torch and torchvision.
"""

from importlib import import_module

_EXPORTS = {"Dataset": "datasets", "list_datasets": "datasets", "load_dataset": "datasets",
            "get_model": "registry", "list_models": "registry"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"farm.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'farm.models' has no attribute {name!r}")
