"""Real services for the backbone tests: a fresh Redis database number and a fresh PostgreSQL
database per test, real `farm worker` processes. Missing services skip the test with a message,
unless FARM_TEST_REQUIRE_SERVICES=1 (CI), where they fail it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

try:
    from tests.conftest import require_services
except ImportError:  # tests/ itself is not a package when pytest puts it on sys.path
    from conftest import require_services

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"
FARM = [sys.executable, "-m", "farm.cli.app"]
ROOT = Path(__file__).resolve().parents[2]


def _missing(what: str, why: Exception) -> None:
    message = f"{what} is not reachable ({why}); start it (see ../shared/SERVICES.md)"
    if require_services():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_url():
    import redis

    try:
        client = redis.Redis(REDIS_HOST, REDIS_PORT, socket_connect_timeout=2)
        client.ping()
    except Exception as e:
        _missing("Redis at 127.0.0.1:6379", e)
    numbers = list(range(1, 16))
    random.shuffle(numbers)
    for n in numbers:  # an empty database number: nobody else's run is using it
        db = redis.Redis(REDIS_HOST, REDIS_PORT, db=n)
        if db.dbsize() == 0:
            db.set("farm-test-claim", os.getpid())
            break
    else:
        pytest.fail("no empty Redis database number (1..15) for this test")
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{n}"
    db.flushdb()


@pytest.fixture
def pg_url():
    import psycopg2

    name = f"farm_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(PG_DSN, connect_timeout=3)
    except Exception as e:
        _missing("PostgreSQL at 127.0.0.1:5432", e)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield PG_URL.format(db=name)
    from farm.db.session import dispose_all

    dispose_all()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def farm_env(farm_home, monkeypatch):
    """Environment for farm commands; the database engine cache is cleared after each test."""
    from farm.db.session import dispose_all

    env = {"FARM_HOME": str(farm_home), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    dispose_all()
    yield env
    dispose_all()


@pytest.fixture
def farm_cluster(farm_env, redis_url, pg_url, monkeypatch):
    """Broker + PostgreSQL configured here and for subprocesses; schema upgraded."""
    from farm.db.session import upgrade

    env = {**farm_env, "FARM_BROKER_URL": redis_url, "FARM_DB_URL": pg_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    upgrade(pg_url)
    return env


def run_farm(args: list[str], env: dict[str, str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    full.update(env)
    return subprocess.run(FARM + args, env=full, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


class Workers:
    """Real `farm worker` processes, each in its own process group (so a test can SIGKILL one)."""

    def __init__(self, env: dict[str, str], logdir: Path):
        self.env, self.logdir = env, logdir
        self.procs: list[subprocess.Popen] = []
        self.stopped: set[int] = set()  # pids this helper killed: not expected to answer

    def start(self, n: int = 1, *, extra_env: dict[str, str] | None = None, queues: str = "cpu",
              wait: bool = True) -> list[subprocess.Popen]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
        full.update(self.env)
        full.update(extra_env or {})
        started = []
        for _ in range(n):
            i = len(self.procs)
            log = open(self.logdir / f"worker{i}.log", "w")
            proc = subprocess.Popen(
                FARM + ["worker", "--queues", queues, "--name", f"w{i}-{uuid.uuid4().hex[:6]}@%h",
                        "--loglevel", "info"],
                env=full, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
            self.procs.append(proc)
            started.append(proc)
        if wait:
            self.wait_ready(len(self.procs) - len(self.stopped))
        return started

    def wait_ready(self, count: int, timeout: float = 60) -> None:
        from farm.worker.celery_app import make_app

        app = make_app(self.env["FARM_BROKER_URL"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.pid not in self.stopped and p.poll() is not None:
                    raise AssertionError(f"worker exited with {p.returncode}:\n{self.logs()}")
            if len(app.control.ping(timeout=0.5) or []) >= count:
                return
        raise AssertionError(f"{count} workers not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(self.logdir.glob("worker*.log")))

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and its pool children (its whole process group)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        self.stopped.add(proc.pid)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.kill(p)


@pytest.fixture
def workers(farm_cluster, tmp_path):
    w = Workers(farm_cluster, tmp_path)
    yield w
    w.stop_all()


def wait_for(predicate, *, timeout: float, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


TINY = ["--dataset", "synthetic", "--device", "cpu", "--recipe", "quick", "--subset", "256",
        "--epochs", "1", "--retrain-epochs", "1", "--finetune-epochs", "1"]


@pytest.fixture
def farm_cli(monkeypatch, capsys):
    """`farm ARGS` through the console script's main(), in this process (no 3 s torch import
    per call); returns a CompletedProcess like run_farm."""
    from farm.cli.app import main
    from farm.db.session import dispose_all

    def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "argv", ["farm", *args])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            dispose_all()
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run
