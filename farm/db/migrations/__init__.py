"""Alembic migrations of the results database; run them with `farm db upgrade`."""
