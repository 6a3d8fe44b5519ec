"""One exception type for bad input that a user can fix."""

from __future__ import annotations

from collections.abc import Iterable


class PlPruningError(ValueError):
    """Bad input: the message names the bad value and what is allowed."""


def choice_error(what: str, value: object, choices: Iterable[object]) -> PlPruningError:
    """Build the error for a value that is not one of ``choices``."""
    listed = ", ".join(str(c) for c in choices)
    return PlPruningError(f"unknown {what} {value!r}; choose one of: {listed}")
