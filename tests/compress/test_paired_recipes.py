"""bench/paired_recipes.py's arithmetic: its figures go into docs/RESULTS.md."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import paired_recipes  # noqa: E402


def _run(seed, recipe, dense, accs):
    return {"seed": seed, "recipe": recipe, "dense": dense,
            "levels": {str(lv): {"accuracy": a} for lv, a in zip(paired_recipes.LEVELS, accs)}}


def test_drops_and_paired_differences():
    runs = [_run(0, "reference", 0.95, [0.95, 0.947, 0.94]), _run(0, "sam", 0.95, [0.951, 0.946, 0.942]),
            _run(1, "reference", 0.94, [0.941, 0.937, 0.93]), _run(1, "sam", 0.94, [0.942, 0.938, 0.929])]
    s = paired_recipes.summarize(runs, ["reference", "sam"])
    assert s["reference"]["0.98"]["mean_drop_points"] == pytest.approx(1.0)
    assert s["sam"]["0.9"]["diffs"] == pytest.approx([0.1, 0.1])
    assert s["sam"]["0.98"]["diffs"] == pytest.approx([0.2, -0.1])
    assert s["sam"]["0.98"]["vs_first_points"] == pytest.approx(0.05)
    assert s["sam"]["0.98"]["vs_first_se"] == pytest.approx(0.15)  # sd 0.212 / sqrt(2)
    assert s["reference"]["0.95"]["vs_first_points"] == 0 and s["reference"]["0.95"]["vs_first_se"] == 0


def test_a_seed_cut_short_is_left_out_of_the_differences():
    runs = [_run(0, "reference", 0.95, [0.95, 0.947, 0.94]), _run(0, "sam", 0.95, [0.951, 0.946, 0.942]),
            _run(1, "reference", 0.94, [0.941, 0.937, 0.93])]  # the call ended before seed 1's sam
    s = paired_recipes.summarize(runs, ["reference", "sam"])
    assert s["sam"]["0.9"]["diffs"] == pytest.approx([0.1]) and s["sam"]["0.9"]["vs_first_se"] is None
    assert len(s["reference"]["0.9"]["drops"]) == 2
