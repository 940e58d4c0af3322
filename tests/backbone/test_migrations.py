"""Alembic migrations build the schema from empty on SQLite and PostgreSQL, matching the models."""

import pytest
from sqlalchemy import create_engine

from farm.db.session import (SQLITE_BUSY_TIMEOUT_MS, current_revision, dispose_all, get_engine,
                              head_revision, table_names, upgrade)
from farm.db.models import Base

TABLES = sorted([*Base.metadata.tables, "alembic_version"])


def _no_drift(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_sqlite_upgrade_from_empty(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert upgrade(url) == head_revision()
    engine = create_engine(url)
    assert table_names(engine) == TABLES
    assert current_revision(engine) == head_revision()
    _no_drift(url)
    assert upgrade(url) == head_revision()  # a second run is a no-op


@pytest.mark.services
def test_postgresql_upgrade_from_empty(pg_url):
    assert upgrade(pg_url) == head_revision()
    engine = create_engine(pg_url)
    assert table_names(engine) == TABLES
    engine.dispose()
    _no_drift(pg_url)


@pytest.mark.services
def test_postgresql_needs_explicit_upgrade(pg_url):
    from farm.errors import FarmError

    with pytest.raises(FarmError, match="farm db upgrade"):
        get_engine(pg_url)


def test_sqlite_default_is_wal_and_upgraded_on_first_use(farm_home):
    engine = get_engine()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
    assert (farm_home / "farm.db").is_file()
    dispose_all()


def test_farm_db_upgrade_command(tmp_path, farm_env, farm_cli):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = farm_cli(["db", "upgrade", "--url", url], farm_env)
    assert done.returncode == 0 and f"schema {head_revision()}" in done.stderr
    current = farm_cli(["db", "current", "--url", url], farm_env)
    assert current.stdout.startswith(head_revision())
    bad = farm_cli(["db", "upgrade", "--url", "postgresql+psycopg2://postgres@127.0.0.1:1/x"], farm_env)
    assert bad.returncode == 1 and "cannot reach the database" in bad.stderr


@pytest.mark.services
def test_a_bare_postgresql_url_uses_the_shipped_driver(pg_url):
    # postgresql:// means psycopg 3 to SQLAlchemy 2.1, which farm does not ship (was: "No module
    # named 'psycopg'"); the URL users copy from PostgreSQL's docs must work as it is.
    bare = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    assert upgrade(bare) == head_revision()


def test_sqlite_database_of_the_first_schema_upgrades_with_its_rows(tmp_path):
    """A user's existing 0001 database: metrics rows keep their values and gain environment_id."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert upgrade(url, revision="0001") == "0001"
    _rows_of_a_finished_job(url)
    assert upgrade(url) == head_revision()
    _no_drift(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select job_id, accuracy, environment_id from metrics").all() == [(1, 0.9, None)]
    engine.dispose()


def _rows_of_a_finished_job(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("insert into jobs (id, spec_hash, spec, model, dataset, sparsity, method, scheme,"
                             " bits, seed, device, priority, status, progress, attempts, max_attempts,"
                             " cancel_requested, created_at) values (1, 'h', '{}', 'tiny', 'synthetic', 0.5,"
                             " 'gradual', 'fp32', 32, 0, 'cpu', 0, 'SUCCEEDED', 1.0, 1, 3, false, '2026-11-26')")
        conn.exec_driver_sql("insert into metrics (job_id, accuracy, bits, scheme, created_at)"
                             " values (1, 0.9, 32, 'fp32', '2026-11-26')")
        conn.exec_driver_sql("insert into stages (job_id, name, status) values (1, 'train', 'SUCCEEDED')")
    engine.dispose()


def _child_rows(url: str) -> tuple:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = (conn.exec_driver_sql("select job_id, accuracy from metrics").all(),
                conn.exec_driver_sql("select job_id, name from stages").all())
    engine.dispose()
    return rows


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_down_and_up_again_keeps_every_row(tmp_path, backend, request):
    """Down to 0002 and up again: a job's metrics and stages stay. On SQLite the batch copy of
    `jobs` dropped the old table with foreign keys enforced, and that drop deleted every row
    referencing it (ON DELETE CASCADE)."""
    from farm.db.session import downgrade

    url = f"sqlite:///{tmp_path / 'd.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    assert upgrade(url) == head_revision()
    _rows_of_a_finished_job(url)
    expected = ([(1, 0.9)], [(1, "train")])
    assert downgrade(url, "0002") == "0002"
    assert _child_rows(url) == expected
    assert upgrade(url) == head_revision()
    assert _child_rows(url) == expected
    _no_drift(url)
    if backend == "sqlite":  # enforcement is back on for the connections that follow
        engine = get_engine(url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        dispose_all()
