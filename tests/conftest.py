"""Shared test setup: every test gets its own FARM_HOME, so no test sees another's files."""

import os

import pytest


@pytest.fixture(autouse=True)
def farm_home(tmp_path, monkeypatch):
    home = tmp_path / "farm-home"
    monkeypatch.setenv("FARM_HOME", str(home))
    monkeypatch.delenv("FARM_BROKER_URL", raising=False)
    monkeypatch.delenv("FARM_DB_URL", raising=False)
    return home


def require_services() -> bool:
    """CI sets FARM_TEST_REQUIRE_SERVICES=1: there a missing Redis/PostgreSQL fails, not skips."""
    return os.environ.get("FARM_TEST_REQUIRE_SERVICES") == "1"
