"""`farm db`: schema migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from farm.cli.command import Command
from farm.cli.render import err

db_app = typer.Typer(help="The results database.", no_args_is_help=True)


@db_app.command(cls=Command)
def upgrade(url: Annotated[str | None, typer.Option(help="database URL (default: settings)")] = None,
            revision: Annotated[str, typer.Option(help="target revision")] = "head"):
    """Apply Alembic migrations up to --revision (default: head, the one farm needs)."""
    from alembic.util import CommandError

    from farm.db.session import database_url, head_revision, masked
    from farm.db.session import upgrade as run_upgrade
    from farm.errors import FarmError

    url = database_url(url)
    try:
        reached = run_upgrade(url, revision)
    except CommandError as e:  # an unknown revision: one line, not Alembic's traceback
        raise FarmError(f"cannot upgrade to revision {revision!r}: {e} (farm's latest is "
                        f"{head_revision()})") from None
    err.print(f"database {masked(url)} is at schema {reached}")


@db_app.command(cls=Command)
def current(url: Annotated[str | None, typer.Option(help="database URL (default: settings)")] = None):
    """Print the database's schema revision and the one farm needs."""
    from farm.db.session import _create_engine, check_reachable, current_revision, database_url, head_revision

    engine = _create_engine(database_url(url))
    check_reachable(engine)
    typer.echo(f"{current_revision(engine) or 'empty'} (farm needs {head_revision()})")
