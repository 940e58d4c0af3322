"""The torch-free name lists agree with what the registry and the loaders build."""

import subprocess
import sys

import pytest

from farm.errors import UnknownDataset, UnknownModel
from farm.models import list_datasets, list_models, names
from farm.models.registry import BUILDERS
from farm.scheduler.spec import canonical_dataset, canonical_model


def test_own_models_are_the_builders():
    assert set(names.OWN_MODELS) == set(BUILDERS)
    assert set(names.ALIASES.values()) <= set(BUILDERS)
    assert set(names.OWN_MODELS) | set(names.ALIASES) <= set(list_models())


def test_datasets_are_the_loaders():
    assert set(names.DATASETS) == set(list_datasets())


def test_names_resolve():
    assert canonical_model("ResNet") == "resnet20"
    assert canonical_model("mobilenet_v2") == "mobilenet_v2"  # torchvision's, looked up there
    assert canonical_dataset("Fashion-MNIST") == "fashion-mnist"
    with pytest.raises(UnknownModel, match="unknown model 'nosuch'"):
        canonical_model("nosuch")
    with pytest.raises(UnknownDataset, match="unknown dataset 'imagenet'"):
        canonical_dataset("imagenet")


def test_checking_own_names_does_not_import_torch():
    code = ("import sys; from farm.scheduler.spec import JobSpec; "
            "JobSpec(model='resnet', dataset='synthetic').resolve(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
