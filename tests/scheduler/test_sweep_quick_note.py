"""The note a sweep prints when its CPU jobs get the quick recipe names the examples and epochs
those jobs use: a file with `subset: 512` was told "4000 examples" (the recipe's default), and
"whole dataset" for the full recipe, which would also use the file's 512 (a new-user walkthrough).

The jobs run for real in this process (no broker, SQLite in the test's FARM_HOME); their one
stage is `noop`, so the sweep goes through submit, recording and running in well under a second."""

from __future__ import annotations

import pytest
import torch

from farm.scheduler import sweep

FILE = "grid:\n  sparsity: [0.5, 0.9]\nfixed:\n  model: tiny\n  dataset: synthetic\n  stages: [noop]\n"


def _note(text: str) -> str:
    events = []
    result = sweep.submit(sweep.parse(text), on_event=lambda kind, data: events.append((kind, data)))
    assert events[0] == ("job", {"job_id": "", "label": result.note})  # what the user reads, first
    assert result.note and "\n" not in result.note
    return result.note


def test_the_note_states_the_files_subset_for_both_recipes():
    note = _note(FILE + "  device: cpu\n  subset: 512\n")
    assert note.startswith("device cpu: running the sweep's CPU jobs with the quick recipe "
                           "(2+2+0 epochs, 512 examples) instead of the full one (40+60+0 epochs, 512 examples)")
    assert "4000" not in note and "whole dataset" not in note


def test_the_note_states_every_subset_and_epochs_the_file_gives(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine's device: the CPU
    note = _note(FILE.replace("grid:\n", "grid:\n  subset: [1024, 512]\n") + "  epochs: 1\n")
    assert note.startswith("No GPU here: running the sweep's CPU jobs with the quick recipe "
                           "(1+2+0 epochs, 512 or 1024 examples) instead of the full one "
                           "(1+60+0 epochs, 512 or 1024 examples)")


@pytest.mark.parametrize("extra, why", [("  device: cpu\n", "device cpu"), ("", "No GPU here")],
                         ids=["device-cpu", "no-gpu"])
def test_without_subset_the_note_keeps_the_recipes_own(extra, why, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _note(FILE + extra).startswith(
        f"{why}: running the sweep's CPU jobs with the quick recipe (2+2+0 epochs, 4000 examples) "
        f"instead of the full one (40+60+0 epochs, whole dataset)")


def test_quantized_jobs_count_their_fine_tuning():
    """fp32 weights are not fine-tuned (0), a 4-bit job's are: as the results' epochs column."""
    note = _note(FILE.replace("grid:\n", "grid:\n  scheme: [fp32, kmeans]\n  bits: [4]\n") + "  device: cpu\n")
    assert "(2+2+0 or 2+2+1 epochs, 4000 examples)" in note and "(40+60+0 or 40+60+6 epochs" in note
