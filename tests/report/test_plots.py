"""`farm plot pareto|layers|crossover`: files written, fronts right, bad input named."""

import json
import math
import re
from collections import defaultdict

import pytest

from farm import db
from farm.db.models import LayerTiming
from farm.errors import NotFound
from farm.report import NothingToShow

from .cli import invoke

MIN_BYTES = 10_000  # a figure with axes, labels and points is well above this in PNG and SVG


def expected_fronts(truth, x):
    """Non-dominated job ids per card (per whole sweep for size), by brute force over the
    fixture's own numbers at batch 32."""
    groups = defaultdict(dict)
    for job_id, t in truth.jobs.items():
        value = {"speedup": t["speedup"][32]["fp32"], "latency": -t["latency"][32], "size": -t["bytes"]}[x]
        groups[t["gpu"] if x != "size" else None][job_id] = (value, t["accuracy"])
    if x == "size":  # the finished job without timings still has a size
        with db.session() as s:
            from farm.db.models import Metrics
            m = s.query(Metrics).filter_by(job_id=truth.untimed_job).one()
            groups[None][truth.untimed_job] = (-m.compressed_bytes, m.accuracy)
    fronts = {}
    for card, pts in groups.items():
        fronts[card] = {j for j, (vx, vy) in pts.items()
                        if not any(ox >= vx and oy >= vy and (ox > vx or oy > vy) for ox, oy in pts.values())}
    return fronts


def files_ok(stem):
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > MIN_BYTES
    assert svg.stat().st_size > MIN_BYTES and "<svg" in svg.read_text()[:2000]
    return svg.read_text()


@pytest.mark.parametrize("x", ["speedup", "latency", "size"])
def test_pareto_marks_exactly_the_non_dominated_jobs(results_db, tmp_path, x):
    stem = tmp_path / f"front-{x}"
    out = invoke("plot", "pareto", "--sweep", results_db.grid_sweep, "--x", x, "--y", "accuracy",
                 "--out", stem, "--format", "json")
    assert out.exit_code == 0, out.output
    svg = files_ok(stem)
    fronts = expected_fronts(results_db, x)
    want = set().union(*fronts.values())
    assert {r["job_id"] for r in json.loads(out.stdout)} == want
    axis = {"size": "size_bytes", "latency": "latency_ms", "speedup": "speedup"}[x]
    assert all(isinstance(r[axis], float | int) and "x" not in r for r in json.loads(out.stdout))
    # The figure itself rings those points: each scatter point carries its job id and front flag.
    assert set(map(int, re.findall(r'id="front-job-(\d+)"', svg))) == want
    if x != "size":
        assert len(fronts) == 2  # one front per card, never one across both
        assert "NVIDIA H100 80GB HBM3" in out.stdout and "timings come from 2 different cards" in out.stderr


def test_pareto_without_timings_says_so_and_size_still_works(results_db, tmp_path):
    out = invoke("plot", "pareto", "--sweep", results_db.untimed_sweep, "--x", "speedup", "--out", tmp_path / "p")
    assert isinstance(out.exception, NothingToShow)
    assert "--x size" in str(out.exception) and "skipped: no GPU" in str(out.exception)
    ok = invoke("plot", "pareto", "--sweep", results_db.untimed_sweep, "--x", "size", "--out", tmp_path / "s")
    assert ok.exit_code == 0, ok.output
    files_ok(tmp_path / "s")


def test_pareto_with_no_x_falls_back_to_size_where_no_job_has_timings(results_db, tmp_path):
    out = invoke("plot", "pareto", "--sweep", results_db.untimed_sweep, "--out", tmp_path / "auto")
    assert out.exit_code == 0, out.output
    assert "no job in this sweep has whole-model timings" in out.output  # said, not silent
    files_ok(tmp_path / "auto")
    timed = invoke("plot", "pareto", "--sweep", results_db.grid_sweep, "--out", tmp_path / "t", "--format", "json")
    assert timed.exit_code == 0 and "no job in this sweep has whole-model timings" not in timed.output


def test_pareto_of_unknown_or_unfinished_sweep(results_db, tmp_path):
    assert isinstance(invoke("plot", "pareto", "--sweep", 999).exception, NotFound)
    out = invoke("plot", "pareto", "--sweep", results_db.pending_sweep, "--out", tmp_path / "p")
    assert isinstance(out.exception, NothingToShow) and "failed" in str(out.exception)


def test_layers_chart_shows_every_layer_and_batch(results_db, tmp_path):
    job = results_db.layer_job
    out = invoke("plot", "layers", job, "--out", tmp_path / "layers", "--format", "json")
    assert out.exit_code == 0, out.output
    files_ok(tmp_path / "layers")
    rows = json.loads(out.stdout)
    assert len(rows) == 6 * 2  # resnet20's six conv layers at batch 1 and 32
    assert all(r["speedup_fp32"] > 0 and r["gpu"] for r in rows)
    one = invoke("plot", "layers", job, "--batch", 1, "--out", tmp_path / "b1", "--format", "json")
    assert {r["batch"] for r in json.loads(one.stdout)} == {1}


def test_layers_chart_bad_input(results_db, tmp_path):
    out = invoke("plot", "layers", results_db.untimed_job, "--out", tmp_path / "x")
    assert isinstance(out.exception, NothingToShow) and "skipped: no GPU" in str(out.exception)
    assert isinstance(invoke("plot", "layers", 12345).exception, NotFound)
    wrong = invoke("plot", "layers", results_db.layer_job, "--batch", 64, "--out", tmp_path / "y")
    assert isinstance(wrong.exception, NothingToShow) and "batch 1 fp32" in str(wrong.exception)


def _measured(rows, key):
    """{sparsity: geometric-mean speedup} for one crossover cell, straight from the table."""
    gpu, shape, batch, dtype, scheme, baseline = key
    logs = defaultdict(list)
    for t, g in rows:
        if (g, tuple(t.shape), t.batch, t.dtype, t.weight_scheme) == (gpu, shape, batch, dtype, scheme):
            logs[round(t.sparsity, 4)].append(math.log(getattr(t, f"cudnn_{baseline}_ms") / t.ours_ms))
    return {s: math.exp(sum(v) / len(v)) for s, v in logs.items()}


def test_crossover_map_matches_the_measurements(results_db, tmp_path):
    out = invoke("plot", "crossover", "--sweep", results_db.grid_sweep, "--out", tmp_path / "x",
                 "--format", "json")
    assert out.exit_code == 0, out.output
    files_ok(tmp_path / "x")
    cells = json.loads(out.stdout)
    assert {c["gpu"] for c in cells} == {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"}
    assert {c["baseline"] for c in cells} == {"fp32", "tf32", "fp16"}
    from farm.db.models import Environment
    with db.session() as s:
        rows = s.query(LayerTiming, Environment.gpu).join(Environment).all()
    kinds = set()
    for c in cells:
        pts = _measured(rows, (c["gpu"], tuple(c["shape"]), c["batch"], c["dtype"], c["weight_scheme"], c["baseline"]))
        assert len(pts) == c["points"]
        kinds.add(c["bound"])
        if c["bound"] == "at":  # every measurement above wins, the nearest one below loses
            assert all(v >= 1 for s, v in pts.items() if s > c["sparsity"])
            assert max((s for s in pts if s < c["sparsity"])) in {s for s, v in pts.items() if v < 1}
        elif c["bound"] == "below":
            assert all(v >= 1 for v in pts.values())
        else:
            assert pts[max(pts)] < 1
    assert kinds == {"at", "below", "never"}  # the fixture has all three


def test_crossover_bad_input(results_db, tmp_path):
    assert isinstance(invoke("plot", "crossover", "--sweep", 999).exception, NotFound)
    out = invoke("plot", "crossover", "--sweep", results_db.untimed_sweep, "--out", tmp_path / "c")
    assert isinstance(out.exception, NothingToShow)
