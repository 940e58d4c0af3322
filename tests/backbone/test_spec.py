"""JobSpec: canonical form, hash identity, validation of every field a user types."""

import json
from dataclasses import replace

import pytest

from farm.errors import InvalidSpec, UnknownDataset, UnknownModel
from farm.scheduler.spec import JobSpec

TINY = dict(model="tiny", dataset="synthetic", device="cpu")


def test_alias_and_defaults_hash_the_same():
    a = JobSpec(model="resnet", sparsity=0.9).resolve()
    b = JobSpec(model="ResNet20", sparsity=0.90, epochs=40, bits=32).resolve()
    assert a.model == "resnet20"
    assert a.hash == b.hash and a.canonical_json() == b.canonical_json()


def test_different_work_hashes_differently():
    base = JobSpec(**TINY, sparsity=0.5).resolve()
    assert JobSpec(**TINY, sparsity=0.6).resolve().hash != base.hash
    assert JobSpec(**TINY, sparsity=0.5, run=1).resolve().hash != base.hash


def test_max_drop_is_part_of_the_work_only_when_set():
    plain = JobSpec(**TINY, sparsity=0.9).resolve()
    assert "max_drop" not in plain.to_dict()  # hashes of specs from before the field are unchanged
    guarded = JobSpec(**TINY, sparsity=0.9, max_drop=0.3).resolve()
    assert guarded.hash != plain.hash and guarded.stage_key("prune") != plain.stage_key("prune")
    assert guarded.stage_key("train") == plain.stage_key("train")
    assert JobSpec.from_dict(guarded.to_dict()) == guarded and "drop <= 0.3 pt" in guarded.label()
    # jobs alike but for their scope, schedule or run do not share a label (a new-user walkthrough)
    plain = JobSpec(model="tiny", dataset="synthetic", sparsity=0.7)
    assert plain.label() == "tiny/synthetic s=0.70 fp32"
    assert (replace(plain, scope="layer", method="oneshot", run=1).label()
            == "tiny/synthetic s=0.70 fp32 layer oneshot run 1")
    for bad in (-0.1, 100, True, "0.3"):
        with pytest.raises(InvalidSpec, match="max_drop"):
            JobSpec(**TINY, max_drop=bad).resolve()
    with pytest.raises(InvalidSpec, match="scope global"):
        JobSpec(**TINY, max_drop=0.3, scope="lamp").resolve()


def test_round_trip_through_json():
    spec = JobSpec(**TINY, sparsity=0.7, scheme="kmeans", bits=4, batches=(32, 1, 1)).resolve()
    assert spec.batches == (1, 32)
    assert JobSpec.from_dict(spec.to_dict()) == spec


def test_dense_baseline_key_ignores_sparsity_and_scheme():
    a = JobSpec(**TINY, sparsity=0.5).resolve()
    b = JobSpec(**TINY, sparsity=0.9, scheme="log", bits=3).resolve()
    assert a.stage_key("train") == b.stage_key("train")
    assert a.stage_key("prune") != b.stage_key("prune")
    c = JobSpec(**TINY, sparsity=0.5, scheme="log", bits=3).resolve()
    assert a.stage_key("prune") == c.stage_key("prune") and a.stage_key("quantize") != c.stage_key("quantize")
    assert JobSpec(**TINY, seed=1).resolve().stage_key("train") != a.stage_key("train")


@pytest.mark.parametrize("fields, error, words", [
    (dict(model="nosuchnet"), UnknownModel, "unknown model"),
    (dict(dataset="imagenet-1m"), UnknownDataset, "unknown dataset"),
    (dict(sparsity=1.0), InvalidSpec, "[0, 1)"),
    (dict(sparsity=-0.1), InvalidSpec, "[0, 1)"),
    (dict(scheme="kmeans", bits=9), InvalidSpec, "bits must be from 2 to 8"),
    (dict(scheme="kmeans", bits=1), InvalidSpec, "bits must be from 2 to 8"),
    (dict(scheme="kmeans"), InvalidSpec, "needs bits (--bits; in a sweep file, bits:)"),
    (dict(scheme="fp32", bits=4), InvalidSpec, "quantized scheme"),
    (dict(scheme="int3", bits=3), InvalidSpec, "scheme 'int3'"),
    (dict(method="random"), InvalidSpec, "method"),
    (dict(batches=()), InvalidSpec, "batches"),
    (dict(stages=("prune",)), InvalidSpec, "prefix"),
    (dict(epochs=-1), InvalidSpec, "epochs"),
    (dict(sparsity="0.5"), InvalidSpec, "wrong type"),
])
def test_bad_fields_raise_one_clear_line(fields, error, words):
    with pytest.raises(error) as info:
        JobSpec(**{**TINY, **fields}).resolve()
    assert words in str(info.value) and "\n" not in str(info.value)


def test_unknown_field_is_named():
    with pytest.raises(InvalidSpec, match="sparsty"):
        JobSpec.from_dict({"model": "tiny", "sparsty": 0.5})


def test_a_distilling_recipe_keys_its_retraining_by_it(monkeypatch):
    from farm.scheduler import spec as spec_mod

    monkeypatch.setitem(spec_mod.RECIPES, "full", replace(spec_mod.RECIPES["full"], distill=0.5))
    taught = JobSpec(model="resnet", sparsity=0.9, recipe="full").resolve()
    plain = replace(taught, recipe="quick")  # every epoch and size field already filled in
    assert taught.distill == 0.5 and plain.distill == 0.0
    assert "distill" not in json.dumps(taught.to_dict())  # the spec's identity is unchanged
    # the dense baseline does not depend on it; the pruned and quantized artifacts do
    assert plain.stage_key("train") == taught.stage_key("train")
    assert plain.stage_key("prune") != taught.stage_key("prune")
    assert plain.stage_key("quantize") != taught.stage_key("quantize")


def test_pruned_artifacts_are_keyed_by_the_retraining_translation(monkeypatch):
    from farm.scheduler import spec as spec_mod

    spec = JobSpec(model="resnet", sparsity=0.9, recipe="full").resolve()
    assert spec.retrain_crop == 1  # measured better than training's 2 for pruned models
    keys = {stage: spec.stage_key(stage) for stage in ("train", "prune", "quantize")}
    monkeypatch.setitem(spec_mod.RECIPES, "full", replace(spec_mod.RECIPES["full"], retrain_crop=2))
    assert JobSpec(model="resnet", sparsity=0.9, recipe="full").resolve().hash == spec.hash  # the same job
    assert spec.stage_key("train") == keys["train"]  # and dense baseline, but a 2-px pruned model is not reused
    assert spec.stage_key("prune") != keys["prune"] and spec.stage_key("quantize") != keys["quantize"]


def test_the_prune_stage_retrains_with_the_recipes_translation(farm_home, monkeypatch):
    import farm.compress
    from farm import db
    from farm.db.status import JobStatus
    from farm.scheduler.spec import RECIPES
    from farm.scheduler.submission import record
    from farm.worker.runner import run_job

    seen = []
    real = farm.compress.prune_and_retrain

    def recording(model, data, pruning, config, **kwargs):
        seen.append(config.crop_pad)
        return real(model, data, pruning, config, **kwargs)

    monkeypatch.setattr(farm.compress, "prune_and_retrain", recording)
    with db.session() as s:
        spec = JobSpec(**TINY, sparsity=0.5, recipe="quick", subset=64, stages=("train", "prune")).resolve()
        [sub] = record(s, [spec], status=JobStatus.QUEUED)
    assert run_job(sub.job_id) == JobStatus.SUCCEEDED
    assert seen == [RECIPES["quick"].retrain_crop] == [1]


def test_high_sparsity_is_pruned_in_steps_and_keyed_by_them(monkeypatch):
    from farm.scheduler import spec as spec_mod

    def steps(**kw):
        return JobSpec(model="resnet", recipe="full", **kw).resolve().prune_steps

    assert steps(sparsity=0.9) == ((0.9, 60),) and steps(sparsity=0.95) == ((0.95, 60),)
    assert steps(sparsity=0.98) == ((0.9, 60), (0.95, 50), (0.98, 70))  # the measured chain
    assert steps(sparsity=0.99) == ((0.9, 60), (0.95, 50), (0.98, 70), (0.99, 70))
    assert steps(sparsity=0.97, retrain_epochs=30) == ((0.9, 30), (0.95, 25), (0.97, 35))
    assert steps(sparsity=0.955) == ((0.9, 60), (0.955, 70))  # no step that prunes almost nothing
    assert steps(sparsity=0.96) == ((0.9, 60), (0.95, 50), (0.96, 70))
    assert steps(sparsity=0.98, retrain_epochs=3) == ((0.9, 3), (0.95, 3), (0.98, 4))  # 2.5 rounds up
    assert steps(sparsity=0.98, method="oneshot") == ((0.98, 60),)  # one-shot stays one shot
    assert steps(sparsity=0.98, max_drop=0.5) == ((0.98, 60),)  # the guarded search has its own trials
    low, high = (JobSpec(model="resnet", sparsity=s, recipe="full").resolve() for s in (0.9, 0.98))
    keys = {spec: spec.stage_key("prune") for spec in (low, high)}
    monkeypatch.setitem(spec_mod.RECIPES, "full", replace(spec_mod.RECIPES["full"], step_above=0.99))
    assert high.prune_steps == ((0.98, 60),)
    assert low.stage_key("prune") == keys[low]  # one-step keys are what they were before steps
    assert high.stage_key("prune") != keys[high]  # a model pruned straight to 98% is not reused


def test_the_prune_stage_goes_through_the_steps(farm_home, monkeypatch):
    import farm.compress
    from farm import db
    from farm.db.status import JobStatus
    from farm.scheduler.submission import record
    from farm.worker.runner import run_job

    seen = []
    real = farm.compress.prune_in_steps

    def recording(model, data, pruning, config, levels, epochs, **kwargs):
        seen.append((tuple(levels), tuple(epochs)))
        result = real(model, data, pruning, config, levels, epochs, **kwargs)
        seen.append(round(result.sparsity, 2))
        return result

    monkeypatch.setattr(farm.compress, "prune_in_steps", recording)
    with db.session() as s:
        spec = JobSpec(**TINY, sparsity=0.97, recipe="quick", subset=64, stages=("train", "prune")).resolve()
        [sub] = record(s, [spec], status=JobStatus.QUEUED)
    assert run_job(sub.job_id) == JobStatus.SUCCEEDED
    assert seen == [((0.9, 0.95, 0.97), (2, 2, 2)), 0.97]


def test_a_stepped_prune_shares_its_first_steps_keys_with_the_jobs_that_end_there():
    def spec(sparsity):
        return JobSpec(model="resnet", sparsity=sparsity, recipe="full").resolve()

    s90, s95, s97, s98, s99 = (spec(x) for x in (0.9, 0.95, 0.97, 0.98, 0.99))
    assert s98.stage_key("prune", s98.prune_steps[:1]) == s90.stage_key("prune")  # 90% with 60 epochs
    assert s98.stage_key("prune", s98.prune_steps[:2]) != s95.stage_key("prune")  # 95% from 90% is not from dense
    assert s98.stage_key("prune", s98.prune_steps[:2]) == s97.stage_key("prune", s97.prune_steps[:2])
    assert s99.stage_key("prune", s99.prune_steps[:3]) == s98.stage_key("prune")
    assert s98.stage_key("prune", s98.prune_steps) == s98.stage_key("prune")


def test_stepped_jobs_start_from_the_steps_other_jobs_stored(farm_home):
    from sqlalchemy import select

    from farm import db
    from farm.db.models import Artifact

    jobs = []

    def run(sparsity):
        stage = _prune_stage(sparsity)
        jobs.append(stage.job_id)
        return stage.result

    plain = run(0.9)
    stepped = run(0.98)  # its 90% step is the first job's whole prune: taken, not retrained
    assert [(s["sparsity"], s.get("reused", False)) for s in stepped["steps"]] == [
        (0.9, True), (0.95, False), (0.98, False)]
    assert stepped["steps"][0]["from_job"] == jobs[0] and "from_job" not in stepped["steps"][1]
    assert stepped["steps"][0]["accuracy"] == plain["accuracy"]
    assert stepped["accuracy_before"] == plain["accuracy_before"]  # the dense model's, not the 90% one's
    assert round(stepped["sparsity"], 2) == 0.98 and stepped["train"]["epochs"] == 4  # two steps of 2 trained
    further = run(0.99)  # 90 -> 95 -> 98% is the second job's whole prune
    assert [s.get("reused", False) for s in further["steps"]] == [True, True, True, False]
    # each step names the job that trained it, not the one it was taken from last
    assert [s.get("from_job") for s in further["steps"]] == [jobs[0], jobs[1], jobs[1], None]
    assert [s["accuracy"] for s in further["steps"][:3]] == [s["accuracy"] for s in stepped["steps"]]
    with db.session() as s:  # each prefix once: 90; 90-95 (kept by the 98% job); 90-95-98; 90-95-98-99
        assert len(s.scalars(select(Artifact).where(Artifact.stage == "prune")).all()) == 4


def test_a_forced_stepped_run_neither_takes_nor_replaces_shared_steps(farm_home):
    from sqlalchemy import select

    from farm import db
    from farm.db.models import Artifact

    def run(sparsity, run_no=0):
        return _prune_stage(sparsity, run_no).result

    run(0.9)
    with db.session() as s:
        shared = {a.key: a.path for a in s.scalars(select(Artifact).where(Artifact.stage == "prune"))}
    forced = run(0.98, run_no=1)
    assert not any(step.get("reused") for step in forced["steps"])  # recomputed, as --force promises
    with db.session() as s:
        after = {a.key: a.path for a in s.scalars(select(Artifact).where(Artifact.stage == "prune"))}
    assert all(after[k] == v for k, v in shared.items()) and len(after) == len(shared) + 1  # its own result only


def test_progress_after_reused_steps_counts_over_all_of_them():
    from farm.worker.stages import _over_all_steps

    seen = []
    event = _over_all_steps(seen.append, ((0.9, 60), (0.95, 50), (0.98, 70)), start=1)
    event({"epoch": 1, "epochs": 120})
    event({"epoch": 51, "epochs": 120})
    assert [(e["epoch"], e["epochs"]) for e in seen] == [(61, 180), (111, 180)]
    assert seen[0]["step"] == "step 2/3 (95%, 1 reused) epoch 1/50"  # within the step; the bar over all
    assert seen[1]["step"] == "step 3/3 (98%, 1 reused) epoch 1/70"


def test_lower_jobs_take_whole_what_a_higher_stepped_job_kept(farm_home):
    run = _prune_stage
    high = run(0.99)
    low, mid = run(0.9), run(0.98)  # a sweep listed high to low, run one job after another
    assert str(low.status) == "reused" and str(mid.status) == "reused"
    assert low.result["steps"] == [] and round(low.result["sparsity"], 2) == 0.9  # a plain 90% job's record
    assert low.result["accuracy"] == high.result["steps"][0]["accuracy"]
    assert [s["sparsity"] for s in mid.result["steps"]] == [0.9, 0.95, 0.98]
    assert mid.result["accuracy_before"] == high.result["accuracy_before"]  # the dense model's


def _prune_stage(sparsity: float, run_no: int = 0):
    """Run a quick train + prune job of the tiny model here; its prune stage's row."""
    from sqlalchemy import select

    from farm import db
    from farm.db.models import Stage
    from farm.db.status import JobStatus
    from farm.scheduler.submission import record
    from farm.worker.runner import run_job

    with db.session() as s:
        spec = JobSpec(**TINY, sparsity=sparsity, recipe="quick", subset=64, stages=("train", "prune"),
                       run=run_no).resolve()
        [sub] = record(s, [spec], status=JobStatus.QUEUED)
    assert run_job(sub.job_id) == JobStatus.SUCCEEDED
    with db.session() as s:
        return s.scalars(select(Stage).where(Stage.job_id == sub.job_id, Stage.name == "prune")).one()


def test_a_step_kept_by_an_earlier_attempt_of_the_same_job_names_no_other_job(farm_home, tmp_path):
    from farm.worker import artifacts
    from farm.worker.runner import _stored

    first = _prune_stage(0.9)  # a real job, so the artifact's producer exists
    step = tmp_path / "step1.pt"
    step.write_bytes(b"weights")
    artifacts.store(step, key="k" * 64, stage="prune", kind="checkpoint", result={"accuracy": 0.5},
                    job_id=first.job_id)
    assert _stored("k" * 64, first.job_id)[1:] == ({"accuracy": 0.5}, None)  # its own retry
    assert _stored("k" * 64, first.job_id + 1)[1:] == ({"accuracy": 0.5}, first.job_id)
    assert _stored("j" * 64, first.job_id) is None


def test_a_forced_run_leaves_the_artifacts_other_jobs_took_and_their_makers_alone(farm_home):
    from sqlalchemy import select

    from farm import db
    from farm.db.models import Artifact
    from farm.worker.runner import _own_key

    first = _prune_stage(0.9)
    second = _prune_stage(0.5)  # takes the first job's dense model
    with db.session() as s:
        before = {a.key: (a.job_id, a.path, a.result) for a in s.scalars(select(Artifact))}
    forced = _prune_stage(0.9, run_no=1)  # trains and prunes again
    with db.session() as s:
        after = {a.key: (a.job_id, a.path, a.result) for a in s.scalars(select(Artifact))}
    assert all(after[k] == v for k, v in before.items())  # the first job still made what the second took
    spec = JobSpec(**TINY, sparsity=0.9, recipe="quick", subset=64, stages=("train", "prune"), run=1).resolve()
    mine = {k: v for k, v in after.items() if k not in before}
    assert sorted(mine) == sorted(_own_key(spec, spec.stage_key(stage)) for stage in ("train", "prune"))
    assert {job for job, _, _ in mine.values()} == {forced.job_id} and first.job_id != second.job_id


def test_jobs_side_by_side_train_a_shared_step_once(farm_home, monkeypatch):
    """A 90% job and a 97% job at once (two workers): the 90% prune is the other's first step, so
    one of them trains it and the other waits for it instead of training it too."""
    import threading
    import time

    from sqlalchemy import select

    import farm.compress
    from farm import db
    from farm.db.models import Job, StageLock
    from farm.db.status import JobStatus
    from farm.scheduler.submission import record
    from farm.worker import artifacts
    from farm.worker.runner import run_job

    monkeypatch.setattr(artifacts, "LOCK_POLL_S", 0.05)
    trained, events = [], {}

    def slow(real):  # long enough that the second job reaches its prune while the first trains
        def run(model, data, pruning, config, *levels, **kwargs):
            trained.append(tuple(levels[0]) if levels else (pruning.sparsity,))
            time.sleep(1.5)
            return real(model, data, pruning, config, *levels, **kwargs)
        return run

    monkeypatch.setattr(farm.compress, "prune_and_retrain", slow(farm.compress.prune_and_retrain))
    monkeypatch.setattr(farm.compress, "prune_in_steps", slow(farm.compress.prune_in_steps))
    with db.session() as s:
        specs = [JobSpec(**TINY, sparsity=x, recipe="quick", subset=64, stages=("train", "prune")).resolve()
                 for x in (0.9, 0.97)]
        ids = [sub.job_id for sub in record(s, specs, status=JobStatus.QUEUED)]

    def run(job_id, owner):  # owners on other hosts, alive while their heartbeats are fresh
        events[job_id] = []
        assert run_job(job_id, owner=owner, on_event=lambda kind, data: events[job_id].append((kind, data))) \
            == JobStatus.SUCCEEDED

    threads = [threading.Thread(target=run, args=(job_id, f"host{job_id}:1")) for job_id in ids]
    for t in threads:
        t.start()
    said = set()  # what `farm status` shows of the running jobs meanwhile
    while any(t.is_alive() for t in threads):
        with db.session() as s:
            said |= {(j.id, j.message) for j in s.scalars(select(Job).where(Job.id.in_(ids))) if j.message}
        time.sleep(0.02)
    for t in threads:
        t.join(timeout=120)
    assert sorted(events) == sorted(ids)
    assert [levels[0] for levels in trained].count(0.9) == 1, trained  # the shared step, once
    plain, stepped = (_stage_of(job_id) for job_id in ids)
    if plain.status == "reused":  # the 97% job got there first and kept its 90% step
        assert plain.result["accuracy"] == stepped.result["steps"][0]["accuracy"]
        waiter, builder = ids
    else:
        assert stepped.result["steps"][0] == {**stepped.result["steps"][0], "reused": True, "from_job": ids[0]}
        builder, waiter = ids
    assert ("waiting", {"name": "prune", "job_id": builder}) in events[waiter]
    assert (waiter, f"waiting for job {builder}") in said
    with db.session() as s:  # said while waiting, not afterwards
        assert [s.get(Job, job_id).message for job_id in ids] == [None, None]
    with db.session() as s:
        assert s.scalars(select(StageLock)).all() == []  # every build lock let go


def _running_elsewhere(job_id: int, owner: str = "elsewhere:1") -> None:
    """The job runs on another host, alive while its heartbeat is fresh."""
    from farm import db
    from farm.db.models import Job, utcnow
    from farm.db.status import JobStatus

    with db.session() as s:
        job = s.get(Job, job_id)
        job.status, job.worker, job.heartbeat_at, job.attempts = JobStatus.RUNNING, owner, utcnow(), 1


def test_a_workers_job_goes_back_on_the_queue_while_another_builds_what_it_needs(farm_home):
    """With `defer` (a Celery worker's delivery) a job that would wait for another running job's
    artifact ends its attempt as queued, uncounted, saying whom it waits for and when it began to
    (the workers' watch sends it again from then), and leaves the other's build lock alone; run
    again once the other let go, it trains and succeeds."""
    from sqlalchemy import select

    from farm import db
    from farm.db.models import Job, StageLock
    from farm.db.status import JobStatus
    from farm.scheduler.submission import record
    from farm.worker import artifacts
    from farm.worker.runner import run_job

    with db.session() as s:
        specs = [JobSpec(**TINY, sparsity=x, recipe="quick", subset=64, stages=("train", "prune")).resolve()
                 for x in (0.9, 0.5)]
        builder, waiter = (sub.job_id for sub in record(s, specs, status=JobStatus.QUEUED))
    _running_elsewhere(builder)
    key = specs[1].stage_key("train")  # the dense model both jobs start from
    assert artifacts.acquire(key, job_id=builder, owner="elsewhere:1")  # the builder trains it now
    assert run_job(waiter, owner="here:1", defer=True) == JobStatus.QUEUED
    with db.session() as s:
        job = s.get(Job, waiter)
        assert (job.status, job.attempts, job.worker, job.message) == (
            JobStatus.QUEUED, 0, None, f"waiting for job {builder}")
        assert job.deferred_at is not None
        assert [lock.key for lock in s.scalars(select(StageLock))] == [key]
    artifacts.release(key, "elsewhere:1")
    assert run_job(waiter, owner="here:1", defer=True) == JobStatus.SUCCEEDED
    with db.session() as s:
        job = s.get(Job, waiter)
        assert (job.attempts, job.message, job.deferred_at) == (1, None, None)


def test_a_stepped_prune_defers_without_a_failed_stage_or_a_lock_left(farm_home):
    """A 97% job whose 90% step another running job is training defers from inside its prune
    stage: no prune row is left (not "failed: waiting for job N"), nor any lock of its own."""
    from sqlalchemy import select

    from farm import db
    from farm.db.models import Job, Stage, StageLock
    from farm.db.status import JobStatus
    from farm.scheduler.submission import record
    from farm.worker import artifacts
    from farm.worker.runner import run_job

    with db.session() as s:
        specs = [JobSpec(**TINY, sparsity=x, recipe="quick", subset=64, stages=("train", "prune")).resolve()
                 for x in (0.9, 0.97)]
        builder, waiter = (sub.job_id for sub in record(s, specs, status=JobStatus.QUEUED))
    _running_elsewhere(builder)
    step = specs[1].stage_key("prune", specs[1].prune_steps[:1])  # the 90% step: the builder's prune
    assert step == specs[0].stage_key("prune")
    assert artifacts.acquire(step, job_id=builder, owner="elsewhere:1")
    assert run_job(waiter, owner="here:1", defer=True) == JobStatus.QUEUED
    with db.session() as s:
        stages = {st.name: st.status for st in s.scalars(select(Stage).where(Stage.job_id == waiter))}
        assert stages == {"train": "succeeded"}, stages  # it trained the dense model, then waited
        assert [lock.key for lock in s.scalars(select(StageLock))] == [step]
        assert s.get(Job, waiter).message == f"waiting for job {builder}"
    artifacts.release(step, "elsewhere:1")
    assert run_job(waiter, owner="here:1", defer=True) == JobStatus.SUCCEEDED
    with db.session() as s:  # the dense model its earlier attempt trained is its own, not "reused"
        stages = {st.name: (st.status, st.seconds > 0) for st in s.scalars(select(Stage).where(Stage.job_id == waiter))}
        assert stages == {"train": ("succeeded", True), "prune": ("succeeded", True)}, stages


def _stage_of(job_id: int, name: str = "prune"):
    from sqlalchemy import select

    from farm import db
    from farm.db.models import Stage

    with db.session() as s:
        return s.scalars(select(Stage).where(Stage.job_id == job_id, Stage.name == name)).one()


def test_a_stepped_prune_that_fails_after_taking_its_step_locks_lets_them_go(farm_home, monkeypatch):
    """A database error right after the locks were taken (the look for steps stored meanwhile)
    left them held by a live process: jobs waiting for those steps waited for ever."""
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError

    from farm import db
    from farm.db.models import StageLock
    from farm.db.status import JobStatus
    from farm.scheduler.submission import record
    from farm.worker import runner

    real, calls = runner._furthest, []

    def flaky(keys, job_id):
        calls.append(keys)
        if len(calls) == 2:
            raise OperationalError("SELECT ...", {}, Exception("database is locked"))
        return real(keys, job_id)

    monkeypatch.setattr(runner, "_furthest", flaky)
    with db.session() as s:
        spec = JobSpec(**TINY, sparsity=0.97, recipe="quick", subset=64, stages=("train", "prune")).resolve()
        [sub] = record(s, [spec], status=JobStatus.QUEUED)
    assert runner.run_job(sub.job_id, owner="elsewhere:1") == JobStatus.FAILED
    with db.session() as s:
        assert s.scalars(select(StageLock)).all() == []
