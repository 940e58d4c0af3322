"""Sweep files that are not YAML text (binary, UTF-16, a stray NUL) end `farm sweep submit` with
one error line and exit status 1, as every other malformed sweep file does: a file of bytes
ended in a UnicodeDecodeError traceback (a new-user walkthrough)."""

from __future__ import annotations

import sys

import pytest

from farm.cli.app import main


def _farm(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`farm ARGS` through the console script's main(), in this process: (exit status, stderr)."""
    from farm.db.session import dispose_all

    monkeypatch.setattr(sys, "argv", ["farm", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        dispose_all()
    return code, capsys.readouterr().err


@pytest.mark.parametrize("data, words", [
    (b"\x00\xff\xfe", "is not UTF-8 text (byte 0xff at offset 1)"),  # the walkthrough's file
    ("grid:\n  model: tiny\n".encode("utf-16"), "is not UTF-8 text (byte 0xff at offset 0)"),
    # UTF-8, but a character YAML refuses: PyYAML's message ran over two lines
    (b"grid:\n  model: tiny\x00\n", "is not valid YAML at line 2: special characters are not allowed"),
], ids=["binary", "utf-16", "nul"])
def test_a_sweep_file_that_is_not_text_is_one_error_line(data, words, tmp_path, farm_home, monkeypatch, capsys):
    path = tmp_path / "b.yaml"
    path.write_bytes(data)
    code, err = _farm(["sweep", "submit", str(path)], monkeypatch, capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("farm: error: "), err
    assert f"{path} {words}" in lines[0], lines[0]
    assert not (farm_home / "farm.db").exists() or _no_jobs(farm_home)  # refused before anything is written


def _no_jobs(home) -> bool:
    import sqlite3

    with sqlite3.connect(home / "farm.db") as conn:
        return conn.execute("select count(*) from jobs").fetchone()[0] == 0
