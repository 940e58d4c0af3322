"""The `farm` command run in this process: (exit code, stdout, stderr)."""

import sys

import pytest

from farm.cli.app import main


@pytest.fixture
def farm(monkeypatch, capsys):
    from farm.db.session import dispose_all

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["farm", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    dispose_all()  # an engine of another test's FARM_HOME
    yield run
    dispose_all()
