"""Sweep files: grid expansion and every way a file can be wrong."""

import pytest

from farm.errors import InvalidSpec
from farm.scheduler import sweep

GRID = """
name: demo
grid:
  sparsity: [0.5, 0.7, 0.9]
  scheme: [fp32, kmeans, log]
  bits: [3, 4]
fixed:
  model: tiny
  dataset: synthetic
  device: cpu
  batches: [1, 8]
"""


def test_grid_expands_and_collapses_bits_for_float_schemes():
    plan = sweep.parse(GRID)
    # 3 sparsities x (fp32 + kmeans x 2 bits + log x 2 bits) = 3 x 5
    assert len(plan.specs) == 15 and plan.name == "demo"
    assert {(s.scheme, s.bits) for s in plan.specs} == {("fp32", 32), ("kmeans", 3), ("kmeans", 4),
                                                        ("log", 3), ("log", 4)}
    assert all(s.batches == (1, 8) for s in plan.specs)
    assert len({s.hash for s in plan.specs}) == 15


def test_batches_list_of_lists_is_an_axis():
    plan = sweep.parse("grid:\n  model: tiny\n  batches: [[1], [8, 32]]\n")
    assert sorted(s.batches for s in plan.specs) == [(1,), (8, 32)]


@pytest.mark.parametrize("text, words", [
    ("", "is empty"),
    ("   \n# only a comment\n", "is empty"),
    ("grid: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("grid: {}\n", "`grid` is empty"),
    ("grid:\n  sparsity: []\n", "empty list"),
    ("grids:\n  sparsity: [0.5]\n", "unknown key(s) grids"),
    ("grid:\n  sparsity: [0.5, 1.5]\n  model: tiny\n", "job (sparsity=1.5, model=tiny): sparsity must be in [0, 1)"),
    ("grid:\n  model: [tiny, nosuchnet]\n", "unknown model 'nosuchnet'"),
    ("grid:\n  scheme: kmeans\n  bits: [4, 12]\n", "bits must be from 2 to 8"),
    ("grid:\n  sparsty: [0.5]\n", "unknown job field(s) sparsty"),
])
def test_bad_sweep_files_are_rejected_with_one_line(text, words):
    with pytest.raises(InvalidSpec) as info:
        sweep.parse(text, where="s.yaml")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_at_is_validated():
    with pytest.raises(InvalidSpec, match="HH:MM"):
        sweep.next_time("25:99")
    assert sweep.next_time("22:00") is not None


def test_scalar_batches_is_one_batch_size():
    plan = sweep.parse("grid:\n  sparsity: [0.5]\nfixed:\n  model: tiny\n  batches: 32\n")
    assert [s.batches for s in plan.specs] == [(32,)]


def test_batches_as_comma_text_is_named_whole():
    with pytest.raises(InvalidSpec, match=r"batches must be whole numbers, e.g. \[1, 32\], got \['1,32'\]"):
        sweep.parse("grid:\n  sparsity: [0.5]\nfixed:\n  model: tiny\n  batches: 1,32\n")


@pytest.mark.parametrize("text, words", [
    ("grid:\n  sparsity: [0.5]\nfixed:\n  model: tiny\n  priority: 5\n",
     "s.yaml: `fixed` has priority, which is not a job field: pass --priority to farm sweep submit"),
    ("grid:\n  sparsity: [0.5]\n  priority: [1, 2]\n", "`grid` has priority, which is not a job field"),
    ("grid:\n  sparsity: [0.5]\nfixed:\n  force: true\n",
     "`fixed` has force, which is not a job field: a sweep reuses the jobs that already ran"),
])
def test_a_submit_option_in_the_file_says_where_it_goes(text, words):
    """It was "unknown job field(s) priority; known: ..., run, stages, version"."""
    with pytest.raises(InvalidSpec) as info:
        sweep.parse(text, where="s.yaml")
    assert words in str(info.value) and "known:" not in str(info.value)


def test_an_unknown_field_is_not_offered_the_internal_ones():
    with pytest.raises(InvalidSpec) as info:
        sweep.parse("grid:\n  sparsty: [0.5]\n", where="s.yaml")
    known = str(info.value).split("known: ")[1].split(", ")
    assert {"model", "sparsity", "seed", "batches", "max_drop"} <= set(known)
    assert not {"run", "stages", "version"} & set(known), known


def test_internal_fields_are_still_taken_from_a_file():
    """Not offered, but a stored grid or a benchmark's file may carry them (bench/multi_gpu.py)."""
    plan = sweep.parse("grid:\n  sparsity: [0.5]\nfixed:\n  model: tiny\n  stages: [train]\n  run: 1\n")
    assert [(s.stages, s.run) for s in plan.specs] == [(("train",), 1)]
