"""The same reads on PostgreSQL, the multi-host farm's database."""

import json
import uuid

import pytest

from .cli import invoke
from .results_db import fill

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@pytest.fixture
def pg_results(monkeypatch):
    import psycopg2

    from farm.db.session import dispose_all, upgrade

    try:
        from tests.conftest import require_services
    except ImportError:
        from conftest import require_services
    name = f"farm_report_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(PG_DSN, connect_timeout=3)
    except Exception as e:
        message = f"PostgreSQL at 127.0.0.1:5432 is not reachable ({e})"
        pytest.fail(message) if require_services() else pytest.skip(message)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        truth = fill(url)
        monkeypatch.setenv("FARM_DB_URL", url)
        yield truth
    finally:
        dispose_all()
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.mark.services
def test_compare_and_front_on_postgresql(pg_results, tmp_path):
    out = invoke("compare", "--sweep", pg_results.grid_sweep, "--format", "json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert len(rows) == len(pg_results.timed_jobs) + 3
    assert {r["gpu"] for r in rows if r["gpu"]} == {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"}
    front = invoke("plot", "pareto", "--sweep", pg_results.grid_sweep, "--x", "size", "--out",
                   tmp_path / "p", "--format", "json")
    assert front.exit_code == 0, front.output
    assert (tmp_path / "p.svg").exists() and json.loads(front.stdout)


@pytest.mark.services
def test_results_filters_by_the_scope_in_the_spec_on_postgresql(pg_results):
    """--scope reads the spec's JSON in SQL (->> here, json_extract on SQLite)."""
    from typer.testing import CliRunner

    from farm.cli.app import app

    def rows(*args):
        out = CliRunner().invoke(app, ["results", *args, "--format", "json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)

    everything = rows()
    assert everything and {r["scope"] for r in everything} == {"global"}
    assert len(rows("--scope", "global")) == len(everything) and rows("--scope", "lamp") == []
