"""sparsify(model): swap pruned Conv2d (+BatchNorm, +ReLU, +residual add) for SparseConv2d.

What is fused: torchvision-style Bottleneck/BasicBlock blocks become FusedBlock (the last conv
adds the shortcut and applies ReLU in its epilogue); a Conv2d followed by a BatchNorm2d is
folded, found either as consecutive Sequential entries or as attributes named convN/bnN (the
pattern of torchvision and farm.models). A layer is kept dense (cuDNN, BN folded) when it is not
sparse enough, or, given an input_shape on a GPU, when cuDNN measures faster.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from farm.compress.sparse_tensor import SparseTensor
from farm.kernels import runtime, tuning
from farm.kernels.conv import DTYPES, DenseConv2d, FusedConv, SparseConv2d, untuned

MIN_SPARSITY = 0.5  # below this a sparse kernel has no chance against cuDNN


class FusedBlock(nn.Module):
    """A ResNet block: conv chain, optional downsample; the last conv adds the shortcut + ReLU."""

    def __init__(self, convs: list[FusedConv], downsample: FusedConv | None):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.downsample = downsample

    def forward(self, x):
        identity = self.downsample(x) if self.downsample is not None else x
        out = x
        for conv in self.convs[:-1]:
            out = conv(out)
        return self.convs[-1](out, residual=identity)


def _sparsity(conv: nn.Conv2d) -> float:
    return float((conv.weight == 0).float().mean())


class _Maker:
    def __init__(self, dtype, min_sparsity, weights: dict[str, SparseTensor] | None, fuse_dense: bool = True):
        self.dtype, self.min_sparsity, self.weights = dtype, min_sparsity, weights or {}
        self.fuse_dense = fuse_dense
        self.made: list[tuple[str, FusedConv, nn.Conv2d, nn.Module | None]] = []

    def __call__(self, name: str, conv: nn.Conv2d, bn, relu: bool) -> FusedConv:
        record = self.weights.get(f"{name}.weight")
        sparse_ok = conv.groups == 1 and conv.padding_mode == "zeros" and (
            record is not None or _sparsity(conv) >= self.min_sparsity)
        if sparse_ok:
            m = SparseConv2d.from_conv(conv, bn, weight=record, dtype=self.dtype, relu=relu)
        else:
            m = DenseConv2d(conv, bn, relu=relu, fuse=self.fuse_dense)
        self.made.append((name, m, conv, bn))
        return m


def _is_block(m: nn.Module) -> bool:
    names = {n for n, _ in m.named_children()}
    return {"conv1", "bn1", "conv2", "bn2", "relu"} <= names and (
        "downsample" in names or type(m).__name__ in ("BasicBlock", "Bottleneck")) and all(
        isinstance(getattr(m, n, None), nn.Conv2d) for n in ("conv1", "conv2")) and (
        getattr(m, "downsample", None) is None or isinstance(m.downsample, nn.Sequential))


def _fuse_block(prefix: str, blk: nn.Module, make: _Maker) -> FusedBlock:
    convs, i = [], 1
    while isinstance(getattr(blk, f"conv{i}", None), nn.Conv2d):
        convs.append(make(f"{prefix}conv{i}", getattr(blk, f"conv{i}"), getattr(blk, f"bn{i}"), True))
        i += 1
    down = None
    if blk.downsample is not None:
        conv, bn = blk.downsample[0], blk.downsample[1] if len(blk.downsample) > 1 else None
        down = make(f"{prefix}downsample.0", conv, bn, False)
    return FusedBlock(convs, down)


def _stem_relu(module: nn.Module, name: str) -> bool:
    """torchvision's ResNet applies its own `relu` once, right after conv1 + bn1 (the blocks have
    their own): that ReLU can join the stem's epilogue. At batch 32 on an H100 the stem's separate
    bias and ReLU passes over a 32x64x112x112 tensor cost ~0.16 ms (bench/profile_model.py)."""
    return (type(module).__name__ == "ResNet" and name == "conv1"
            and isinstance(getattr(module, "relu", None), nn.ReLU))


def _walk(module: nn.Module, prefix: str, make: _Maker) -> None:
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        keys = list(children)
        for i, k in enumerate(keys):
            m = children[k]
            if not isinstance(m, nn.Conv2d):
                continue
            nxt = children[keys[i + 1]] if i + 1 < len(keys) else None
            bn = nxt if isinstance(nxt, nn.BatchNorm2d) else None
            after = children[keys[i + 2]] if bn is not None and i + 2 < len(keys) else (nxt if bn is None else None)
            relu = isinstance(after, nn.ReLU)
            module._modules[k] = make(prefix + k, m, bn, relu)
            if bn is not None:
                module._modules[keys[i + 1]] = nn.Identity()
            if relu:
                module._modules[keys[i + 2] if bn is not None else keys[i + 1]] = nn.Identity()
        children = dict(module.named_children())
    for name, child in children.items():
        if _is_block(child):
            module._modules[name] = _fuse_block(f"{prefix}{name}.", child, make)
        elif isinstance(child, nn.Conv2d) and not isinstance(module, nn.Sequential):
            bn_name = name.replace("conv", "bn", 1) if name.startswith("conv") else None
            bn = getattr(module, bn_name, None) if bn_name else None
            bn = bn if isinstance(bn, nn.BatchNorm2d) else None
            relu = bn is not None and _stem_relu(module, name)
            module._modules[name] = make(prefix + name, child, bn, relu)
            if bn is not None:
                module._modules[bn_name] = nn.Identity()
            if relu:
                module._modules["relu"] = nn.Identity()
        elif not isinstance(child, FusedConv):
            _walk(child, f"{prefix}{name}.", make)


def _cast_rest(model: nn.Module, dtype: torch.dtype) -> None:
    """The layers sparsify left alone (the classifier, pooling's neighbours) take the activation
    dtype; the fused convs keep their fp32 epilogue arrays, which the kernels read as floats."""
    for m in model.modules():
        if isinstance(m, FusedConv):
            continue
        for p in m.parameters(recurse=False):
            p.data = p.data.to(dtype)
        for name, b in m.named_buffers(recurse=False):
            if b.is_floating_point():
                m._buffers[name] = b.to(dtype)


def sparsify(model: nn.Module, *, dtype: torch.dtype = torch.float32, keep_dense_if_slower: bool = True,
             input_shape: tuple[int, ...] | None = None, min_sparsity: float = MIN_SPARSITY,
             weights: dict[str, SparseTensor] | None = None, progress=None, fuse_dense: bool = True) -> nn.Module:
    """A copy of `model` (eval mode) with its pruned convs replaced by SparseConv2d.

    weights: compressed records by parameter name ("layer1.0.conv1.weight"), e.g.
    load_compressed(path).tensors, so quantized weights run as stored. input_shape (with a GPU):
    measure each sparse layer against cuDNN at that shape and keep the faster (a model given on
    the CPU comes back on the GPU it was measured on); `progress` then
    gets {"layer", "done", "of", "sparse"} after each layer (a first tuning compiles: minutes
    for a large model). fuse_dense: the layers kept dense run conv + bias (+ add) + ReLU as one
    cuDNN call where cuDNN has one (DenseConv2d); False leaves the epilogue to eager kernels.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be float32 or float16, got {dtype}")
    model = copy.deepcopy(model).eval()
    make = _Maker(dtype, min_sparsity, weights, fuse_dense)
    with torch.no_grad():
        _walk(model, "", make)
    if dtype != torch.float32:
        _cast_rest(model, dtype)
    if keep_dense_if_slower and input_shape is not None and runtime.available():
        keep_faster(model, input_shape, dtype, make.made, progress, fuse_dense)
    return model


def layer_inputs(model: nn.Module, input_shape, dtype, device) -> dict[nn.Module, tuple]:
    """Input shape of every FusedConv, from one forward pass with the sparse layers on their
    reference path (nothing tuned or compiled here; callers tune layer by layer)."""
    shapes = {}

    def record(mod, args):  # a pre-hook must return None, or it replaces the arguments
        shapes.setdefault(mod, tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, FusedConv)]
    try:
        with torch.no_grad(), untuned():
            model(torch.randn(input_shape, device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def keep_faster(model, input_shape, dtype, made, progress=None, fuse_dense: bool = True) -> list[dict]:
    """Time each sparse layer against its dense twin at its real input shape; swap in the faster."""
    first = next(model.parameters(), None)
    if first is not None and first.is_cuda:
        device = first.device
    else:  # a model still on the CPU is timed on the GPU (on the CPU only in tests with stand-ins)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device=device)
    shapes = layer_inputs(model, input_shape, dtype, device)
    decisions = []
    stream = runtime.stream()
    todo = [(name, m, conv, bn) for name, m, conv, bn in made if isinstance(m, SparseConv2d) and m in shapes]
    # one pass's activations against L2: whether a layer meets its code and weights there again
    activation_bytes = sum(math.prod(s) for s in shapes.values()) * torch.finfo(dtype).bits // 8
    timing = tuning.model_timing(activation_bytes, device)
    with tuning.timing_for(timing):
        for name, m, conv, bn in todo:
            dense = DenseConv2d(conv, bn, relu=m.relu, fuse=fuse_dense).to(device)
            decisions.append({"layer": name, **_decide(m, dense, shapes[m], dtype, stream)})
            if not decisions[-1]["sparse"]:
                _replace(model, m, dense)
            if progress:
                progress({"layer": name, "done": len(decisions), "of": len(todo), "sparse": decisions[-1]["sparse"]})
    model._farm_decisions = decisions
    model._farm_timing = timing
    return decisions


def _decide(sparse: SparseConv2d, dense: DenseConv2d, shape, dtype, stream) -> dict:
    """Tune the sparse layer, time it and its dense twin as tuning.active() says."""
    x = torch.randn(shape, device=dense.bias.device, dtype=dtype)
    with torch.no_grad():
        plan = sparse.plan_for(shape, dtype, x.device)
        t_sparse = tuning.measure(lambda: sparse.run(plan, x), (x,), stream=stream, runs=50, inner=10)
        t_dense = tuning.measure(lambda: dense(x), (x,), stream=stream, runs=50, inner=10)
    return {"sparse_ms": t_sparse, "dense_ms": t_dense, "sparse": t_sparse <= t_dense, "timing": tuning.active()}


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in model.modules():
        for k, child in parent._modules.items():
            if child is old:
                parent._modules[k] = new
