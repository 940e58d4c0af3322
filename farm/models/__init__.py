"""Models and datasets: `get_model("resnet20", in_channels=1)`, `load_dataset("fashion-mnist")`."""

from farm.models.datasets import Dataset, list_datasets, load_dataset
from farm.models.registry import get_model, list_models

__all__ = ["Dataset", "get_model", "list_datasets", "list_models", "load_dataset"]
