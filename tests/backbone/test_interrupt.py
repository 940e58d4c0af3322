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


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated")])  # kill, timeout
def test_ctrl_c_cancels_the_job_and_the_same_command_resumes(farm_env, farm_home, sig, code, word):
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
    assert _query(farm_home, "select status, message from jobs") == [("cancelled", "interrupted by the user")]
    assert _query(farm_home, "select name, status, message from stages order by id") == [
        ("train", "succeeded", None), ("prune", "succeeded", None),
        ("quantize", "cancelled", "interrupted by the user")]

    again = run_farm([*ARGS, "--format", "json"], farm_env)
    assert again.returncode == 0, again.stderr
    detail = json.loads(again.stdout)
    assert detail["job"]["job_id"] == 1 and detail["job"]["status"] == "succeeded"
    assert [s["status"] for s in detail["stages"]] == ["reused", "reused", "succeeded", "skipped"]
