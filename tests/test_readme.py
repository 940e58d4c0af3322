"""The README is the user's first contact: its commands, settings and example files must be real."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm import settings
from farm.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _readme_commands() -> list[list[str]]:
    """Every `farm ...` command line shown in the README's indented blocks, split on ';' and '&'."""
    lines = []
    for raw in re.findall(r"^ {4}(farm .*)$", README, flags=re.M):
        for part in re.split(r"[;&]", raw.split("#")[0]):
            if part.strip().startswith("farm "):
                lines.append(part.split()[1:])
    return lines


@pytest.mark.parametrize("argv", _readme_commands(), ids=lambda a: " ".join(a[:2]))
def test_readme_command_exists(argv):
    """Each command (and sub-command) shown in the README answers --help, with help text."""
    words = [w for w in argv if not w.startswith("-")]
    path = words[:2] if words and words[0] in ("sweep", "plot", "db") else words[:1]
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_readme_options_exist():
    """Options the README uses are real options of their commands."""
    for argv in _readme_commands():
        words = [w for w in argv if not w.startswith("-")]
        path = words[:2] if words and words[0] in ("sweep", "plot", "db") else words[:1]
        help_text = CliRunner().invoke(app, [*path, "--help"]).output
        for opt in (w for w in argv if w.startswith("--")):
            assert opt in help_text, f"README uses {opt} with farm {' '.join(path)}"


def test_readme_settings_are_the_settings():
    documented = set(re.findall(r"`FARM_([A-Z_]+)`", README))
    assert {k.upper() for k in settings.DOC} <= documented


def test_example_sweep_file_is_valid():
    from farm.scheduler import sweep

    plan = sweep.load(ROOT / "sweeps" / "fmnist.yaml")
    assert len(plan.specs) == 16
