"""Benchmarks: our kernels against cuDNN (fp32, TF32, fp16 channels_last) and cuSPARSE SpMM on
the im2col matrix, per layer and whole model. Every figure is a median of >= 50 CUDA-graph replays
after warm-up, and a kernel's time is recorded only after its output matched F.conv2d (float64)
on fresh random inputs with the output poisoned first.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from farm.kernels import runtime, tuning
from farm.kernels.autotune import rel_err
from farm.kernels.conv import DTYPES, FusedConv, SparseConv2d
from farm.kernels.env import environment
from farm.kernels.timing import time_eager, time_graph

# Relative L2 error allowed against F.conv2d in float64 (quantized: against dequantized weights).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}
RUNS = 50


@contextlib.contextmanager
def tf32(enabled: bool):
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def ceilings(device="cuda") -> dict:
    """Measured copy bandwidth (read + write) and fp32 (no TF32) matmul rate of this GPU."""
    a = torch.empty(2**28, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    ms = time_eager(lambda: b.copy_(a), runs=20, inner=5)
    m = torch.randn(8192, 8192, device=device)
    with tf32(False):
        ms_mm = time_eager(lambda: m @ m, runs=10, inner=2)
    return {"copy_GBps": 2 * a.numel() / ms / 1e6, "fp32_TFLOPs": 2 * 8192**3 / ms_mm / 1e9}


def check(layer: SparseConv2d, plan, shape, dtype, device, residual: bool, draws: int = 2) -> float:
    """Worst relative error over fresh random inputs; output poisoned with NaN before each run."""
    worst = 0.0
    stream = runtime.stream()
    for i in range(draws):
        x = torch.randn(shape, device=device).to(dtype)
        oh, ow = plan.shape.out_hw
        res = torch.randn((shape[0], plan.shape.k, oh, ow), device=device).to(dtype) if residual else None
        ref = layer.reference(x, res, dtype=torch.float64)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            y = torch.full(ref.shape, float("nan"), device=device, dtype=dtype)
            layer.run(plan, x, res, out=y)
        stream.synchronize()
        worst = max(worst, rel_err(y, ref))
    return worst


def floor_ms(layer: SparseConv2d, shape, dtype, ceil: dict, table_bytes: int) -> float:
    """Fewest bytes (input, output, table once) over bandwidth vs nonzero FLOPs over fp32 rate."""
    n, c, h, w = shape
    oh, ow = layer.conv_shape(shape).out_hw
    el = torch.finfo(dtype).bits // 8
    nbytes = el * (n * c * h * w + n * layer.weight_record.shape[0] * oh * ow) + table_bytes
    flops = 2 * layer.weight_record.nnz * n * oh * ow
    return max(nbytes / ceil["copy_GBps"] / 1e6, flops / ceil["fp32_TFLOPs"] / 1e9)


def dense_baselines(conv_w: torch.Tensor, params: dict, shape, device, *, cusparse: bool = True) -> dict:
    """cuDNN fp32 / TF32 (NCHW and channels_last) / fp16 channels_last and cuSPARSE CSR SpMM on
    im2col, same layer."""
    torch.backends.cudnn.benchmark = True  # give cuDNN its best algorithm for this shape
    w = conv_w.to(device)
    x = torch.randn(shape, device=device)
    out = {}
    with torch.no_grad():
        with tf32(False):
            out["cudnn_fp32_ms"] = time_graph(lambda: F.conv2d(x, w, **params), runs=RUNS)
        with tf32(True):
            out["cudnn_tf32_ms"] = time_graph(lambda: F.conv2d(x, w, **params), runs=RUNS)
            # cuDNN's TF32 kernels are NHWC at heart: in channels_last it skips its transposes,
            # and a whole model in channels_last can be much faster (docs/BENCHMARKS.md)
            xc, wc = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
            out["cudnn_tf32_cl_ms"] = time_graph(lambda: F.conv2d(xc, wc, **params), runs=RUNS)
        xh = x.half().to(memory_format=torch.channels_last)
        wh = w.half().to(memory_format=torch.channels_last)
        out["cudnn_fp16_ms"] = time_graph(lambda: F.conv2d(xh, wh, **params), runs=RUNS)
        if cusparse:
            out.update(_cusparse(w, params, x))
    return out


def _cusparse(w, params, x) -> dict:
    k = w.shape[0]
    with warnings.catch_warnings():  # torch's "CSR support is in beta" note, once per job's output
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        ws = w.reshape(k, -1).to_sparse_csr()
    kh, kw = w.shape[2:]

    def im2col():
        cols = F.unfold(x, (kh, kw), dilation=params["dilation"], padding=params["padding"],
                        stride=params["stride"])
        return cols.transpose(0, 1).reshape(cols.shape[1], -1)

    cols = im2col()
    with tf32(False):
        try:
            spmm = time_eager(lambda: torch.sparse.mm(ws, cols), runs=RUNS)
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            # ..except Celery's soft time limit (an Exception too), which must stop the job;
            # matched by name because kernels must not import celery.
            if type(exc).__name__ == "SoftTimeLimitExceeded":
                raise
            return {"cusparse_error": str(exc)[:200]}
        ref = (w.reshape(k, -1).double() @ cols.double())
        err = rel_err(torch.sparse.mm(ws, cols), ref)
    return {"cusparse_ms": spmm + time_eager(im2col, runs=RUNS), "cusparse_spmm_ms": spmm,
            "im2col_ms": time_eager(im2col, runs=RUNS), "cusparse_rel_err": err}


def bench_layer(layer: SparseConv2d, shape, dtype, device, ceil: dict, *, name: str = "",
                baselines: dict | None = None, residual: bool = False) -> dict:
    """One row: tuned config, check, time, baselines, floor. Raises if the check fails."""
    plan = layer.plan_for(tuple(shape), dtype, device)
    err = check(layer, plan, shape, dtype, device, residual)
    row = {"layer": name, "shape": list(layer.weight_record.shape) + list(shape[2:]),
           "batch": shape[0], "dtype": DTYPES[dtype], "weight_scheme": layer.weight_record.scheme,
           "weight_bits": layer.weight_record.bits, "sparsity": round(layer.sparsity, 4),
           "config": plan.config.name, "max_rel_err": err}
    # what the tuner measured (every candidate, or none when the cache answered): a surprising
    # choice can be read from the file rather than guessed at
    hit = tuning.lookup(layer.tuning_key(tuple(shape), dtype))
    if hit and "tried" in hit:
        row["tuning"] = hit["tried"]
    if not err <= TOLERANCE[dtype]:
        row["failed"] = f"rel err {err:.3g} > {TOLERANCE[dtype]}"
        return row
    x = torch.randn(shape, device=device).to(dtype)
    oh, ow = plan.shape.out_hw
    y = torch.empty((shape[0], plan.shape.k, oh, ow), device=device, dtype=dtype)
    row["ours_ms"] = time_graph(lambda: layer.run(plan, x, out=y), runs=RUNS, stream=runtime.stream())
    row["table_bytes"] = layer.table_bytes(plan)
    row["floor_ms"] = floor_ms(layer, shape, dtype, ceil, row["table_bytes"])
    if baselines is None:
        w = layer.dense_weight()
        baselines = dense_baselines(w, {"stride": layer.stride, "padding": layer.padding,
                                        "dilation": layer.dilation}, shape, device)
    row.update(baselines)
    for k in ("cudnn_fp32_ms", "cudnn_tf32_ms", "cudnn_tf32_cl_ms", "cudnn_fp16_ms", "cusparse_ms"):
        if k in row:
            row["x_" + k[:-3]] = row[k] / row["ours_ms"]
    return row


def _sparse_model(model, dtype, weights=None):
    from farm.kernels.sparsify import sparsify

    has = any(isinstance(m, FusedConv) for m in model.modules())
    return model if has else sparsify(model, dtype=dtype, keep_dense_if_slower=False, weights=weights)


def benchmark_layers(model: nn.Module, input_shape, batch_sizes, *, device="cuda",
                     dtype: torch.dtype = torch.float32, weights: dict | None = None,
                     callback=None) -> list[dict]:
    """Per sparse layer of `model` (sparsified here if it is not yet; `weights`: compressed
    records by parameter name, e.g. load_compressed(path).tensors), at each batch size. A layer
    whose kernel output does not match F.conv2d gets no row. `callback` gets
    {"layer", "batch", "done", "of"} after each layer (tuning one can take seconds: compiling)."""
    runtime.require_gpu()
    from farm.kernels.sparsify import layer_inputs

    sm = _sparse_model(model, dtype, weights).to(device)
    ceil, env, rows = ceilings(device), environment(), []
    names = {m: n for n, m in sm.named_modules()}
    todo = [(b, m, shape) for b in batch_sizes
            for m, shape in layer_inputs(sm, (b, *input_shape[1:]), dtype, device).items()
            if isinstance(m, SparseConv2d)]
    for i, (b, m, shape) in enumerate(todo):
        row = bench_layer(m, shape, dtype, device, ceil, name=names[m])
        if "ours_ms" in row:
            rows.append({**row, "env": env, "ceilings": ceil})
        if callback:
            callback({"layer": names[m], "batch": b, "done": i + 1, "of": len(todo)})
    return rows


# benchmark_model's dense models, by the infix of their `dense_{infix}{precision}_ms` keys
DENSE_KINDS = {"": "as given", "folded_": "BN folded", "fused_": "cuDNN-fused",
               "fused_cl_": "cuDNN-fused, channels_last"}


def fastest_dense(row: dict, precision: str) -> tuple[float, str] | None:
    """The fastest dense model a benchmark_model row timed at this precision, and which it was."""
    found = [(row[k], name) for infix, name in DENSE_KINDS.items()
             if (v := row.get(k := f"dense_{infix}{precision}_ms")) and math.isfinite(v)]
    return min(found) if found else None


def time_model(model, x, stream=None, graphs: bool = True) -> float:
    with torch.no_grad():
        if graphs:
            return time_graph(lambda: model(x), runs=RUNS, inner=1, stream=stream)
        return time_eager(lambda: model(x), runs=RUNS, inner=1, stream=stream)


def capturable(model, x) -> bool:
    """Whether a CUDA graph can hold the model's forward: a user's model with a host sync in it
    (a .item(), a shape that depends on the data) cannot, and is then timed eagerly, on both
    sides alike, rather than failing the benchmark. Asked of an eager forward after a warm-up
    one (cuDNN's algorithm search may sync), not by a capture, whose failure breaks torch's
    random generator for the rest of the process (farm.compress.graphs)."""
    from farm.compress.graphs import host_sync

    with torch.no_grad():
        model(x)
        torch.cuda.synchronize()
        return host_sync(lambda: model(x)) is None


def benchmark_model(model: nn.Module, input_shape, batch_sizes, *, device="cuda",
                    dtype: torch.dtype = torch.float32, weights: dict | None = None,
                    callback=None) -> list[dict]:
    """Whole-model latency, CUDA graphs on both sides: dense fp32 / TF32 / fp16 vs sparsified.
    `dense_*_ms` time the model as given (BatchNorm as separate kernels, as PyTorch runs it);
    `dense_folded_*_ms` the same model with BN folded into the convs, in the blocks sparsify
    builds, every conv left to cuDNN (bias, ReLU and the residual add stay separate kernels, as
    PyTorch eager runs them; our sparse layers fuse them into the epilogue); `dense_fused_*_ms`
    the same again with conv + bias (+ add) + ReLU as one cuDNN call wherever cuDNN has one (the
    sparse models' kept-dense layers run that way too), `dense_fused_cl_*_ms` that in channels_last
    (cuDNN's fused kernels are NHWC; on NCHW tensors it transposes around them): the strictest
    dense baselines here are the faster of the fused two at each precision. max_rel_err
    compares the sparse model with the model's own forward in float64. `callback` gets
    {"layer": None, "batch", "done", "of"} after each batch size, and {"stage": "fp32" or
    "tf32", "layer", "batch", "done", "of"} after each layer is tuned and decided."""
    runtime.require_gpu()
    from farm.kernels.sparsify import sparsify

    env, rows = environment(), []
    torch.backends.cudnn.benchmark = True
    dense = model.eval().to(device)
    for b in batch_sizes:
        shape = (b, *input_shape[1:])
        x = torch.randn(shape, device=device)
        row = {"batch": b, "shape": list(shape), "dtype": DTYPES[dtype], "env": env}
        row["cuda_graphs"] = graphs = capturable(dense, x)
        timed = functools.partial(time_model, graphs=graphs)  # every side of the row alike
        with tf32(False):
            row["dense_fp32_ms"] = timed(dense, x)
        with tf32(True):
            row["dense_tf32_ms"] = timed(dense, x)
        # a copy: converting the model in place and back would leave its weights rounded to
        # fp16, and the sparse layers built from them after (csrgen bakes the values into code)
        dense16 = copy.deepcopy(dense).half().to(memory_format=torch.channels_last)
        row["dense_fp16_ms"] = timed(dense16, x.half().to(memory_format=torch.channels_last))
        del dense16
        for kind, fuse in (("folded", False), ("fused", True)):
            # min_sparsity 2: no conv qualifies, every one stays dense (cuDNN) with BN folded
            folded = sparsify(dense, min_sparsity=2.0, fuse_dense=fuse)
            with tf32(False):
                row[f"dense_{kind}_fp32_ms"] = timed(folded, x)
            with tf32(True):
                row[f"dense_{kind}_tf32_ms"] = timed(folded, x)
            if fuse:  # cuDNN's fused kernels are NHWC: on NCHW tensors it adds layout transposes
                folded = folded.to(memory_format=torch.channels_last)  # its own copy: convert in place
                xc = x.to(memory_format=torch.channels_last)
                with tf32(False):
                    row["dense_fused_cl_fp32_ms"] = timed(folded, xc)
                with tf32(True):
                    row["dense_fused_cl_tf32_ms"] = timed(folded, xc)
            folded = folded.half().to(memory_format=torch.channels_last)
            row[f"dense_{kind}_fp16_ms"] = timed(folded, x.half().to(memory_format=torch.channels_last))
            del folded
        def tuned(stage):
            return None if callback is None else lambda ev: callback({**ev, "stage": stage, "batch": b})

        with tf32(False):  # each layer kept sparse only where it beats cuDNN fp32 at its shape
            sm = sparsify(dense, dtype=dtype, input_shape=shape, weights=weights, progress=tuned("fp32"))
        xs = x.to(dtype)
        with torch.no_grad(), tf32(False):
            ref = dense.double()(x.double())
            dense.float()
            runtime.stream().wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(runtime.stream()):
                out = sm(xs)
            torch.cuda.synchronize()
        row["max_rel_err"] = rel_err(out, ref)
        row["sparse_layers"] = sum(isinstance(m, SparseConv2d) for m in sm.modules())
        row["dense_layers"] = sum(isinstance(m, nn.Conv2d) or (isinstance(m, FusedConv) and not isinstance(m, SparseConv2d)) for m in sm.modules())
        with tf32(False):
            row["sparse_ms"] = timed(sm, xs, stream=runtime.stream())
        with tf32(True):  # decided again against TF32: a layer stays sparse only if it beats TF32
            sm_tf32 = sparsify(dense, dtype=dtype, input_shape=shape, weights=weights, progress=tuned("tf32"))
            row["sparse_tf32_ms"] = timed(sm_tf32, xs, stream=runtime.stream())
        row["sparse_layers_tf32"] = sum(isinstance(m, SparseConv2d) for m in sm_tf32.modules())
        row["decisions"] = getattr(sm, "_farm_decisions", [])
        row["decisions_tf32"] = getattr(sm_tf32, "_farm_decisions", [])  # each layer against TF32
        row["layer_timing"] = getattr(sm, "_farm_timing", None)  # cold or warm (farm.kernels.tuning)
        rows.append(row)
        if callback:
            callback({"layer": None, "batch": b, "done": len(rows), "of": len(batch_sizes)})
    return rows
