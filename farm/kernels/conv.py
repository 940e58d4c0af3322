"""SparseConv2d: a Conv2d (+ folded BatchNorm, + fused residual add and ReLU) whose weights stay
compressed (a SparseTensor) and run through the csrconv kernel on the GPU, or through F.conv2d on
the dense-decoded weights where there is no GPU or no PyCUDA (the CPU reference path).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from farm.compress.sparse_tensor import SparseTensor
from farm.errors import InvalidSpec
from farm.kernels import runtime, tuning
from farm.kernels.csrbatch.family import BatchConfig, BatchPlan, batch_candidates
from farm.kernels.csrconv.config import TileConfig, candidates, variant_for
from farm.kernels.csrconv.launch import ConvShape, GpuTable, Plan
from farm.kernels.csrconv.table import build_table, pattern_hash, weight_format
from farm.kernels.csrgather.family import GatherConfig, GatherPlan, build_gather_table, gather_candidates
from farm.kernels.csrgen.family import GenConfig, GenPlan, gen_candidates, gen_source
from farm.kernels.csrgen.family import enabled as gen_enabled  # FARM_KERNEL_CSRGEN
from farm.kernels.csrtile.family import (
    StageConfig, StagePlan, build_stage_table, max_chunk_entries, stage_candidates)

DTYPES = {torch.float32: "fp32", torch.float16: "fp16"}
FUSED_DTYPES = (torch.float32, torch.float16)  # DenseConv2d's one-call cuDNN conv + bias + ReLU


class _Untuned(threading.local):
    on = False


_untuned = _Untuned()


@contextmanager
def untuned():
    """SparseConv2d layers run their reference path (F.conv2d of the decoded weights) inside:
    for a forward pass that is only there to learn shapes, which must not tune or compile
    (minutes for a big model at a large batch, before any progress could be shown)."""
    before, _untuned.on = _untuned.on, True
    try:
        yield
    finally:
        _untuned.on = before


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, bias) that conv+bn (eval) apply after the raw convolution."""
    k = conv.out_channels
    b = conv.bias.detach().float().cpu() if conv.bias is not None else torch.zeros(k)
    if bn is None:
        return torch.ones(k), b
    s = bn.weight.detach().float().cpu() / torch.sqrt(bn.running_var.float().cpu() + bn.eps)
    return s, s * (b - bn.running_mean.float().cpu()) + bn.bias.detach().float().cpu()


def conv_params(conv: nn.Conv2d) -> dict:
    if conv.groups != 1:
        raise InvalidSpec(f"grouped convolution (groups={conv.groups}) has no sparse kernel")
    if conv.padding_mode != "zeros":
        raise InvalidSpec(f"padding_mode {conv.padding_mode!r} has no sparse kernel")
    pad = conv.padding
    if isinstance(pad, str):
        if pad != "valid" and conv.stride != (1, 1):
            raise InvalidSpec("padding='same' needs stride 1")
        pad = (0, 0) if pad == "valid" else tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
    return {"stride": tuple(conv.stride), "padding": tuple(pad), "dilation": tuple(conv.dilation)}


class FusedConv(nn.Module):
    """Shared by the sparse and the dense (kept) layers: conv, per-channel scale and bias,
    optional residual add, optional ReLU, in that order."""

    relu: bool

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class DenseConv2d(FusedConv):
    """A layer kept dense (cuDNN) because it measured faster, with BN folded into its weights.

    fuse=True (on CUDA, for a conv followed by ReLU): one cuDNN call runs conv + bias (+ residual
    add) + ReLU (torch.cudnn_convolution_relu / _add_relu, cuDNN's fused operation graph), as our
    sparse epilogue does; fuse=False leaves bias, add and ReLU to separate kernels, as eager
    PyTorch runs a conv. A conv without ReLU has no such op and always takes the second road."""

    def __init__(self, conv: nn.Conv2d, bn=None, *, relu: bool = False, fuse: bool = True):
        super().__init__()
        scale, bias = fold_bn(conv, bn)
        w = conv.weight.detach().float().cpu() * scale[:, None, None, None]
        self.weight = nn.Parameter(w.to(conv.weight.device), requires_grad=False)
        self.bias = nn.Parameter(bias.to(conv.weight.device), requires_grad=False)
        self.params = conv_params(conv) if conv.groups == 1 else {
            "stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
        self.groups, self.relu, self.fuse = conv.groups, relu, fuse
        self._cast: tuple = ()

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, {self.params}, relu={self.relu}, fuse={self.fuse}"

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # Cast once, not on every call: in an fp16 model the kept layers hold fp32 parameters,
        # and a cast per forward is two extra kernels per layer in the graph.
        w, b = self.weight, self.bias
        if w.dtype == dtype:
            return w, b
        key = (dtype, w.data_ptr(), w._version, b.data_ptr(), b._version)
        if not self._cast or self._cast[0] != key:
            self._cast = (key, w.to(dtype), b.to(dtype))
        return self._cast[1], self._cast[2]

    def _fusable(self, x, residual) -> bool:
        # cuDNN's fused op: fp32/fp16 only, no autocast (the op does not cast), one group, the
        # residual in x's dtype; anything else takes the eager road, which handles them all.
        return (self.fuse and self.relu and x.is_cuda and self.groups == 1 and x.dtype in FUSED_DTYPES
                and (residual is None or residual.dtype == x.dtype) and not torch.is_autocast_enabled("cuda"))

    def forward(self, x, residual=None):
        w, b = self._weights(x.dtype)
        p = self.params
        if self._fusable(x, residual):
            if residual is None:
                return torch.cudnn_convolution_relu(x, w, b, p["stride"], p["padding"], p["dilation"], self.groups)
            return torch.cudnn_convolution_add_relu(x, w, residual, 1.0, b, p["stride"], p["padding"],
                                                    p["dilation"], self.groups)
        y = F.conv2d(x, w, b, groups=self.groups, **p)
        if residual is not None:
            y = y + residual
        return F.relu(y) if self.relu else y


class SparseConv2d(FusedConv):
    def __init__(self, weight: SparseTensor, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                 scale: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32, relu: bool = False):
        super().__init__()
        if len(weight.shape) != 4:
            raise InvalidSpec(f"SparseConv2d needs a 4-d weight, got shape {weight.shape}")
        if dtype not in DTYPES:
            raise InvalidSpec(f"activation dtype {dtype} unsupported; use float32 or float16")
        k = weight.shape[0]
        self.weight_record = weight
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.register_buffer("scale", (torch.ones(k) if scale is None else scale).float().clone())
        self.register_buffer("bias", (torch.zeros(k) if bias is None else bias).float().clone())
        self.act_dtype, self.relu = dtype, relu
        self._tables: dict = {}
        self._plans: dict = {}
        self._dense = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, *,
                  weight: SparseTensor | None = None, dtype: torch.dtype = torch.float32,
                  relu: bool = False) -> "SparseConv2d":
        """Conv (+ BN folded into the epilogue). `weight` is the compressed record (e.g. from
        load_compressed); without it the conv's own weights are stored (fp16 for fp16 layers)."""
        params = conv_params(conv)
        if weight is None:
            weight = SparseTensor.from_dense(conv.weight.detach().cpu(), DTYPES.get(dtype, "fp32"))
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise InvalidSpec(f"weight shape {weight.shape} does not match conv {tuple(conv.weight.shape)}")
        scale, bias = fold_bn(conv, bn)
        m = cls(weight, scale=scale, bias=bias, dtype=dtype, relu=relu, **params)
        return m.to(conv.weight.device)

    @property
    def sparsity(self) -> float:
        return self.weight_record.sparsity

    def extra_repr(self) -> str:
        w = self.weight_record
        return (f"{w.shape[1]}, {w.shape[0]}, kernel_size={tuple(w.shape[2:])}, stride={self.stride}, "
                f"padding={self.padding}, sparsity={w.sparsity:.3f}, weights={w.scheme}, relu={self.relu}")

    # CPU reference path -------------------------------------------------------------------
    def dense_weight(self) -> torch.Tensor:
        """The weights the kernel computes with, decoded, with the epilogue scale folded in."""
        if self._dense is None:
            self._dense = self.weight_record.to_dense() * self.scale.cpu()[:, None, None, None]
        return self._dense

    def reference(self, x: torch.Tensor, residual=None, dtype=torch.float32) -> torch.Tensor:
        w = self.dense_weight().to(x.device, dtype)
        y = F.conv2d(x.to(dtype), w, self.bias.to(x.device, dtype), self.stride, self.padding, self.dilation)
        if residual is not None:
            y = y + residual.to(dtype)
        return F.relu(y) if self.relu else y

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.is_cuda and x.dtype in DTYPES and runtime.available() and not _untuned.on:
            return self._forward_gpu(x, residual)
        return self.reference(x, residual).to(x.dtype)

    # GPU path -------------------------------------------------------------------------------
    def conv_shape(self, shape) -> ConvShape:
        n, c, h, w = shape
        k, cw, kh, kw = self.weight_record.shape
        if c != cw:
            raise InvalidSpec(f"input has {c} channels, layer expects {cw}")
        return ConvShape(n, c, h, w, k, kh, kw, self.stride, self.padding, self.dilation)

    def table(self, rt: int, device) -> GpuTable:
        if rt not in self._tables:
            khw = tuple(self.weight_record.shape[2:])
            t = build_table(self.weight_record, khw, rt, channel_scale=self.scale.cpu().numpy())
            self._tables[rt] = GpuTable(t, device)
        return self._tables[rt]

    def stage_table(self, config: StageConfig | BatchConfig, geometry, device) -> tuple[GpuTable, int]:
        key = ("stage", config, geometry)
        if key not in self._tables:
            layout = config.table_view() if isinstance(config, BatchConfig) else config
            t, ck = build_stage_table(self.weight_record, geometry, layout, self.scale.cpu().numpy())
            self._tables[key] = (GpuTable(t, device), ck, max_chunk_entries(t))
        return self._tables[key]

    def gather_table(self, geometry, h: int, w: int, device) -> GpuTable:
        key = ("gather", geometry, h, w)
        if key not in self._tables:
            t = build_gather_table(self.weight_record, geometry, h, w, self.scale.cpu().numpy())
            self._tables[key] = GpuTable(t, device)
        return self._tables[key]

    def gen_code(self, cs, config: GenConfig, half: bool):
        """(PTX, channel groups) generated for this layer's weights; the batch is a launch argument.
        Not kept: the text is ~60 bytes per nonzero (140 MB for ResNet-50 at 90%), and
        generating it again takes a fraction of a second."""
        return gen_source(self.weight_record.to_dense().numpy(), self.scale.cpu().numpy(), cs, config, half)

    def make_plan(self, shape, dtype, config, device):
        cs = self.conv_shape(shape)
        if isinstance(config, GenConfig):
            half = dtype == torch.float16
            return GenPlan(*self.gen_code(cs, config, half), cs, config, half, device)
        if isinstance(config, GatherConfig):
            return GatherPlan(self.gather_table(cs.geometry, cs.h, cs.w, device), cs, config,
                              dtype == torch.float16)
        if isinstance(config, (StageConfig, BatchConfig)):
            table, ck, most = self.stage_table(config, cs.geometry, device)
            make = BatchPlan if isinstance(config, BatchConfig) else StagePlan
            return make(table, ck, cs, config, dtype == torch.float16, most)
        return Plan(self.table(config.rt, device), cs, config, dtype == torch.float16)

    def table_bytes(self, plan) -> int:
        if isinstance(plan, GenPlan):  # the weights are the code: 16 bytes of instruction each, per pixel of a thread
            return 16 * self.weight_record.nnz * plan.config.px
        e = plan.table.entries
        return e.numel() * e.element_size()

    def tuning_key(self, shape, dtype) -> str:
        w = self.weight_record
        return tuning.cache_key(runtime.gpu_name(), tuple(w.shape) + (shape[2], shape[3]) + self.stride
                                + self.padding + self.dilation, shape[0], DTYPES[dtype],
                                weight_format(w), f"sp{w.sparsity:.2f}|{pattern_hash(w)}")

    def candidate_configs(self, shape) -> list:
        """The kernel families: csrbatch (four images per staged load, from batch 2), csrtile
        (staged input, broadcast weights), csrconv (register tiles over output channels with a
        case switch; split-K for small batches), csrgather (a block per output channel,
        independent loads; small batches only) and csrgen (code generated for this layer's
        weights; from 1,024 output pixels, or with small blocks on 3x3 layers of 14x14 images and
        larger)."""
        cs = self.conv_shape(shape)
        oh, ow = cs.out_hw
        wfmt = weight_format(self.weight_record)
        return (gen_candidates(self.weight_record.nnz, cs)
                + gather_candidates(cs.geometry, cs.n, cs.c, cs.h, cs.w, oh, ow)
                + batch_candidates(cs.geometry, cs.k, cs.c, cs.n, oh, ow, wfmt)
                + stage_candidates(cs.geometry, cs.k, cs.c, oh, ow, wfmt)
                + candidates(cs.geometry, cs.k, cs.n * oh * ow))

    def kernel_source(self, shape, dtype, config) -> str:
        """The source one config compiles for this layer at this input shape."""
        cs = self.conv_shape(shape)
        wfmt, half = weight_format(self.weight_record), dtype == torch.float16
        if isinstance(config, GenConfig):
            return self.gen_code(cs, config, half)[0]
        if isinstance(config, (StageConfig, BatchConfig, GatherConfig)):
            return config.source(cs.geometry, half, wfmt)
        return variant_for(cs.geometry, config, half, wfmt).source()

    def kernel_sources(self, shape, dtype) -> list[str]:
        """Every source the candidates of this shape compile (to precompile without a GPU)."""
        return [self.kernel_source(shape, dtype, c) for c in self.candidate_configs(shape)]

    def plan_for(self, shape, dtype, device) -> Plan:
        key = (tuple(shape), dtype)
        if key not in self._plans:
            hit = tuning.lookup(self.tuning_key(shape, dtype))
            capturing = torch.cuda.is_current_stream_capturing()
            if hit is not None and hit["config"].get("family") == "gen" and (capturing or not gen_enabled()):
                hit = None  # csrgen left out by the setting (measure again) or unbuildable in a capture
            if hit is not None:
                config = tuning.config_from(hit)
            elif capturing:
                # cannot measure inside a capture, nor build csrgen's plan (ptxas, and a zeroed
                # buffer that a capture would only record): a fixed kernel
                config = next(c for c in self.candidate_configs(shape) if not isinstance(c, GenConfig))
            else:
                from farm.kernels.autotune import tune

                config = tune(self, shape, dtype, device).config
            self._plans[key] = self.make_plan(shape, dtype, config, device)
        return self._plans[key]

    def run(self, plan: Plan, x: torch.Tensor, residual=None, out=None) -> torch.Tensor:
        """Launch on our stream, ordered after the caller's stream and back."""
        oh, ow = plan.shape.out_hw
        y = out if out is not None else torch.empty((x.shape[0], plan.shape.k, oh, ow), dtype=x.dtype, device=x.device)
        if residual is not None:
            residual = residual.to(x.dtype).contiguous()
            if residual.shape != y.shape:
                raise InvalidSpec(f"residual shape {tuple(residual.shape)} != output {tuple(y.shape)}")
        ours, cur = runtime.stream(), torch.cuda.current_stream()
        if cur.cuda_stream != ours.cuda_stream:
            ours.wait_stream(cur)
        plan(x, y, self.bias, residual, self.relu)
        if cur.cuda_stream != ours.cuda_stream:
            cur.wait_stream(ours)
        return y

    def _forward_gpu(self, x, residual):
        x = x.contiguous()
        return self.run(self.plan_for(tuple(x.shape), x.dtype, x.device), x, residual)
