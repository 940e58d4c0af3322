"""Fixtures for the compression tests: a tiny model trained once per session on the synthetic set."""

import copy

import pytest
import torch

from farm.compress import TrainConfig, train
from farm.models import get_model, load_dataset


@pytest.fixture(scope="session")
def synthetic():
    return load_dataset("synthetic")


@pytest.fixture(scope="session")
def _trained(synthetic):
    torch.manual_seed(0)
    model = get_model("tiny", width=16)
    train(model, synthetic, TrainConfig(epochs=5, batch_size=64, lr=0.1))
    return model


@pytest.fixture
def trained(_trained):
    """A fresh copy of the trained tiny model (tests change it in place)."""
    return copy.deepcopy(_trained)


def zeros(model, name):
    return int((dict(model.named_parameters())[name] == 0).sum())
