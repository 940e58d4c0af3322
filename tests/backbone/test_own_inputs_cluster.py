"""A user's own model file and checkpoint through the farm: submitted to Redis, run by a real
`farm worker` process into PostgreSQL. The worker reads the copies stored at submit, so the
user's files can be edited or deleted once the job is queued."""

from __future__ import annotations

import json

import pytest
import torch

from farm import db
from farm.db.models import Job
from farm.db.status import JobStatus

from .conftest import TINY, run_farm, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

NET = '''
from torch import nn


def build(in_channels, num_classes):
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''


def test_a_worker_runs_the_submitted_model_file_and_checkpoint(workers, farm_cluster, tmp_path):
    from farm.models.user import build_from_source

    net = tmp_path / "net.py"
    net.write_text(NET)
    model = build_from_source(NET, "net.py:build", in_channels=3, num_classes=10)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "net.pt")
    r = run_farm(["submit", f"{net}:build", *TINY, "--checkpoint", str(tmp_path / "net.pt"),
                  "--scheme", "linear", "--bits", "8", "--format", "json"], farm_cluster)
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)[0]["job_id"]
    net.unlink()  # queued: the worker needs neither file any more
    (tmp_path / "net.pt").unlink()

    workers.start(1)

    def finished():
        with db.session() as s:
            job = s.get(Job, job_id)
            return job if job.status.is_finished else None

    job = wait_for(finished, timeout=120, every=0.5, what="the job to finish")
    assert job.status == JobStatus.SUCCEEDED, (job.message, workers.logs())
    assert job.model == "net.py:build" and job.spec["epochs"] == 1  # TINY's --epochs: trained on from the checkpoint
    r = run_farm(["show", str(job_id), "--format", "json"], farm_cluster)
    stages = {s["name"]: s for s in json.loads(r.stdout)["stages"]}
    assert [stages[n]["status"] for n in ("train", "prune", "quantize")] == ["succeeded"] * 3
