"""Callbacks find each other through ``trainer.callbacks``, as Lightning's own do."""

from __future__ import annotations

from typing import TypeVar

import lightning as L

T = TypeVar("T")


def find_callback(trainer: L.Trainer, cls: type[T]) -> T | None:
    """The first callback of type ``cls`` on ``trainer``, or ``None``."""
    return next((c for c in trainer.callbacks if isinstance(c, cls)), None)
