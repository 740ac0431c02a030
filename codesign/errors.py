"""Errors codesign raises for bad input: the CLI prints them as one line and exits 2."""


class CodesignError(ValueError):
    """A user error (bad argument, missing file, infeasible request) with a one-line message."""
