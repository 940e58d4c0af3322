"""A cancel that lands after a stage's last epoch keeps that stage's work: the stage stores its
result and the next stage boundary honours the cancel, so the job submitted again reuses it
(after the last stage the job keeps its results and says so). Raised at the last epoch's callback, before the checkpoint was saved, it threw
the finished training away and the resubmitted job trained from scratch (a new-user walkthrough).

The real path throughout: `submit` runs the job in this process (no broker, SQLite in the test's
FARM_HOME), the real training loop trains the tiny model on the synthetic set, and the cancel is
`farm cancel`'s own call, made from the progress observer as an epoch ends."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from farm import db
from farm.db.models import Job, Stage
from farm.db.status import JobStatus
from farm.scheduler import control
from farm.scheduler.spec import JobSpec
from farm.scheduler.submission import submit
from farm.worker import artifacts

# a few seconds on two cores; three epochs, so "the last" and "not the last" differ
TINY = dict(model="tiny", dataset="synthetic", device="cpu", recipe="quick", subset=256, batch_size=64,
            epochs=3, retrain_epochs=2, finetune_epochs=1, sparsity=0.5)


class CancelAt:
    """A progress observer that cancels the job once `stage` reports epoch `epoch` (counted as
    the event counts it), and records what ran."""

    def __init__(self, stage: str, epoch: int | None):
        self.stage, self.epoch = stage, epoch
        self.events: list[tuple[str, dict]] = []

    def __call__(self, kind: str, data: dict) -> None:
        self.events.append((kind, data))
        if kind == "epoch" and data.get("stage") == self.stage and data["epoch"] == self.epoch:
            [row] = control.cancel_jobs([self._job_id()])
            assert row.note.startswith("cancel requested"), row  # running here: flagged, not closed

    def _job_id(self) -> int:
        with db.session() as s:
            return s.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING)).one()

    def epochs(self, stage: str) -> list[int]:
        return [d["epoch"] for k, d in self.events if k == "epoch" and d.get("stage") == stage]

    def reused(self) -> list[str]:
        return [d["name"] for k, d in self.events if k == "stage_done" and d["reused"]]


def _stages(job_id: int) -> dict[str, str]:
    with db.session() as s:
        return {row.name: str(row.status) for row in s.scalars(select(Stage).where(Stage.job_id == job_id))}


def _message(job_id: int) -> str:
    with db.session() as s:
        return s.get(Job, job_id).message or ""


def _status(job_id: int) -> JobStatus:
    with db.session() as s:
        return s.get(Job, job_id).status


@pytest.mark.parametrize("stages", [("train", "prune"), ("train",)], ids=["next-stage", "last-stage"])
def test_a_cancel_after_the_last_epoch_keeps_the_stage_and_the_job_again_reuses_it(stages):
    spec = JobSpec(**TINY, stages=stages).resolve()
    first = CancelAt("train", epoch=spec.epochs)
    job_id = submit(spec, on_event=first).job_id
    assert first.epochs("train") == [1, 2, 3] and first.epochs("prune") == []  # prune never trained
    assert _stages(job_id)["train"] == "succeeded"
    assert artifacts.lookup(spec.stage_key("train")) is not None
    if "prune" not in stages:  # nothing left to stop: the job keeps its results and says why
        assert _status(job_id) == JobStatus.SUCCEEDED and "cancel came after its last stage" in _message(job_id)
        return
    assert _status(job_id) == JobStatus.CANCELLED  # honoured at the next boundary, not ignored
    assert _stages(job_id)["prune"] == "cancelled"

    again = CancelAt("train", epoch=None)  # no cancel: run to the end
    assert submit(spec, on_event=again).job_id == job_id
    assert _status(job_id) == JobStatus.SUCCEEDED
    assert again.epochs("train") == [] and again.reused() == ["train"]  # not trained from scratch
    assert again.epochs("prune") == ([1, 2] if "prune" in stages else [])


def test_a_cancel_before_the_last_epoch_still_stops_at_the_next_epoch():
    spec = JobSpec(**TINY, stages=("train", "prune")).resolve()
    seen = CancelAt("train", epoch=1)
    job_id = submit(spec, on_event=seen).job_id
    assert _status(job_id) == JobStatus.CANCELLED
    assert seen.epochs("train") == [1]  # epochs 2 and 3 were not run
    assert _stages(job_id) == {"train": "cancelled"}
    assert artifacts.lookup(spec.stage_key("train")) is None


def test_a_cancel_after_a_prune_steps_last_epoch_keeps_that_step():
    # 98%: three steps (90, 95, 98%) of 2 epochs each, counted 1..6 over the stage
    spec = JobSpec(**{**TINY, "sparsity": 0.98}, stages=("train", "prune")).resolve()
    assert [n for _, n in spec.prune_steps] == [2, 2, 2]
    first = CancelAt("prune", epoch=2)  # the first step's last epoch
    job_id = submit(spec, on_event=first).job_id
    assert _status(job_id) == JobStatus.CANCELLED
    assert first.epochs("prune") == [1, 2, 3]  # stopped one epoch into the second step
    assert artifacts.lookup(spec.stage_key("prune", spec.prune_steps[:1])) is not None

    again = CancelAt("prune", epoch=None)
    submit(spec, on_event=again)
    assert _status(job_id) == JobStatus.SUCCEEDED
    assert again.epochs("prune") == [3, 4, 5, 6]  # from the kept step, not from the dense model
