"""`farm status` says when no worker reads a queued job's queue: a GPU job submitted where only
CPU workers run waited, queued with no message, for as long as anyone watched (a new-user
walkthrough). Real Redis, PostgreSQL and a `farm worker` process."""

from __future__ import annotations

import json
import time

import pytest

from farm.scheduler import queue

from .conftest import TINY, run_farm

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_a_job_queued_where_no_worker_reads_its_queue_says_so(workers, farm_cluster, redis_url):
    workers.start(1, queues="cpu")
    assert queue.served_queues(redis_url) == {"cpu"}
    gpu_job = [a if a != "cpu" else "gpu" for a in TINY]  # --device gpu: a queue nobody reads here
    sent = run_farm(["submit", "tiny", *gpu_job, "--format", "json"], farm_cluster)
    assert sent.returncode == 0, sent.stderr
    job_id = json.loads(sent.stdout)[0]["job_id"]
    shown = run_farm(["status", str(job_id), "--format", "json"], farm_cluster)
    [row] = json.loads(shown.stdout)
    assert row["status"] == "queued"
    assert row["message"] == "no worker answers for the gpu queue: start one (`farm worker --gpu N`)"


def test_no_broker_to_ask_means_no_hint_at_once():
    start = time.monotonic()
    assert queue.served_queues("redis://127.0.0.1:1/0", timeout=0.2) is None
    assert time.monotonic() - start < 2  # kombu's retries took 6 s

