"""Crossover sparsity: from per-layer timings across sparsities, where our kernel starts beating
cuDNN, for each card, layer shape, batch, activation dtype, weight scheme and cuDNN precision.

"Starts beating" means for good: the crossover lies after the last measured sparsity where cuDNN
was faster, so one lucky point below a losing one does not count. Between the last loss and the
next win the speedup is interpolated linearly in log(speedup), the scale on which it is smooth.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

BASELINES = ("fp32", "tf32", "fp16")  # cuDNN precisions every layer row is timed against
SPARSITY_DIGITS = 4  # timings within 1e-4 of sparsity are one measurement point


@dataclass(frozen=True)
class Crossover:
    gpu: str | None
    shape: tuple[int, ...]  # weight (Cout, Cin, kh, kw), then the input's H, W where recorded
    batch: int
    dtype: str  # our kernel's activations
    weight_scheme: str | None
    baseline: str  # cuDNN precision: fp32 | tf32 | fp16
    sparsity: float | None  # where ours starts to win; None: never within the measured range
    # "at": interpolated between measurements; "below": ours wins at every measured sparsity (the
    # crossover is at or below min_sparsity); "never": cuDNN still wins at max_sparsity.
    bound: str
    min_sparsity: float
    max_sparsity: float
    points: int  # distinct sparsities measured
    layers: tuple[str, ...]  # layer names that have this shape

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"], d["layers"] = list(self.shape), list(self.layers)
        return d

    @property
    def label(self) -> str:
        """'0.73', '<=0.50' (wins everywhere measured) or '>0.95' (never wins)."""
        if self.bound == "below":
            return f"≤{self.min_sparsity:.2f}"
        if self.bound == "never":
            return f">{self.max_sparsity:.2f}"
        return f"{self.sparsity:.2f}"


def _get(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


def _speedup(row: Any, baseline: str) -> float | None:
    ours, theirs = _get(row, "ours_ms"), _get(row, f"cudnn_{baseline}_ms")
    if ours and theirs and ours > 0 and theirs > 0:
        return theirs / ours
    stored = _get(row, f"speedup_{baseline}")
    return stored if stored and stored > 0 else None


def crossing(points: dict[float, float]) -> tuple[float | None, str]:
    """(sparsity, bound) from {sparsity: speedup}; see the module docstring."""
    xs = sorted(points)
    losses = [i for i, s in enumerate(xs) if points[s] < 1.0]
    if not losses:
        return xs[0], "below"
    last = losses[-1]
    if last == len(xs) - 1:
        return None, "never"
    s0, s1 = xs[last], xs[last + 1]
    l0, l1 = math.log(points[s0]), math.log(points[s1])
    return s0 + (s1 - s0) * (0.0 - l0) / (l1 - l0), "at"


def crossovers(rows: Iterable[Any], baselines: Iterable[str] = BASELINES) -> list[Crossover]:
    """One Crossover per (gpu, shape, batch, dtype, weight scheme, baseline) with a timing."""
    logs: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    names: dict[tuple, set[str]] = defaultdict(set)
    baselines = tuple(baselines)
    for r in rows:
        sparsity, shape = _get(r, "sparsity"), _get(r, "shape")
        if sparsity is None or not shape:
            continue
        base_key = (_get(r, "gpu"), tuple(shape), _get(r, "batch"), _get(r, "dtype"),
                    _get(r, "weight_scheme"))
        for b in baselines:
            speedup = _speedup(r, b)
            if speedup is not None:
                key = (*base_key, b)
                logs[key][round(sparsity, SPARSITY_DIGITS)].append(math.log(speedup))
                names[key].add(_get(r, "layer") or "?")
    out = []
    for key in sorted(logs, key=_sort_key):
        # Several layers (or jobs) at one sparsity: their geometric mean speedup.
        points = {s: math.exp(sum(v) / len(v)) for s, v in logs[key].items()}
        sparsity, bound = crossing(points)
        out.append(Crossover(*key, sparsity=sparsity, bound=bound, min_sparsity=min(points),
                             max_sparsity=max(points), points=len(points),
                             layers=tuple(sorted(names[key]))))
    return out


def _sort_key(key: tuple) -> tuple:
    gpu, shape, batch, dtype, scheme, baseline = key
    return (gpu or "", dtype or "", BASELINES.index(baseline) if baseline in BASELINES else 9,
            shape, batch or 0, scheme or "")
