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


def test_the_confirming_round_decides_and_drops_a_finalist_that_fails(monkeypatch):
    """The timer here is a table (the real one needs a GPU): c1 was fastest in the first pass,
    c0 is in the confirming round; c2 fails when timed again and is left out."""
    from farm.kernels import autotune

    confirm = {"c0": 0.040, "c1": 0.045, "c2": RuntimeError("launch failed")}

    def timer(fn, touch, **kw):
        v = confirm[fn()]
        if isinstance(v, Exception):
            raise v
        return v

    monkeypatch.setattr(autotune.tuning, "measure", timer)
    monkeypatch.setattr(autotune, "_call", lambda layer, plan, x, y: lambda: plan)
    timed = [(name, name, {"config": name, "ms": ms}) for name, ms in (("c0", 0.044), ("c1", 0.041), ("c2", 0.042))]
    config, ms = autotune._confirm(None, None, None, timed, None)
    assert (config, ms) == ("c0", 0.040)
    assert "rejected" in timed[2][-1] and "ms_confirm" not in timed[2][-1]


def test_models_past_four_l2s_of_activations_are_timed_cold(monkeypatch):
    """model_timing: warm below four times the card's L2, cold above, unless TIMING forces one; the
    choice in force changes the cache key, so cold and warm choices never mix."""
    import torch

    from farm.kernels import tuning

    class Props:
        L2_cache_size = 50 << 20

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    assert tuning.model_timing(41 << 20, "cuda") == "warm"  # ResNet-50, batch 1, fp32
    assert tuning.model_timing(163 << 20, "cuda") == "warm"  # batch 4: under four L2s
    assert tuning.model_timing(1300 << 20, "cuda") == "cold"  # batch 32
    monkeypatch.setattr(tuning, "TIMING", "warm")
    assert tuning.model_timing(1 << 30, "cuda") == "warm"
    monkeypatch.setattr(tuning, "TIMING", "auto")
    key = lambda: tuning.cache_key("H100", (64, 64, 3, 3), 32, "fp32", "fp32", "p")  # noqa: E731
    warm = key()
    with tuning.timing_for("cold"):
        assert tuning.active() == "cold" and key() != warm
    assert tuning.active() == "warm" and key() == warm
