"""Which first-pass candidates the tuner times again before choosing (the timing is GPU-only)."""

from farm.kernels.autotune import finalists


def _timed(*ms):
    return [(f"c{i}", None, {"config": f"c{i}", "ms": m}) for i, m in enumerate(ms)]


def test_finalists_are_the_fastest_within_the_margin_fastest_first():
    final = finalists(_timed(0.050, 0.040, 0.045, 0.047, 0.100), margin=0.15, most=4)
    assert [t[0] for t in final] == ["c1", "c2"]  # 0.047 is 17.5% above 0.040


def test_finalists_are_capped():
    final = finalists(_timed(0.040, 0.041, 0.042, 0.043, 0.044), margin=0.15, most=3)
    assert [t[0] for t in final] == ["c0", "c1", "c2"]


def test_a_lone_fast_candidate_is_its_own_finalist():
    assert [t[0] for t in finalists(_timed(0.040, 0.090))] == ["c0"]
