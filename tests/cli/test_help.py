"""Every command's --help as a user reads it: usage lines a shell would accept, no Python types.

Typer 0.29 wrote `farm cancel [OPTIONS] {JOB_ID}...` and `JOB_ID <list[int]>`."""

import pytest
import typer
from typer.testing import CliRunner

from farm.cli.app import app


def _help(*args: str, width: int = 80):
    return CliRunner().invoke(app, list(args), prog_name="farm", terminal_width=width)


def _paths(group, path=()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*path, name))
        if hasattr(command, "commands"):  # farm plot, sweep, db: their commands too
            found += _paths(command, (*path, name))
    return found


COMMANDS = _paths(typer.main.get_command(app))


def test_every_command_is_checked():
    assert {("cancel",), ("compare",), ("plot", "layers"), ("sweep", "submit")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_usage_line_reads_as_a_shell_would_take_it(path):
    result = _help(*path, "--help")
    assert result.exit_code == 0, result.output
    usage = result.output.split("\n\n")[0]  # the usage line, wrapped or not
    assert usage.startswith(f"Usage: farm {' '.join(path)} ")
    assert "{" not in usage and "<list" not in usage, usage
    assert "<list" not in result.output, result.output  # arguments and options alike


@pytest.mark.parametrize("args, usage", [
    (["cancel"], "Usage: farm cancel [OPTIONS] JOB_ID..."),
    (["status"], "Usage: farm status [OPTIONS] [JOB_ID...]"),
    (["submit"], "Usage: farm submit [OPTIONS] MODEL"),
    (["sweep", "resume"], "Usage: farm sweep resume [OPTIONS] SWEEP_ID"),
])
def test_arguments_are_named_plainly(args, usage):
    assert _help(*args, "--help", width=200).output.startswith(usage + "\n")


def test_a_missing_argument_shows_the_same_usage():
    result = _help("cancel")
    assert result.exit_code == 2 and "Usage: farm cancel [OPTIONS] JOB_ID...\n" in result.output
