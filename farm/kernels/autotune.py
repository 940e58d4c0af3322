"""Measure the candidate tile configs of one layer at one input shape and keep the fastest that
computes the right thing. Results go to the on-disk tuning cache (farm.kernels.tuning)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from farm.kernels import runtime, tuning
from farm.kernels.csrconv.config import TileConfig
from farm.kernels.timing import time_graph

# A tuning run rejects a config whose output is off by more than this (relative L2 norm).
TUNE_TOL = {torch.float32: 1e-4, torch.float16: 3e-3}


@dataclass
class TuneResult:
    config: TileConfig
    ms: float
    tried: list[dict]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _compile_ahead(layer, shape, dtype, configs) -> None:
    """Compile every candidate's source at once, on all cores (nvcc runs outside the GIL): the
    generated family takes seconds per candidate, which one after another would add up. Any
    failure here is left for the measuring loop, which rejects that config with the reason."""
    from farm.kernels.compile import precompile

    sources = []
    for config in configs:
        try:
            sources.append(layer.kernel_source(shape, dtype, config))
        except Exception:  # noqa: BLE001 - the measuring loop meets it again and records it
            pass
    try:
        precompile(sources, runtime.arch())
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "SoftTimeLimitExceeded":  # Celery's: must stop the job
            raise


def tune(layer, shape, dtype, device, configs: list[TileConfig] | None = None,
         runs: int = 10, inner: int = 5) -> TuneResult:
    """layer: a SparseConv2d. Times every candidate (CUDA graph replays), records all."""
    configs = configs or layer.candidate_configs(shape)
    _compile_ahead(layer, shape, dtype, configs)
    g = torch.Generator(device=device).manual_seed(1234)
    x = torch.randn(shape, generator=g, device=device).to(dtype)
    ref = layer.reference(x, dtype=torch.float64)
    tried, best = [], None
    stream = runtime.stream()
    stream.wait_stream(torch.cuda.current_stream())
    for config in configs:
        row = {"config": config.name}
        try:
            plan = layer.make_plan(shape, dtype, config, device)
            with torch.cuda.stream(stream):
                y = torch.full(ref.shape, float("nan"), device=device, dtype=dtype)
                layer.run(plan, x, out=y)
            stream.synchronize()
            row["rel_err"] = err = rel_err(y, ref)
            if err > TUNE_TOL[dtype]:
                row["rejected"] = "wrong output"
            else:
                row["ms"] = ms = time_graph(lambda: layer.run(plan, x, out=y), runs=runs, inner=inner,
                                            stream=stream)
                if best is None or ms < best[1]:
                    best = (config, ms)
        except Exception as exc:  # a config that cannot compile or launch is skipped, not fatal
            # Celery's soft time limit is an Exception too: it must stop the job, not reject a
            # config. Matched by name because kernels must not import celery.
            if type(exc).__name__ == "SoftTimeLimitExceeded":
                raise
            row["rejected"] = f"{type(exc).__name__}: {exc}"[:200]
        tried.append(row)
    if best is None:
        raise RuntimeError(f"no tile config ran correctly for {layer.extra_repr()}: {tried}")
    tuning.store(layer.tuning_key(shape, dtype), best[0], best[1], tried)
    return TuneResult(best[0], best[1], tried)
