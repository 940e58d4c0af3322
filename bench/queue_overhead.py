"""Queue overhead: submit N no-op jobs as one batch, drain them with W `farm worker` processes.

    .venv/bin/python bench/queue_overhead.py [--jobs 1000] [--workers 2] [--db-url URL] [--broker-url URL]

A no-op job goes the whole farm path (spec hash + dedupe insert, Celery message on Redis, worker
claim in the database, stage bookkeeping, result row) with a stage that does nothing, so the
time is all farm + Celery + database overhead. Reports:
  submit_s        validating, inserting and publishing all N jobs (goal: < 2 s for 1,000)
  drain_s         from the workers starting to consume to the last job recorded as succeeded
  overhead_ms     drain_s * workers / N: worker time per job (goal: < 20 ms)
Defaults: a fresh SQLite file in a temporary folder and the first empty Redis database number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def empty_redis_db(host: str = "127.0.0.1", port: int = 6379) -> str:
    import redis

    for n in range(15, 0, -1):
        if redis.Redis(host, port, db=n).dbsize() == 0:
            return f"redis://{host}:{port}/{n}"
    raise SystemExit("no empty Redis database number")


def start_workers(n: int, env: dict[str, str], logdir: Path) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        log = open(logdir / f"worker{i}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "farm.cli.app", "worker", "--queues", "cpu", "--name",
             f"bench{i}@%h", "--loglevel", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True))
    return procs


def wait_ready(broker: str, n: int, timeout: float = 60) -> None:
    from farm.worker.celery_app import make_app

    app = make_app(broker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=0.5) or []) >= n:
            return app
    raise SystemExit(f"{n} workers not ready after {timeout} s")


def succeeded() -> int:
    from sqlalchemy import func, select

    from farm import db
    from farm.db.models import Job

    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.status == db.JobStatus.SUCCEEDED))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--broker-url", default=None, help="default: an empty Redis database number")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-"))
    broker = args.broker_url or empty_redis_db()
    env = {**os.environ, "FARM_HOME": str(tmp), "FARM_BROKER_URL": broker,
           "FARM_DB_URL": args.db_url or f"sqlite:///{tmp / 'farm.db'}", "PYTHONPATH": str(ROOT)}
    os.environ.update({k: env[k] for k in ("FARM_HOME", "FARM_BROKER_URL", "FARM_DB_URL")})

    from farm import db
    from farm.db.status import JobStatus
    from farm.scheduler.queue import check_broker
    from farm.scheduler.spec import JobSpec
    from farm.scheduler.submission import publish, record

    db.upgrade(env["FARM_DB_URL"])
    procs = start_workers(args.workers, env, tmp)
    try:
        app = wait_ready(broker, args.workers)
        # Workers stop consuming while we submit, so the two timings do not share the CPU.
        app.control.cancel_consumer("cpu", reply=True, timeout=5, limit=args.workers)
        # Warm the submit path (imports, connections) outside the timed region.
        check_broker(broker)
        db.get_engine()
        JobSpec(model="tiny").resolve()

        t0 = time.perf_counter()
        specs = [JobSpec(model="tiny", dataset="synthetic", device="cpu", stages=("noop",), seed=i).resolve()
                 for i in range(args.jobs)]
        with db.session() as s:
            subs = record(s, specs, status=JobStatus.QUEUED)
        publish(broker, subs)
        submit_s = time.perf_counter() - t0
        # The clock starts before the workers are told to consume: they drain while the control
        # call waits for its replies (limit: return once every worker answered, not after 5 s).
        t1 = time.perf_counter()
        app.control.add_consumer("cpu", reply=True, timeout=5, limit=args.workers)
        while succeeded() < args.jobs:
            time.sleep(0.02)
        t2 = time.perf_counter()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    result = {
        "jobs": args.jobs, "workers": args.workers,
        "submit_s": round(submit_s, 3), "drain_s": round(t2 - t1, 3),
        "overhead_ms": round((t2 - t1) * args.workers / args.jobs * 1000, 2),
        "jobs_per_s": round(args.jobs / (t2 - t1), 1),
        "db": env["FARM_DB_URL"].split(":")[0], "broker": "redis",
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
