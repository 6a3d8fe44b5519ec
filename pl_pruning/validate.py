"""Argument checks shared by every callback and entry point.

Each raises :class:`~pl_pruning.errors.PlPruningError` with a message that names the
argument, the bad value and what is allowed. ``bool`` is never taken for a number
(``finetune_epochs=True`` is refused, not read as 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pl_pruning.errors import PlPruningError, choice_error


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(name: str, value: Any, minimum: int | None = None, *, optional: bool = False) -> int | None:
    """An integer ``>= minimum`` (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if not is_int(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        none = " or None" if optional else ""
        raise PlPruningError(f"{name} must be an integer{bound}{none}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, optional: bool = False) -> float | None:
    """A finite number in the interval given by ``low``/``high`` (open ends as flagged)."""
    if value is None and optional:
        return None
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise PlPruningError(f"{name} must be {_interval(low, high, low_open, high_open)}"
                             f"{' or None' if optional else ''}, got {value!r}")
    return float(value)


def check_fraction(name: str, value: Any, *, zero_ok: bool = False) -> float:
    """A number in ``(0, 1)`` (``[0, 1)`` with ``zero_ok``)."""
    return check_number(name, value, 0.0, 1.0, low_open=not zero_ok, high_open=True)  # type: ignore[return-value]


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PlPruningError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise choice_error(name, value, choices)
    return value


def check_names(name: str, value: Any, *, allow_empty: bool = True) -> list[str]:
    """A list of strings (a single string is refused: it is almost always a missing list)."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise PlPruningError(f"{name} must be a list of names, got {value!r}")
    names = list(value)
    if not all(isinstance(n, str) for n in names):
        raise PlPruningError(f"{name} must be a list of names, got {value!r}")
    if not names and not allow_empty:
        raise PlPruningError(f"{name} must not be empty")
    return names


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "a finite number"
