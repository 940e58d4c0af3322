"""Weight quantization of the nonzeros only (zeros stay exactly zero, so sparsity is preserved).

- LinearQuant(bits): symmetric, one scale per output channel; value = (code - 2^(b-1)) * scale.
  A nonzero never rounds to zero: its magnitude is at least one step (sparsity stays exact).
- LogQuant(bits): power-of-two levels, a sign and a (b-1)-bit exponent below the layer's largest.
- KMeansQuant(bits): a per-layer codebook of 2^b centroids (linear init, Lloyd), whose centroids are
  fine-tuned by retraining as in Deep Compression (Han et al. 2016): each step a cluster moves by
  the mean of its members' updates, and all members stay equal to their centroid.

Results are SparseTensors (codes + scales/codebook), the form the kernels decode in-kernel.

    tensors = quantize_(model, KMeansQuant(4))
    result = quantize_and_finetune(model, data, KMeansQuant(4), TrainConfig(epochs=3))
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn

from farm.compress.layers import layer_rows, overall, weight_layers
from farm.compress.sparse_tensor import SparseTensor
from farm.compress.training import (Callback, StepHooks, TrainConfig, check_batches, evaluate, fit, frozen_copy,
                                   pick_device, recalibrate_bn)
from farm.errors import InvalidSpec

SCHEMES = ("linear", "log", "kmeans")
ATTR = "farm_quantized"  # the model attribute where quantize_ leaves its SparseTensors


@dataclass
class Quantization:
    bits: int
    skip: tuple[str, ...] = ()      # state_dict keys / glob patterns of weights left in fp32
    # Round everything that is not a code (BatchNorm, biases, codebooks, scales) to fp16 values,
    # so the compressed file stores it in half the bytes, losslessly from then on.
    fp16_rest: bool = False
    # Fold BatchNorm's running statistics into its scale and shift (the same function in eval
    # mode); the statistics left are constants, which the file stores as one number each.
    fold_bn: bool = False
    # quantize_and_finetune: batches of training images that re-estimate BatchNorm's statistics
    # right after the one-shot quantization (0: off). Without it a 95%-sparse ResNet-20 measured
    # 21.5% one-shot on one seed of three (docs/RESULTS.md, run 18), and a user who asks for no
    # fine-tuning would keep that model.
    bn_recalibration: int = 20
    scheme = "none"

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise InvalidSpec(f"bits must be an integer from 2 to 8, got {self.bits!r}")
        check_batches(self.bn_recalibration)
        self.skip = tuple(self.skip)

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, **asdict(self)}

    @staticmethod
    def from_dict(d: dict) -> "Quantization":
        """The config to_dict wrote, of the right class (JSON turns tuples into lists)."""
        d = dict(d)
        return quant_config(d.pop("scheme"), d.pop("bits"), **{**d, "skip": tuple(d.get("skip", ()))})


@dataclass
class LinearQuant(Quantization):
    scheme = "linear"


@dataclass
class LogQuant(Quantization):
    scheme = "log"


@dataclass
class KMeansQuant(Quantization):
    iterations: int = 30            # Lloyd iterations from the linear initialisation
    scheme = "kmeans"


def quant_config(scheme: str, bits: int, **options) -> Quantization:
    """A config by scheme name, as the CLI and job specs give it."""
    classes = {"linear": LinearQuant, "log": LogQuant, "kmeans": KMeansQuant}
    if scheme not in classes:
        raise InvalidSpec(f"unknown quantization scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    return classes[scheme](bits, **options)


# --- one layer: float weight -> (codes of the nonzeros, scales or codebook) -------------------

def _csr(w: Tensor) -> tuple[np.ndarray, np.ndarray, Tensor, Tensor]:
    """row_ptr, col_idx, the flat indices and the values of the nonzeros, row-major."""
    flat = w.detach().reshape(w.shape[0], -1)
    rows, cols = torch.nonzero(flat, as_tuple=True)
    row_ptr = np.zeros(flat.shape[0] + 1, dtype=np.int64)
    np.add.at(row_ptr, rows.cpu().numpy() + 1, 1)
    index = rows * flat.shape[1] + cols
    return np.cumsum(row_ptr), cols.cpu().numpy().astype(np.int32), index, flat.reshape(-1)[index].float()


def _linear(values: Tensor, rows: Tensor, n_rows: int, bits: int) -> tuple[Tensor, Tensor]:
    qmax = (1 << (bits - 1)) - 1
    peak = torch.zeros(n_rows, device=values.device).scatter_reduce(0, rows, values.abs(), "amax")
    scales = torch.where(peak > 0, peak / qmax, torch.ones_like(peak))
    q = torch.round(values / scales[rows]).clamp(-qmax, qmax)
    q = torch.where(q == 0, torch.sign(values), q)  # a nonzero stays nonzero
    return (q + (1 << (bits - 1))).to(torch.uint8), scales


def _log_codebook(values: Tensor, bits: int) -> Tensor:
    levels = 1 << (bits - 1)
    top = torch.round(torch.log2(values.abs().max())).item() if len(values) else 0.0
    mags = 2.0 ** (top - torch.arange(levels, dtype=torch.float32))
    return torch.cat([mags, -mags])  # code k < levels: +2^(top-k); k >= levels: negative


def _log(values: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    levels = 1 << (bits - 1)
    codebook = _log_codebook(values, bits).to(values.device)
    top = torch.log2(codebook[0])
    k = (top - torch.round(torch.log2(values.abs()))).clamp(0, levels - 1)
    codes = k + levels * (values < 0)
    return codes.to(torch.uint8), codebook


def _kmeans(values: Tensor, bits: int, iterations: int) -> tuple[Tensor, Tensor]:
    k = 1 << bits
    if len(values) == 0:
        return torch.zeros(0, dtype=torch.uint8, device=values.device), torch.zeros(k, device=values.device)
    # Linear initialisation over [min, max]: Deep Compression found it keeps the rare large weights.
    centroids = torch.linspace(values.min().item(), values.max().item(), k, device=values.device)
    for _ in range(iterations):
        codes = _nearest(values, centroids)
        sums = torch.zeros(k, device=values.device).index_add_(0, codes, values)
        counts = torch.zeros(k, device=values.device).index_add_(0, codes, torch.ones_like(values))
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    codes = _nearest(values, centroids)
    return codes.to(torch.uint8), _nonzero_levels(centroids)


def _nearest(values: Tensor, centroids: Tensor) -> Tensor:
    order = torch.argsort(centroids)
    sorted_c = centroids[order]
    mid = (sorted_c[1:] + sorted_c[:-1]) / 2
    if values.is_cuda:
        return order[torch.bucketize(values, mid)]
    # numpy's searchsorted is about 10x faster than torch's on a CPU.
    return order[torch.from_numpy(np.searchsorted(mid.numpy(), values.numpy(), side="left"))]


def _nonzero_levels(codebook: Tensor) -> Tensor:
    """A level of exactly 0 would turn nonzeros into zeros; nudge it to the smallest float."""
    tiny = torch.finfo(torch.float32).tiny
    return torch.where(codebook == 0, torch.full_like(codebook, tiny), codebook)


def quantize_tensor(w: Tensor, quant: Quantization) -> SparseTensor:
    """One weight's nonzeros to codes + scales/codebook; zeros are not stored."""
    row_ptr, col_idx, _, values = _csr(w)
    rows = torch.repeat_interleave(torch.arange(w.shape[0], device=w.device),
                                   torch.from_numpy(np.diff(row_ptr)).to(w.device))
    st = SparseTensor(tuple(w.shape), row_ptr, col_idx, scheme=quant.scheme, bits=quant.bits)
    if quant.scheme == "linear":
        codes, scales = _linear(values, rows, w.shape[0], quant.bits)
        st.scales = scales.cpu().numpy().astype(np.float32)
    elif quant.scheme == "log":
        codes, codebook = _log(values, quant.bits)
        st.codebook = codebook.cpu().numpy().astype(np.float32)
    elif quant.scheme == "kmeans":
        codes, codebook = _kmeans(values, quant.bits, quant.iterations)
        st.codebook = codebook.cpu().numpy().astype(np.float32)
    else:
        raise InvalidSpec(f"unknown quantization scheme {quant.scheme!r}; choose from {', '.join(SCHEMES)}")
    st.codes = codes.cpu().numpy().astype(np.uint8)
    return st


def quantized_layers(model: nn.Module, quant: Quantization) -> dict[str, nn.Parameter]:
    return {n: p for n, p in weight_layers(model).items()
            if not any(fnmatch.fnmatch(n, pattern) for pattern in quant.skip)}


@torch.no_grad()
def quantize_(model: nn.Module, quant: Quantization) -> dict[str, SparseTensor]:
    """Quantize every conv/linear weight (but those in quant.skip) in place, one-shot; returns the
    SparseTensors by weight key and also leaves them on the model as `model.farm_quantized`, where
    save_compressed finds them."""
    tensors = {}
    for name, w in quantized_layers(model, quant).items():
        tensors[name] = quantize_tensor(w, quant)
        w.copy_(tensors[name].to_dense().to(w.device, w.dtype))
    _compact_rest(model, tensors, quant)
    setattr(model, ATTR, tensors)
    return tensors


def _compact_rest(model: nn.Module, tensors: dict[str, SparseTensor], quant: Quantization) -> None:
    if quant.fold_bn:
        fold_bn_stats_(model)
    if quant.fp16_rest:
        round_rest_fp16_(model, tensors)


@torch.no_grad()
def fold_bn_stats_(model: nn.Module) -> None:
    """y = (x - mean) / sqrt(var + eps) * gamma + beta  ->  mean = 0, var + eps = 1,
    gamma' = gamma / sqrt(var + eps), beta' = beta - mean * gamma'. Eval-mode output unchanged
    up to rounding; training mode would re-learn the statistics."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats:
            scale = m.weight / torch.sqrt(m.running_var + m.eps)
            m.bias.sub_(m.running_mean * scale)
            m.weight.copy_(scale)
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - m.eps)


@torch.no_grad()
def round_rest_fp16_(model: nn.Module, tensors: dict[str, SparseTensor]) -> None:
    """Round codebooks, scales and every float tensor that is not a quantized weight to fp16 values."""
    for st in tensors.values():
        for attr in ("codebook", "scales"):
            if getattr(st, attr) is not None:
                rounded = getattr(st, attr).astype(np.float16).astype(np.float32)
                if attr == "codebook":
                    rounded = _nonzero_levels(torch.from_numpy(rounded)).numpy()
                setattr(st, attr, rounded)
    state = model.state_dict()
    for name, t in state.items():
        if name in tensors:
            t.copy_(tensors[name].to_dense().to(t.device, t.dtype))
        elif t.dtype == torch.float32:
            t.copy_(t.half().float())


# --- fine-tuning -----------------------------------------------------------------------------

class SharedWeightHooks(StepHooks):
    """k-means: after each update, every cluster takes the mean of its members, who all take it
    (the shared-weight update of Deep Compression); zeros are put back to zero."""

    graph_safe = True  # after_update reads only tensors made here; captured with the step

    def __init__(self, model: nn.Module, tensors: dict[str, SparseTensor]):
        params = dict(model.named_parameters())
        self.layers = []
        for name, st in tensors.items():
            w = params[name]
            # Index by coordinates, not w.view(-1): on CUDA the weights are channels_last.
            flat_index = torch.unravel_index(_flat_index(st).to(w.device), tuple(w.shape))
            codes = torch.from_numpy(st.codes.astype(np.int64)).to(w.device)
            self.layers.append((name, w, flat_index, codes, len(st.codebook)))
        self.tensors = tensors

    @torch.no_grad()
    def after_update(self, step: int) -> None:
        for _, w, index, codes, k in self.layers:
            values = w[index].float()
            sums = torch.zeros(k, device=w.device).index_add_(0, codes, values)
            counts = torch.zeros(k, device=w.device).index_add_(0, codes, torch.ones_like(values))
            centroids = _nonzero_levels(sums / counts.clamp(min=1))
            w.zero_()
            w[index] = centroids[codes].to(w.dtype)

    @torch.no_grad()
    def finish(self) -> None:
        for name, w, index, codes, k in self.layers:
            values = w[index].float()
            sums = torch.zeros(k, device=w.device).index_add_(0, codes, values)
            counts = torch.zeros(k, device=w.device).index_add_(0, codes, torch.ones_like(values))
            old = torch.from_numpy(self.tensors[name].codebook).to(w.device)
            self.tensors[name].codebook = torch.where(counts > 0, sums / counts.clamp(min=1), old) \
                .cpu().numpy().astype(np.float32)
            w.copy_(self.tensors[name].to_dense().to(w.device, w.dtype))


class StraightThroughHooks(StepHooks):
    """linear/log: the forward pass sees quantized weights, the update goes to float shadows
    (straight-through estimator); the codes are taken from the shadows at the end."""

    # before_forward makes new shadow tensors every step: a captured before_update would copy
    # from the first step's, long freed. Eager steps.
    graph_safe = False

    def __init__(self, model: nn.Module, tensors: dict[str, SparseTensor], quant: Quantization):
        params = dict(model.named_parameters())
        self.quant = quant
        self.layers = [(name, params[name], params[name].detach() != 0) for name in tensors]
        self.shadows: list[Tensor] = []
        self.tensors = tensors

    @torch.no_grad()
    def before_forward(self, step: int) -> None:
        self.shadows = [w.detach().clone() for _, w, _ in self.layers]
        for _, w, mask in self.layers:
            w.copy_(fake_quantize(w, mask, self.quant))

    @torch.no_grad()
    def before_update(self, step: int) -> None:
        for (_, w, mask), shadow in zip(self.layers, self.shadows):
            w.copy_(shadow)
            if w.grad is not None:
                w.grad.mul_(mask)

    @torch.no_grad()
    def after_update(self, step: int) -> None:
        for _, w, mask in self.layers:
            # A shadow may cross zero; keep it nonzero so the quantized sparsity stays exact.
            tiny = torch.finfo(w.dtype).tiny
            w.copy_(torch.where(mask, torch.where(w == 0, torch.full_like(w, tiny), w), torch.zeros_like(w)))

    @torch.no_grad()
    def finish(self) -> None:
        for name, w, mask in self.layers:
            self.tensors[name] = quantize_tensor(w * mask, self.quant)
            w.copy_(self.tensors[name].to_dense().to(w.device, w.dtype))


def fake_quantize(w: Tensor, mask: Tensor, quant: Quantization) -> Tensor:
    """The dense values quantize_tensor(w * mask) decodes to, computed on w's device without
    building the codes (no host round trip: this runs before every training step)."""
    w = torch.where(mask, w, torch.zeros_like(w)).float()
    if quant.scheme == "linear":
        qmax = (1 << (quant.bits - 1)) - 1
        peak = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True)
        scale = torch.where(peak > 0, peak / qmax, torch.ones_like(peak))
        q = torch.round(w / scale).clamp(-qmax, qmax)
        q = torch.where(q == 0, torch.sign(w), q)
        return q * scale
    if quant.scheme == "log":
        levels = 1 << (quant.bits - 1)
        nonzero = w != 0
        if not nonzero.any():
            return w
        top = torch.round(torch.log2(w.abs().max()))
        e = torch.round(torch.log2(torch.where(nonzero, w.abs(), torch.ones_like(w)))).clamp(top - levels + 1, top)
        return torch.where(nonzero, torch.sign(w) * torch.exp2(e), torch.zeros_like(w))
    raise InvalidSpec(f"fake_quantize handles linear and log, not {quant.scheme!r}")


def _flat_index(st: SparseTensor) -> Tensor:
    rows = np.repeat(np.arange(st.rows), np.diff(st.row_ptr))
    return torch.from_numpy(rows * st.cols + st.col_idx.astype(np.int64))


@dataclass
class QuantResult:
    accuracy: float
    accuracy_before: float        # the float model's, before quantizing
    accuracy_quantized: float     # right after quantizing (and re-estimating BatchNorm), before fine-tuning
    quantization: dict
    sparsity: float               # zeros over all conv/linear weights: unchanged by quantizing
    layers: list[dict]
    train: dict | None = None
    tensors: dict[str, SparseTensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "tensors"}
        return d


def quantize_and_finetune(model: nn.Module, data, quant: Quantization, config: TrainConfig, *,
                          device=None, callback: Callback | None = None, tta: bool = False,
                          teacher: nn.Module | None = None) -> QuantResult:
    """Quantize, then retrain for config.epochs keeping zeros at zero and weights on their levels."""
    device = pick_device(device)
    model.to(device)
    before = evaluate(model, data, device=device, tta=tta)
    if config.distill and teacher is None:
        teacher = frozen_copy(model)  # the model before quantizing
    # Fold and round only after fine-tuning: training-mode BatchNorm normalises with batch
    # statistics, so folded scale/shift would be a different function while training.
    tensors = quantize_(model, replace(quant, fold_bn=False, fp16_rest=False))
    if quant.bn_recalibration:
        recalibrate_bn(model, data, batches=quant.bn_recalibration, batch_size=config.batch_size,
                       device=device, seed=config.seed)
    quantized = evaluate(model, data, device=device, tta=tta)
    hooks = SharedWeightHooks(model, tensors) if quant.scheme == "kmeans" else \
        StraightThroughHooks(model, tensors, quant)
    result = fit(model, data, config, device=device, callback=callback, hooks=hooks, stage="quantize", tta=tta,
                 teacher=teacher)
    tensors = hooks.tensors
    accuracy = result.accuracy
    if quant.fp16_rest or quant.fold_bn:
        _compact_rest(model, tensors, quant)
        accuracy = evaluate(model, data, device=device, tta=tta)
    setattr(model, ATTR, tensors)
    rows = layer_rows(model)
    for row in rows:
        st = tensors.get(row["name"])
        row["scheme"], row["bits"] = (st.scheme, st.bits) if st else ("fp32", 32)
        row["levels"] = int(torch.unique(weight_layers(model)[row["name"]][weight_layers(model)[row["name"]] != 0]).numel())
    return QuantResult(accuracy, before, quantized, quant.to_dict(), overall(rows, prunable_only=False),
                       rows, result.to_dict(), tensors)
