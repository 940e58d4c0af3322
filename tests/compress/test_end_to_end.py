"""Train -> prune -> retrain -> quantize -> save -> load on a few hundred real Fashion-MNIST images."""

import pytest
import torch

from farm.compress import (KMeansQuant, MagnitudePruning, TrainConfig, evaluate, load_compressed,
                           prune_and_retrain, quantize_and_finetune, save_compressed, train)
from farm.models import get_model, load_dataset
from farm.models.datasets import SYSTEM_FASHION_MNIST


@pytest.mark.slow
@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_prune_and_quantize_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.delenv("FARM_DATA_DIR", raising=False)
    data = load_dataset("fashion-mnist", subset=600)
    torch.manual_seed(0)
    model = get_model("tiny", in_channels=1, num_classes=10, width=16)
    cfg = dict(batch_size=50, lr=0.1)
    dense = train(model, data, TrainConfig(epochs=6, **cfg)).accuracy
    assert dense > 0.6  # 10 classes: chance is 0.1

    pruned = prune_and_retrain(model, data, MagnitudePruning(0.8, steps=4), TrainConfig(epochs=3, **cfg))
    assert pruned.sparsity == pytest.approx(0.8, abs=1e-3)
    assert pruned.accuracy > dense - 0.1

    quant = quantize_and_finetune(model, data, KMeansQuant(4), TrainConfig(epochs=2, batch_size=50, lr=0.02))
    assert quant.sparsity == pytest.approx(pruned.overall_sparsity)
    assert quant.accuracy > dense - 0.1

    report = save_compressed(model, tmp_path / "fm.farm")
    assert report.ratio > 4  # a 6k-weight model: BatchNorm and the header weigh a lot here
    restored = load_compressed(tmp_path / "fm.farm").load_into(get_model("tiny", in_channels=1, width=16))
    assert evaluate(restored, data) == evaluate(model, data) == quant.accuracy
