"""A small Typer app of the report commands, so tests do not depend on farm.cli.app's wiring."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from farm.cli.plot import plot_app
from farm.cli.report import compare, report


def make_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.command()(compare)
    app.command()(report)
    app.add_typer(plot_app, name="plot")
    return app


APP = make_app()


def invoke(*args: str):
    """Run a command; FarmErrors come back as result.exception (farm.cli.app.main prints them)."""
    return CliRunner().invoke(APP, [str(a) for a in args])
