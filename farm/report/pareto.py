"""The Pareto front: points no other point beats on both axes.

Accuracy is always better higher; the other axis is better higher (speedup) or lower (latency,
size). Equal points do not dominate each other, so duplicates on the front are all kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


class XAxis(str, Enum):
    speedup = "speedup"  # whole-model speedup against cuDNN: higher is better
    latency = "latency"  # whole-model latency of our sparse model: lower is better
    size = "size"  # compressed bytes on disk: lower is better

    @property
    def higher_is_better(self) -> bool:
        return self is XAxis.speedup

    @property
    def is_timing(self) -> bool:
        """Timing axes depend on the card; size does not."""
        return self is not XAxis.size


class YAxis(str, Enum):
    accuracy = "accuracy"  # final test accuracy: higher is better


def dominates(a: tuple[float, float], b: tuple[float, float], *, x_higher_is_better: bool) -> bool:
    """a is at least as good as b on both axes and strictly better on one (y: higher is better)."""
    ax, bx = (a[0], b[0]) if x_higher_is_better else (-a[0], -b[0])
    return ax >= bx and a[1] >= b[1] and (ax > bx or a[1] > b[1])


def front_indices(points: Sequence[tuple[float, float]], *, x_higher_is_better: bool) -> list[int]:
    """Indices of the non-dominated points, in increasing x."""
    # Sort by x best-first, then y best-first: a point is on the front iff its y beats every
    # y seen before it (those have at least as good an x). O(n log n), and exact for ties.
    sign = -1.0 if x_higher_is_better else 1.0
    order = sorted(range(len(points)), key=lambda i: (sign * points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = float("-inf")
    best_x = None
    for i in order:
        x, y = points[i]
        if y > best_y:
            front.append(i)
            best_y, best_x = y, x
        elif y == best_y and x == best_x:
            front.append(i)  # an exact duplicate of a front point is not dominated either
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


@dataclass(frozen=True)
class ParetoPoint:
    row: Any  # a farm.report.compare.CompareRow
    x: float  # in the axis's plotted unit (see x_value)
    y: float  # accuracy in percent
    on_front: bool


@dataclass(frozen=True)
class ParetoPanel:
    """Points that may share one front: one card (for timing axes) and one dataset."""

    card: str | None  # None on the size axis, which no card measured
    dataset: str
    points: list[ParetoPoint]

    @property
    def front(self) -> list[ParetoPoint]:
        return sorted((p for p in self.points if p.on_front), key=lambda p: (p.x, p.y))


def x_value(row: Any, x: XAxis, baseline: str = "fp32") -> float | None:
    if x is XAxis.speedup:
        return row.speedup(baseline)
    if x is XAxis.latency:
        return row.latency_ms
    return float(row.compressed_bytes) if row.compressed_bytes else None


def panels(rows: Sequence[Any], x: XAxis, baseline: str = "fp32") -> list[ParetoPanel]:
    """Rows with accuracy and an x value, split by card (timing axes) and dataset, fronts marked.

    A front across two cards would compare their speed, not the models': so each card gets its own.
    """
    groups: dict[tuple[str | None, str], list[tuple[Any, float, float]]] = {}
    for r in rows:
        xv = x_value(r, x, baseline)
        if r.accuracy is None or xv is None:
            continue
        card = (r.gpu or "unknown card") if x.is_timing else None
        groups.setdefault((card, r.dataset), []).append((r, xv, 100.0 * r.accuracy))
    out = []
    for (card, dataset), items in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        on = set(front_indices([(xv, yv) for _, xv, yv in items], x_higher_is_better=x.higher_is_better))
        out.append(ParetoPanel(card=card, dataset=dataset, points=[
            ParetoPoint(row=r, x=xv, y=yv, on_front=i in on) for i, (r, xv, yv) in enumerate(items)]))
    return out
