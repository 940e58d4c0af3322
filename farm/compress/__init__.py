"""Compression: train, prune, quantize, save a compressed model. A plain library (no Celery/DB).

    data = load_dataset("fashion-mnist"); model = get_model("resnet20", in_channels=1)
    train(model, data, TrainConfig(epochs=40))       # ~17 s on an H100/H200 (CUDA-graphed steps)
    prune_and_retrain(model, data, MagnitudePruning(0.9), TrainConfig(epochs=60))
    quantize_and_finetune(model, data, KMeansQuant(4), TrainConfig(epochs=6))
    save_compressed(model, "model.farm")
"""

from farm.compress.format import CompressedModel, SizeReport, load_compressed, save_compressed
from farm.compress.pruning import (MagnitudePruning, PruneResult, gradual_schedule, prune_, prune_and_retrain,
                                  prune_in_steps)
from farm.compress.quantization import (
    KMeansQuant, LinearQuant, LogQuant, QuantResult, quant_config, quantize_, quantize_and_finetune)
from farm.compress.search import GuardedResult, SensitivityResult, guarded_prune, sensitivity_scan
from farm.compress.sparse_tensor import SparseTensor
from farm.compress.training import TrainConfig, TrainResult, evaluate, recalibrate_bn, train

__all__ = [
    "SparseTensor", "TrainConfig", "TrainResult", "evaluate", "recalibrate_bn", "train",
    "CompressedModel", "SizeReport", "load_compressed", "save_compressed",
    "MagnitudePruning", "PruneResult", "gradual_schedule", "prune_", "prune_and_retrain", "prune_in_steps",
    "KMeansQuant", "LinearQuant", "LogQuant", "QuantResult", "quant_config", "quantize_",
    "quantize_and_finetune", "GuardedResult", "SensitivityResult", "guarded_prune", "sensitivity_scan",
]
