"""Ctrl-C during a job run here (no broker): the job is cancelled, not failed, the command says so
in one line and exits 130, and the same command run again resumes from the stored stages."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess

import pytest

from .conftest import FARM, ROOT, TINY, run_farm, wait_for

# A quantized scheme, so the quantize stage fine-tunes for a few seconds: Ctrl-C lands inside it,
# after train and prune have stored their artifacts.
ARGS = ["submit", "tiny", *TINY, "--scheme", "linear", "--bits", "8", "--finetune-epochs", "20"]


def _query(home, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{home / 'farm.db'}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:  # not created yet
        return []


def _running_stage(home) -> str | None:
    rows = _query(home, "select name from stages where status = 'running'")
    return rows[0][0] if rows else None


@pytest.mark.parametrize("sig, code, word, why", [(signal.SIGINT, 130, "interrupted", "interrupted by the user"),
                                                   (signal.SIGTERM, 143, "terminated", "terminated by SIGTERM")])
def test_ctrl_c_cancels_the_job_and_the_same_command_resumes(farm_env, farm_home, sig, code, word, why):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")} | farm_env
    proc = subprocess.Popen(FARM + ARGS, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _running_stage(farm_home) == "quantize", timeout=120, every=0.05,
                 what="the quantize stage running")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    [line] = [x for x in stderr.splitlines() if f"farm: {word}" in x] or [stderr]
    assert line.startswith(f"farm: {word}: job 1 cancelled during quantize"), line
    assert "run the same command again to resume" in line
    assert _query(farm_home, "select status, message from jobs") == [("cancelled", why)]  # kill is not the user
    assert _query(farm_home, "select name, status, message from stages order by id") == [
        ("train", "succeeded", None), ("prune", "succeeded", None), ("quantize", "cancelled", why)]

    again = run_farm([*ARGS, "--format", "json"], farm_env)
    assert again.returncode == 0, again.stderr
    detail = json.loads(again.stdout)
    assert detail["job"]["job_id"] == 1 and detail["job"]["status"] == "succeeded"
    # the stages the first attempt computed keep saying so (and their seconds), not "reused"
    assert [s["status"] for s in detail["stages"]] == ["succeeded", "succeeded", "succeeded", "skipped"]
    assert all(s["seconds"] > 0 for s in detail["stages"][:2]), detail["stages"]


# The windows the runner's guard does not cover: just after the claim, and from the end of the
# stages to the transaction that records the outcome. A signal there is held and delivered
# after (held.py).
NOOP = dict(model="tiny", dataset="synthetic", device="cpu", stages=("noop",))


def _noop_job() -> int:
    from farm import db
    from farm.db.status import JobStatus
    from farm.scheduler.spec import JobSpec
    from farm.scheduler.submission import record

    with db.session() as s:
        [sub] = record(s, [JobSpec(**NOOP).resolve()], status=JobStatus.QUEUED)
        return sub.job_id


def _job_row(job_id: int) -> tuple:
    from farm import db
    from farm.db.models import Job, Metrics

    with db.session() as s:
        job = s.get(Job, job_id)
        return str(job.status), job.message, s.query(Metrics).filter_by(job_id=job_id).count()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_right_after_the_claim_cancels_the_job(farm_home, monkeypatch, capsys, sig):
    import typer

    from farm.cli.progress import interruptible
    from farm.worker import lifecycle
    from farm.worker.runner import run_job

    claim = lifecycle.claim

    def claim_then_signal(*args, **kwargs):
        got = claim(*args, **kwargs)
        os.kill(os.getpid(), sig)  # lands before run_job's guard is entered
        return got

    monkeypatch.setattr(lifecycle, "claim", claim_then_signal)
    job_id = _noop_job()
    with pytest.raises(typer.Exit) as raised, interruptible():  # the signals as the CLI takes them
        run_job(job_id)
    assert raised.value.exit_code == (130 if sig == signal.SIGINT else 143)
    why = "interrupted by the user" if sig == signal.SIGINT else "terminated by SIGTERM"
    assert _job_row(job_id) == ("cancelled", why, 0)
    # delivered once: a second delivery would replace the line that says how to resume
    assert f"job {job_id} cancelled; run the same command again to resume" in capsys.readouterr().err


def test_a_ctrl_c_during_the_insert_cancels_the_job_before_it_starts(farm_home, monkeypatch):
    """Run here, a job is inserted, then claimed: a Ctrl-C between the two left it queued with
    no process to run it. It is held over the insert and cancels the job; the command again runs it."""
    from farm.scheduler import submission
    from farm.scheduler.spec import JobSpec

    record = submission.record

    def record_then_signal(*args, **kwargs):
        got = record(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # inside the insert's transaction
        return got

    monkeypatch.setattr(submission, "record", record_then_signal)
    with pytest.raises(KeyboardInterrupt):
        submission.submit(JobSpec(**NOOP))
    assert _job_row(1) == ("cancelled", "interrupted by the user before it started", 0)
    monkeypatch.setattr(submission, "record", record)
    again = submission.submit(JobSpec(**NOOP))
    assert (again.job_id, again.requeued, str(again.status)) == (1, True, "succeeded")


def test_a_ctrl_c_before_the_claim_cancels_the_job(farm_home, monkeypatch):
    from farm.scheduler import submission
    from farm.scheduler.spec import JobSpec
    from farm.worker import lifecycle

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # after the insert, before the runner took the job

    monkeypatch.setattr(lifecycle, "claim", interrupted)
    with pytest.raises(KeyboardInterrupt, match="job 1 cancelled before it started; run the same command again"):
        submission.submit(JobSpec(**NOOP))
    assert _job_row(1) == ("cancelled", "interrupted by the user before it started", 0)


def test_a_signal_while_results_are_written_is_delivered_after_they_are(farm_home, monkeypatch):
    from farm.worker import runner

    write_results = runner.write_results

    def signal_then_write(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # inside the transaction that ends the job
        return write_results(*args, **kwargs)

    monkeypatch.setattr(runner, "write_results", signal_then_write)
    job_id = _noop_job()
    with pytest.raises(KeyboardInterrupt):
        runner.run_job(job_id)
    assert _job_row(job_id) == ("succeeded", None, 1)


def test_a_signal_between_the_stages_and_the_record_is_delivered_after_it(farm_home, monkeypatch):
    import shutil

    from farm.worker import runner

    rmtree = shutil.rmtree

    def signal_then_remove(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the scratch folder is removed after the stages ran
        return rmtree(*args, **kwargs)

    monkeypatch.setattr(runner.shutil, "rmtree", signal_then_remove)
    job_id = _noop_job()
    with pytest.raises(KeyboardInterrupt):
        runner.run_job(job_id)
    assert _job_row(job_id) == ("succeeded", None, 1)


def test_the_same_signal_twice_is_not_held(farm_home):
    from farm.worker.held import HeldSignals

    with pytest.raises(KeyboardInterrupt), HeldSignals():
        os.kill(os.getpid(), signal.SIGINT)  # noted
        os.kill(os.getpid(), signal.SIGINT)  # the user insists: delivered now
        pytest.fail("a second Ctrl-C was held")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_outside_a_job_is_one_line_too(farm_cli, farm_env, monkeypatch):
    from farm import settings

    def interrupted():
        raise KeyboardInterrupt  # as if Ctrl-C landed while the command was getting ready

    monkeypatch.setattr(settings, "load", interrupted)
    out = farm_cli(["status"], farm_env)
    assert (out.returncode, out.stderr.strip()) == (130, "farm: interrupted")


def test_status_says_when_it_shows_only_the_latest_jobs(farm_cli, farm_env):
    from farm import db
    from farm.db.status import JobStatus
    from farm.scheduler.spec import JobSpec
    from farm.scheduler.submission import record

    with db.session() as s:
        record(s, [JobSpec(**NOOP, seed=seed).resolve() for seed in range(3)], status=JobStatus.QUEUED)
    out = farm_cli(["status", "--limit", "2", "--format", "csv"], farm_env)
    assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 1 + 2
    assert "the latest 2 jobs; --limit N shows more" in out.stderr
    out = farm_cli(["status", "--limit", "3", "--format", "csv"], farm_env)
    assert len(out.stdout.strip().splitlines()) == 1 + 3 and "--limit" not in out.stderr
