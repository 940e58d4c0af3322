"""Fixtures for the report tests: one filled results database (SQLite via farm.db) per module."""

from __future__ import annotations

import pytest

from .results_db import Truth, fill


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> tuple[str, Truth]:
    from farm.db.session import dispose_all

    url = f"sqlite:///{tmp_path_factory.mktemp('results') / 'farm.db'}"
    truth = fill(url)
    yield url, truth
    dispose_all()


@pytest.fixture
def results_db(filled, monkeypatch) -> Truth:
    """The filled database as this test's FARM_DB_URL (what the CLI and db.session() use)."""
    url, truth = filled
    monkeypatch.setenv("FARM_DB_URL", url)
    return truth
