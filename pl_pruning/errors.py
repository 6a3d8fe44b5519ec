"""One exception type for bad input that a user can fix.

``PlPruningError`` means *bad input*: a value, a file or a setup the user chose and can
change (the message names it and, where there is a list, what is allowed). The command
line prints it as one line and exits with status 2. A failure of the program itself
raises an ordinary exception (``RuntimeError``, ``AssertionError``, ...), which keeps its
traceback everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable


class PlPruningError(ValueError):
    """Bad input: the message names the bad value and what is allowed."""


def choice_error(what: str, value: object, choices: Iterable[object]) -> PlPruningError:
    """Build the error for a value that is not one of ``choices``."""
    listed = ", ".join(str(c) for c in choices)
    return PlPruningError(f"unknown {what} {value!r}; choose one of: {listed}")
