"""Sweep files: bits fixed beside float schemes, stages as one value, and the device and recipe
an embedded sweep picks when the file does not say."""

import pytest
import torch

from farm import db
from farm.db.models import Job
from farm.errors import InvalidSpec
from farm.scheduler import sweep
from farm.scheduler.spec import RECIPES


def test_fixed_bits_is_dropped_for_float_schemes():
    plan = sweep.parse("grid:\n  scheme: [fp32, fp16, kmeans]\nfixed:\n  model: tiny\n  bits: 4\n")
    assert sorted((s.scheme, s.bits) for s in plan.specs) == [("fp16", 16), ("fp32", 32), ("kmeans", 4)]


def test_fixed_bits_still_checked_for_quantized_schemes():
    with pytest.raises(InvalidSpec, match="bits must be from 2 to 8"):
        sweep.parse("grid:\n  scheme: [fp32, kmeans]\nfixed:\n  model: tiny\n  bits: 12\n")


def test_stages_list_of_names_is_one_value():
    plan = sweep.parse("grid:\n  model: tiny\n  stages: [train, prune]\n")
    assert [s.stages for s in plan.specs] == [("train", "prune")]


def test_stages_list_of_lists_is_an_axis():
    plan = sweep.parse("grid:\n  model: tiny\n  stages: [[train], [train, prune]]\n")
    assert sorted(s.stages for s in plan.specs) == [("train",), ("train", "prune")]


def test_bad_stage_in_grid_names_the_job():
    with pytest.raises(InvalidSpec, match="stages must be a prefix"):
        sweep.parse("grid:\n  model: tiny\n  stages: [prune]\n")


TINY = "grid:\n  sparsity: [0.5, 0.9]\nfixed:\n  model: tiny\n  dataset: synthetic\n"


@pytest.fixture
def ran(monkeypatch):
    """Record the jobs an embedded sweep would run here, without training them."""
    from farm.worker import runner

    ids = []
    monkeypatch.setattr(runner, "run_job", lambda job_id, on_event=None: ids.append(job_id))
    return ids


def _specs(job_ids):
    with db.session() as s:
        return [s.get(Job, i).spec for i in job_ids]


def test_embedded_sweep_without_gpu_runs_quick_on_cpu(monkeypatch, ran):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    events = []
    result = sweep.submit(sweep.parse(TINY), on_event=lambda kind, data: events.append((kind, data)))
    assert result.jobs == 2 and sorted(ran) == sorted(result.job_ids)
    quick = RECIPES["quick"]
    for spec in _specs(result.job_ids):
        assert (spec["device"], spec["recipe"]) == ("cpu", "quick")
        assert (spec["epochs"], spec["subset"]) == (quick.epochs, quick.subset)
    assert result.note and "quick recipe" in result.note and "\n" not in result.note
    assert events[0] == ("job", {"job_id": "", "label": result.note})  # said before any job runs
    resumed = sweep.resume(result.sweep_id)  # the stored grid keeps the choice
    assert resumed.new == 0 and sorted(resumed.job_ids) == sorted(result.job_ids)


def test_embedded_sweep_with_gpu_keeps_full_recipe(monkeypatch, ran):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    result = sweep.submit(sweep.parse(TINY))
    assert result.note is None
    assert {(s["device"], s["recipe"], s["epochs"]) for s in _specs(result.job_ids)} == {
        ("gpu", "full", RECIPES["full"].epochs)}


@pytest.mark.parametrize("extra, device, expect", [
    ("  recipe: full\n", None, ("cpu", "full")),
    ("  recipe: full\n", "auto", ("cpu", "full")),  # auto, as farm submit's default, is no device named  # a recipe the file names is kept, on this machine's device
    ("  recipe: full\n", "cpu", ("cpu", "full")),
    ("  recipe: full\n  device: gpu\n", None, ("gpu", "full")),  # refused below: no GPU here
])
def test_embedded_sweep_keeps_what_the_file_or_flag_says(monkeypatch, ran, extra, device, expect):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if expect[0] == "gpu":
        with pytest.raises(InvalidSpec, match="no CUDA GPU"):
            sweep.submit(sweep.parse(TINY + extra), device=device)
        return
    result = sweep.submit(sweep.parse(TINY + extra), device=device)
    assert result.note is None
    assert {(s["device"], s["recipe"]) for s in _specs(result.job_ids)} == {expect}


def test_a_sweep_naming_a_recipe_makes_the_jobs_farm_submit_makes(monkeypatch, ran):
    """A file with recipe: quick on a machine without a GPU recorded GPU jobs, so `farm submit
    --recipe quick` of the same job made a second one (a helper's new-user walkthrough)."""
    from farm.scheduler.spec import JobSpec
    from farm.scheduler.submission import choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = sweep.submit(sweep.parse(TINY + "  recipe: quick\n"))
    device, recipe = choose_device("auto", "quick", embedded=True)  # what `farm submit` does
    alone = JobSpec(model="tiny", dataset="synthetic", sparsity=0.5, recipe=recipe, device=device).resolve()
    with db.session() as s:
        assert alone.hash in {s.get(Job, i).spec_hash for i in result.job_ids}


@pytest.mark.parametrize("extra, device", [("", "cpu"), ("  device: cpu\n", None)])
def test_a_sweep_for_the_cpu_gets_the_quick_recipe_as_farm_submit(monkeypatch, ran, extra, device):
    # not the full one, which would train for hours here (a helper's new-user walkthrough)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    result = sweep.submit(sweep.parse(TINY + extra), device=device)
    assert {(s["device"], s["recipe"]) for s in _specs(result.job_ids)} == {("cpu", "quick")}
    assert result.note.startswith("device cpu: ") and "quick recipe" in result.note


def test_device_as_an_axis_gives_each_job_the_recipe_of_its_device(monkeypatch, ran):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    result = sweep.submit(sweep.parse(TINY.replace("grid:\n", "grid:\n  device: [cpu, gpu]\n")))
    assert sorted({(s["device"], s["recipe"]) for s in _specs(result.job_ids)}) == [("cpu", "quick"), ("gpu", "full")]
    assert sweep.resume(result.sweep_id).new == 0  # the stored grid expands to the same jobs


def test_the_same_sweep_submitted_again_is_one_sweep(monkeypatch, ran):
    from farm.db.models import Sweep

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    first = sweep.submit(sweep.parse(TINY))
    again = sweep.submit(sweep.parse(TINY))
    assert (again.sweep_id, again.reused, first.reused) == (first.sweep_id, True, False)
    assert sorted(again.job_ids) == sorted(first.job_ids) and again.new == 0
    other = sweep.submit(sweep.parse(TINY.replace("0.9]", "0.8]")))  # another grid: another sweep
    assert other.sweep_id != first.sweep_id and not other.reused
    with db.session() as s:
        assert s.query(Sweep).count() == 2


@pytest.mark.parametrize("text, words", [
    ("name: [1, 2]\n" + TINY, "`name` must be a plain name"),
    ("name: true\n" + TINY, "`name` must be a plain name"),
    (TINY + "  sparsity: 0.5\n", "sparsity in both `grid` and `fixed`"),
])
def test_ambiguous_sweep_files_are_refused(text, words):
    with pytest.raises(InvalidSpec, match=words.replace("[", r"\[")):
        sweep.parse(text)


@pytest.mark.parametrize("extra, device", [("  device: gpu\n", None), ("", "gpu")])
def test_embedded_sweep_naming_the_gpu_without_one_is_refused(monkeypatch, ran, extra, device):
    # as `farm submit --device gpu`: it would run the GPU recipe here, on the CPU, for hours
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidSpec, match="no CUDA GPU"):
        sweep.submit(sweep.parse(TINY + extra), device=device)
    assert not ran


def test_a_device_that_is_not_one_says_which_are(monkeypatch, ran):
    with pytest.raises(InvalidSpec, match="--device 'cuda' is not one of auto, gpu, cpu"):
        sweep.submit(sweep.parse(TINY), device="cuda")


def test_a_resume_refused_for_missing_data_leaves_a_cancelled_sweep_cancelled(monkeypatch, ran, farm_home):
    """Refused before anything ran: the sweep is not 'resumed' (un-cancelled) either."""
    from farm.db.models import Sweep
    from farm.errors import DatasetMissing

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    done = sweep.submit(sweep.parse(TINY))
    with db.session() as s:
        cancelled = s.get(Sweep, done.sweep_id)
        cancelled.cancel_requested = True
        cancelled.grid = {**cancelled.grid, "fixed": {**cancelled.grid["fixed"], "dataset": "cifar10"}}
    monkeypatch.setenv("FARM_DATA_DIR", str(farm_home / "no-data"))
    with pytest.raises(DatasetMissing, match="CIFAR-10 not found"):
        sweep.resume(done.sweep_id)
    with db.session() as s:
        assert s.get(Sweep, done.sweep_id).cancel_requested is True
