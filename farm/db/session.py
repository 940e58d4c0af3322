"""Engines and sessions for the results database, and its schema upgrades.

SQLite (the default, one file in settings.home) runs in WAL mode with a busy timeout and takes its
write lock at BEGIN, so the CLI, in-process jobs and local workers can share it. PostgreSQL serves
a multi-host farm; its schema is upgraded by `farm db upgrade` (the compose file's migrate service),
while a SQLite file is upgraded on first use.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from farm import settings as farm_settings
from farm.errors import FarmError, ServiceUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000  # writers queue up to this long before "database is locked"
PG_CONNECT_TIMEOUT_S = 5  # an unreachable PostgreSQL fails fast with one line

_engines: dict[str, Engine] = {}
_makers: dict[str, sessionmaker] = {}


def masked(url: str) -> str:
    """The URL without its password, for error messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def database_url(url: str | None = None) -> str:
    url = url or farm_settings.load().db_url
    # A bare postgresql:// means psycopg (3) to SQLAlchemy 2.1; farm ships psycopg2.
    return "postgresql+psycopg2://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's BEGIN below, not the driver, open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        # IMMEDIATE takes the write lock up front: a read-then-write transaction then waits on
        # the busy timeout instead of failing with SQLITE_BUSY when it upgrades its lock.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _create_engine(url: str, **kw) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise FarmError(f"database URL {masked(url)!r} is not valid: {e}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kw)
        _sqlite_pragmas(engine)
        return engine
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    try:
        return create_engine(url, pool_pre_ping=not kw, connect_args=connect_args, **kw)
    except (ImportError, ArgumentError) as e:
        raise FarmError(f"database URL {masked(url)!r} cannot be used: {e}") from None


def get_engine(url: str | None = None, *, upgrade_sqlite: bool = True) -> Engine:
    """The engine for `url` (default: settings.db_url), checked reachable and at the current schema."""
    url = database_url(url)
    if url not in _engines:
        engine = _create_engine(url)
        check_reachable(engine)
        if upgrade_sqlite and engine.dialect.name == "sqlite":
            upgrade(engine)
        else:
            check_schema(engine)
        _engines[url] = engine
    return _engines[url]


def check_reachable(engine: Engine) -> None:
    try:
        with engine.connect():
            pass
    except OperationalError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise ServiceUnavailable(f"cannot reach the database {masked(str(engine.url))}: {reason}") from None


def sessions(url: str | None = None) -> sessionmaker:
    url = database_url(url)
    if url not in _makers:
        _makers[url] = sessionmaker(get_engine(url), expire_on_commit=False)
    return _makers[url]


@contextmanager
def session(url: str | None = None) -> Iterator[Session]:
    """A unit of work: commits when the block ends, rolls back on error."""
    with sessions(url).begin() as s:
        yield s


_unpooled: dict[str, sessionmaker] = {}


@contextmanager
def unpooled_session(url: str | None = None) -> Iterator[Session]:
    """session(), on a connection opened for this unit of work and closed after it: for a thread
    of a process that forks (the Celery worker's main process), so no pooled connection is ever
    inherited by a child while this thread is using it."""
    from sqlalchemy.pool import NullPool

    url = database_url(url)
    if url not in _unpooled:  # (the caller checked the schema: `farm worker` does before it starts)
        _unpooled[url] = sessionmaker(_create_engine(url, poolclass=NullPool), expire_on_commit=False)
    with _unpooled[url].begin() as s:
        yield s


def dispose_all(*, close: bool = True) -> None:
    """Drop pooled connections: needed after fork (Celery prefork children; close=False there, so
    the parent's connections on the inherited sockets stay open) and in tests."""
    for engine in _engines.values():
        engine.dispose(close=close)
    _engines.clear()
    _makers.clear()


# --- schema ---------------------------------------------------------------------------------

def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "farm.db:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    import logging

    from alembic.runtime.migration import MigrationContext

    # Reading the revision is not a migration: without this every job's first session logged
    # alembic's "Context impl PostgresqlImpl" and "Will assume transactional DDL" at INFO.
    quiet = logging.getLogger("alembic.runtime.migration")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))  # setLevel, not .level: it clears the loggers' cache
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        quiet.setLevel(level)


def check_schema(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise FarmError(f"the database {masked(str(engine.url))} is at schema {current or 'empty'}, "
                        f"farm needs {head}: run `farm db upgrade`")


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """Serialise first-use upgrades of one SQLite file across processes."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:":
        yield
        return
    with open(f"{db}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(engine: Engine | str | None = None, revision: str = "head") -> str:
    """Run the Alembic migrations up to `revision`; returns the revision reached."""
    from alembic import command

    if not isinstance(engine, Engine):
        engine = _create_engine(database_url(engine))
        check_reachable(engine)
    with _file_lock(engine):
        if current_revision(engine) == head_revision() and revision == "head":
            return head_revision()
        with _migrating(engine) as conn:
            command.upgrade(_alembic_config(conn), revision)
    return current_revision(engine)


def downgrade(engine: Engine | str | None, revision: str) -> str | None:
    """Run the Alembic migrations down to `revision`; returns the revision reached."""
    from alembic import command

    if not isinstance(engine, Engine):
        engine = _create_engine(database_url(engine))
        check_reachable(engine)
    with _file_lock(engine), _migrating(engine) as conn:
        command.downgrade(_alembic_config(conn), revision)
    return current_revision(engine)


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction for migrations. On SQLite without foreign key enforcement:
    a batch migration copies a table and drops the old one, and with enforcement on that drop
    deleted the rows of every table referencing it (ON DELETE CASCADE: a downgrade of 0003
    emptied stages and metrics). The pragma is a no-op inside a transaction, so it goes to the
    driver's connection before SQLAlchemy's BEGIN, and back on before the pool has it again."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                yield conn
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys = ON")


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())
