"""Errors of the report layer (each a farm.errors.FarmError: one line for the user)."""

from farm.errors import FarmError


class NothingToShow(FarmError):
    """The jobs asked about exist but have none of the results a plot or table needs."""
