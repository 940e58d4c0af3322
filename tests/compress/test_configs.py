"""Every config round-trips through JSON (job specs and results store them that way)."""

import json

import pytest

from farm.compress import KMeansQuant, LinearQuant, LogQuant, MagnitudePruning, TrainConfig
from farm.compress.quantization import Quantization

CONFIGS = [
    TrainConfig(epochs=3, lr=0.1, seed=7, crop_pad=0),
    MagnitudePruning(0.9),
    MagnitudePruning(0.5, schedule="oneshot", scope="layer", keep_dense=("first",), layer_sparsity={"a.weight": 0.3}),
    LinearQuant(5, skip=("fc.*",)),
    LogQuant(3),
    KMeansQuant(4, fp16_rest=True, fold_bn=True, iterations=10),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_configs_round_trip_through_json(config):
    back = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config and type(back) is type(config)
    if isinstance(config, Quantization):
        assert type(Quantization.from_dict(config.to_dict())) is type(config)
