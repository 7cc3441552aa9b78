"""Exceptions that the CLI turns into a one-paragraph message and an exit code."""


class BadInputError(Exception):
    """Bad config, symbols or data: the run stops before anything starts (exit 2)."""


class DataError(BadInputError):
    """A data file that cannot be used, with the file and the problem named."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class LockedError(Exception):
    """Another run holds the lock on this root (exit 3)."""
