"""The benchmark stage's progress: the kernels' per-layer events become one rising bar for the
stage (layers, then the whole model) with a note naming what was timed, shown by the CLI."""

import io
import re

import pytest
from rich.console import Console

from farm.cli import progress as cli_progress
from farm.worker.stages import bench_progress


def _stage_events(layers: int, batches: int) -> list[dict]:
    seen = []
    on_layer = bench_progress(seen.append, 0.0, 0.8)
    on_model = bench_progress(seen.append, 0.8, 0.2)
    for i in range(layers):
        on_layer({"layer": f"layer{i}.conv", "batch": 32, "done": i + 1, "of": layers})
    for j in range(batches):
        for stage in ("fp32", "tf32"):  # inside each batch size: every layer tuned and decided
            for i in range(layers):
                on_model({"stage": stage, "layer": f"layer{i}.conv", "batch": 32, "done": i + 1, "of": layers})
        on_model({"layer": None, "batch": 32, "done": j + 1, "of": batches})
    return seen


def test_one_bar_rises_to_the_end():
    events = _stage_events(19, 2)
    done = [e["epoch"] / e["epochs"] for e in events]
    assert done == sorted(done) and done[-1] == 1.0 and 0 < done[0] < 0.1
    assert all(e["stage"] == "benchmark" for e in events)
    assert events[3]["step"] == "layer3.conv, batch 32 (4/19)"
    assert events[-1]["step"] == "whole model, batch 32 (2/2)"
    assert events[19]["step"] == "whole model, batch 32: layer0.conv decided against fp32 (1/19)"
    assert events[19]["epoch"] == events[18]["epoch"]  # the bar waits for the batch size's end


def test_the_cli_shows_what_was_timed(monkeypatch):
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False)
    monkeypatch.setattr(cli_progress, "err", console)
    with cli_progress.StageProgress() as bars:
        bars("stage", {"name": "benchmark"})
        for event in _stage_events(3, 1)[:2]:
            bars("epoch", event)
        bars.progress.refresh()
    assert "layer1.conv, batch 32 (2/3)" in out.getvalue()


def test_a_stage_waiting_for_another_job_says_which(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(cli_progress, "err", Console(file=out, width=100, force_terminal=False))
    with cli_progress.StageProgress() as bars:
        bars("stage", {"name": "prune"})
        bars("waiting", {"name": "prune", "job_id": 7})
        bars.progress.refresh()
    assert "waiting for job 7" in out.getvalue()


@pytest.mark.parametrize("width", [50, 60, 80, 120])
def test_narrow_terminals_cut_the_note_and_keep_the_bar_and_the_time(monkeypatch, width):
    out = io.StringIO()
    monkeypatch.setattr(cli_progress, "err", Console(file=out, width=width, force_terminal=True, color_system=None))
    with cli_progress.StageProgress() as bars:
        bars("stage", {"name": "prune"})
        bars("epoch", {"epoch": 60, "epochs": 180, "step": "step 2/3 (95%) epoch 1/50", "loss": 0.1234,
                       "accuracy": 0.9123})
        bars.progress.refresh()
    line = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue().split("\r")[-1]).strip()
    assert line.startswith("prune") and line.endswith("0:00:00") and len(line) <= width, line
    assert "━" in line and "step 2/3" in line
    assert ("acc 0.912" in line) == (width >= 80)  # what does not fit is cut, with "…"
