"""Measure the candidate tile configs of one layer at one input shape and keep the fastest that
computes the right thing. Results go to the on-disk tuning cache (farm.kernels.tuning)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from farm.kernels import runtime, tuning
from farm.kernels.csrconv.config import TileConfig

# A tuning run rejects a config whose output is off by more than this (relative L2 norm).
TUNE_TOL = {torch.float32: 1e-4, torch.float16: 3e-3}
# The first pass times each candidate briefly; those within CONFIRM_MARGIN of the fastest (at
# most CONFIRM_MAX) are timed again, longer and interleaved, and the confirmed fastest wins, so
# one short measurement caught fast or slow (a clock dip, a neighbour) decides less. Prompted by
# l3 3x3 at 90%: a call chose a config timed at 0.0512 ms where the call before chose one that
# ran 0.0405 (kernels_layers-h200-2026-11-26{f,g}.json); whether noise was the cause is not known.
CONFIRM_MARGIN, CONFIRM_MAX, CONFIRM_RUNS = 0.15, 4, 20


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
         runs: int = 10) -> TuneResult:
    """layer: a SparseConv2d. Times every candidate (as tuning.TIMING says), records all."""
    configs = configs or layer.candidate_configs(shape)
    _compile_ahead(layer, shape, dtype, configs)
    g = torch.Generator(device=device).manual_seed(1234)
    x = torch.randn(shape, generator=g, device=device).to(dtype)
    ref = layer.reference(x, dtype=torch.float64)
    tried, timed = [], []
    stream = runtime.stream()
    stream.wait_stream(torch.cuda.current_stream())
    y = torch.empty(ref.shape, device=device, dtype=dtype)  # one output for all: batch 256 is big
    for config in configs:
        row = {"config": config.name}
        try:
            plan = layer.make_plan(shape, dtype, config, device)
            with torch.cuda.stream(stream):
                y.fill_(float("nan"))
                layer.run(plan, x, out=y)
            stream.synchronize()
            row["rel_err"] = err = rel_err(y, ref)
            if err > TUNE_TOL[dtype]:
                row["rejected"] = "wrong output"
            else:
                row["ms"] = tuning.measure(_call(layer, plan, x, y), (x,), stream=stream, runs=runs)
                timed.append((config, plan, row))
        except Exception as exc:  # a config that cannot compile or launch is skipped, not fatal
            # Celery's soft time limit is an Exception too: it must stop the job, not reject a
            # config. Matched by name because kernels must not import celery.
            if type(exc).__name__ == "SoftTimeLimitExceeded":
                raise
            row["rejected"] = f"{type(exc).__name__}: {exc}"[:200]
        tried.append(row)
    if not timed:
        raise RuntimeError(f"no tile config ran correctly for {layer.extra_repr()}: {tried}")
    config, ms = _confirm(layer, x, y, timed, stream)
    tuning.store(layer.tuning_key(shape, dtype), config, ms, tried)
    return TuneResult(config, ms, tried)


def _call(layer, plan, x, y):
    return lambda: layer.run(plan, x, out=y)


def finalists(timed: list, margin: float = CONFIRM_MARGIN, most: int = CONFIRM_MAX) -> list:
    """The first pass's fastest entries (each ending in a row with "ms") within `margin` of the
    fastest, at most `most`, fastest first."""
    ranked = sorted(timed, key=lambda t: t[-1]["ms"])
    return [t for t in ranked[:most] if t[-1]["ms"] <= ranked[0][-1]["ms"] * (1 + margin)]


def _confirm(layer, x, y, timed, stream):
    """Time the finalists again, two rounds in alternating order, so a drift in clocks falls on
    all of them alike; the lower median of a config's rounds is its confirmed time."""
    final = finalists(timed)
    if len(final) == 1:
        return final[0][0], final[0][-1]["ms"]
    for order in (final, final[::-1]):
        for config, plan, row in order:
            if "rejected" in row:
                continue
            try:
                ms = tuning.measure(_call(layer, plan, x, y), (x,), stream=stream, runs=CONFIRM_RUNS)
            except Exception as exc:  # as in the first pass: that config is out, the tuning goes on
                if type(exc).__name__ == "SoftTimeLimitExceeded":
                    raise
                row["rejected"] = f"confirming: {type(exc).__name__}: {exc}"[:200]
                continue
            row["ms_confirm"] = min(row.get("ms_confirm", ms), ms)
    kept = [t for t in final if "rejected" not in t[-1]]
    if not kept:
        raise RuntimeError(f"every finalist failed when timed again for {layer.extra_repr()}: "
                           f"{[t[-1] for t in final]}")
    config, _, row = min(kept, key=lambda t: t[-1]["ms_confirm"])
    return config, row["ms_confirm"]
