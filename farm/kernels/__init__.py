"""Direct sparse convolution on NVIDIA GPUs (PyCUDA, run-time compiled), with a CPU reference path.

    from farm.kernels import sparsify, available
    fast = sparsify(pruned_model, input_shape=(32, 3, 224, 224))   # measures, keeps what is faster

Everything here imports and runs without a GPU or PyCUDA: SparseConv2d then computes F.conv2d on
its dense-decoded weights; benchmark functions raise GPUUnavailable.
"""

from farm.kernels.bench import benchmark_layers, benchmark_model
from farm.kernels.conv import DenseConv2d, SparseConv2d
from farm.kernels.env import environment
from farm.kernels.runtime import GPUUnavailable, available
from farm.kernels.sparsify import FusedBlock, sparsify

__all__ = [
    "GPUUnavailable", "SparseConv2d", "DenseConv2d", "FusedBlock", "available", "environment",
    "sparsify", "benchmark_layers", "benchmark_model",
]
