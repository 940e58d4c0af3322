"""Per-layer choice of tile config by measurement, cached on disk.

Key: (GPU name, layer shape, batch, activation dtype, weight format, sparsity-pattern hash). The
cache is a JSON file in settings.kernel_cache; a worker that meets the same layer again skips the
search.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from farm import settings
from farm.kernels.csrconv.config import TileConfig


def cache_file() -> Path:
    d = settings.load().kernel_cache
    d.mkdir(parents=True, exist_ok=True)
    return d / "tuning.json"


# Bumped when the candidate set changes (2: csrbatch, 3: csrgather, 4: csrgather rows mode,
# 5: csrgen, 6-7: csrgen blocks fitted to the pixel count, 8: csrgen staged 1x1 input, 9: small
# csrgen blocks for few pixels, 10: those with 8 channels a group, and on 3x3 layers under 1,024
# pixels, 11: csrgen pixel vectors on small 1x1 layers), so a cache filled before is measured
# again rather than trusted to hold the best of candidates it never saw. Choices measured cold
# (below) are kept under their own keys.
CANDIDATES_VERSION = 11

# How the tuner (and sparsify's dense-or-sparse decision) times a candidate. "warm": back-to-back
# calls in a CUDA graph, as the per-layer benchmark times; code, weights and tables stay in L2
# from one call to the next. "cold": one call after L2 is flushed and the input read back
# (farm.kernels.timing.time_cold), as a layer runs inside a model whose one pass moves more than
# L2 holds. "auto" (the default): sparsify measures cold where one pass's activations exceed
# COLD_L2_MULTIPLE times the card's L2 (model_timing) and warm otherwise; a layer tuned outside
# sparsify is measured warm. Measured on ResNet-50 at 90% on an H100, 50 MiB of L2
# (docs/BENCHMARKS.md, session 10): batch 32 (1.3 GiB of activations a pass) 3.87 -> 3.73 ms
# with the layers tuned cold; batch 8 (325 MiB) a tie. Small batches stay as they were tuned
# before (warm): batch 1 (41 MiB) was not measured cold with a sound timer, and there a pass
# may well leave the sparse model's weights in L2 for the next; the margin of four keeps batch
# 1 warm on cards with less L2 (an A100 has 40 MiB).
TIMING = "auto"
COLD_L2_MULTIPLE = 4
COLD_RUNS = 25  # one call a run, each after a flush: a steady median needs more than a graph's 10
_local = threading.local()  # model_timing's choice while sparsify decides a model, per thread


def _stack() -> list[str]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def active() -> str:
    """The timing in force: sparsify's for the model it is deciding, else TIMING (auto: warm)."""
    stack = _stack()
    if stack:
        return stack[-1]
    return "warm" if TIMING == "auto" else TIMING


def model_timing(activation_bytes: int, device) -> str:
    """How to time a model's layers, given the bytes of activations one pass reads."""
    if TIMING != "auto":
        return TIMING
    from farm.kernels.timing import l2_bytes

    return "cold" if activation_bytes > COLD_L2_MULTIPLE * l2_bytes(device) else "warm"


@contextmanager
def timing_for(mode: str):
    """Tune, cache and measure as `mode` says ("cold" or "warm") inside the block, on this thread."""
    stack = _stack()
    stack.append(mode)
    try:
        yield
    finally:
        stack.pop()


def cache_key(gpu: str, shape: tuple, batch: int, dtype: str, wfmt: str, pattern: str) -> str:
    version = f"v{CANDIDATES_VERSION}" + ("-cold" if active() == "cold" else "")
    return "|".join([version, gpu, "x".join(map(str, shape)), f"n{batch}", dtype, wfmt, pattern])


def measure(fn, touch: tuple, *, stream, runs: int, inner: int = 5) -> float:
    """Milliseconds per call of fn() the way active() says (touch: the inputs, warm in a model;
    inner: calls per graph replay when warm)."""
    from farm.kernels.timing import time_cold, time_graph

    if active() == "cold":
        return time_cold(fn, touch=touch, runs=max(runs, COLD_RUNS), stream=stream)
    return time_graph(fn, runs=runs, inner=inner, stream=stream)


def shape_key(key: str) -> str:
    """The key without the pattern hash: layers of one shape and sparsity level share a config
    when their own pattern was never measured (patterns at one sparsity time alike)."""
    return key.rsplit("|", 1)[0] + "|any"


def lookup(key: str) -> dict | None:
    path = cache_file()
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data.get(key) or data.get(shape_key(key))


def store(key: str, config: TileConfig, ms: float, tried: list[dict]) -> None:
    path = cache_file()
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data[key] = {"config": config.to_dict(), "ms": ms, "tried": tried}
    data.setdefault(shape_key(key), {"config": config.to_dict(), "ms": ms, "from": key})
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def config_from(entry: dict):
    d = dict(entry["config"])
    family = d.pop("family", None)
    if family == "stage":
        from farm.kernels.csrtile.family import StageConfig

        return StageConfig(**d)
    if family == "gather":
        from farm.kernels.csrgather.family import GatherConfig

        return GatherConfig(**d)
    if family == "gen":
        from farm.kernels.csrgen.family import GenConfig

        return GenConfig(**d)
    if family == "batch":
        from farm.kernels.csrbatch.family import BatchConfig

        return BatchConfig(**d)
    return TileConfig(**d)
