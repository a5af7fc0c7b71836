"""Errors more than one module raises (here, below all of them)."""


class DataError(ValueError):
    """A data file is missing, malformed or inconsistent."""
