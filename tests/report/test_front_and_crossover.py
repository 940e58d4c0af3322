"""The Pareto front and crossover arithmetic against plain brute force."""

import itertools
import math
import random

import pytest

from farm.report.crossover import crossing, crossovers
from farm.report.pareto import front_indices


def brute_front(points, higher_x):
    def beats(a, b):
        ax, bx = (a[0], b[0]) if higher_x else (-a[0], -b[0])
        return ax >= bx and a[1] >= b[1] and (ax > bx or a[1] > b[1])
    return {i for i, p in enumerate(points) if not any(beats(q, p) for q in points)}


@pytest.mark.parametrize("higher_x", [True, False], ids=["x-higher-better", "x-lower-better"])
@pytest.mark.parametrize("seed", range(20))
def test_front_is_the_non_dominated_set(seed, higher_x):
    rng = random.Random(seed)
    # Coarse values force ties and exact duplicates, where fronts usually go wrong.
    points = [(rng.randint(0, 8) / 2, rng.randint(0, 8) / 4) for _ in range(rng.randint(1, 40))]
    front = front_indices(points, x_higher_is_better=higher_x)
    assert set(front) == brute_front(points, higher_x)
    assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)


def test_front_of_nothing_is_empty():
    assert front_indices([], x_higher_is_better=True) == []


def test_crossing_interpolates_in_log_speedup():
    s, bound = crossing({0.5: 0.6, 0.7: 0.9, 0.8: 1.2, 0.9: 2.0})
    assert bound == "at"
    assert s == pytest.approx(0.7 + 0.1 * -math.log(0.9) / (math.log(1.2) - math.log(0.9)))


def test_crossing_is_after_the_last_loss():
    # A lucky win at 0.6 does not count: cuDNN wins again at 0.7.
    s, bound = crossing({0.5: 0.8, 0.6: 1.1, 0.7: 0.9, 0.9: 1.5})
    assert bound == "at" and 0.7 < s < 0.9


def test_crossing_bounds():
    assert crossing({0.5: 1.2, 0.9: 3.0}) == (0.5, "below")
    assert crossing({0.5: 0.2, 0.9: 0.7}) == (None, "never")


def test_crossovers_group_by_shape_batch_precision_and_card():
    rows = []
    for gpu, batch, s in itertools.product(["A", "B"], [1, 32], [0.5, 0.9]):
        rows.append(dict(gpu=gpu, shape=[8, 8, 3, 3], batch=batch, dtype="fp32", weight_scheme="fp32",
                         sparsity=s, layer="c1", ours_ms=1.0 if s == 0.5 else 0.25, cudnn_fp32_ms=0.5,
                         cudnn_tf32_ms=0.3, cudnn_fp16_ms=0.2))
    items = crossovers(rows)
    assert len(items) == 2 * 2 * 3
    fp32 = [c for c in items if c.baseline == "fp32"]
    # fp32: speedup 0.5 at 0.5 and 2.0 at 0.9 -> halfway in log space.
    assert all(c.bound == "at" and c.sparsity == pytest.approx(0.7) for c in fp32)
    assert all(c.bound == "never" for c in items if c.baseline == "fp16")  # 0.2/0.25 < 1
