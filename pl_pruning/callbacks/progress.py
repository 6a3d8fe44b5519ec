"""Progress that works in a terminal and in a file.

``PruningProgressBar``: Lightning's rich bar, its "Epoch k/N" counting to the epochs the fit
can still spend (the end of a planned final fine-tune, not ``max_epochs``). ``EpochLines``: one
plain line per epoch through the ``pl_pruning`` logger, for output that is not a terminal
(SLURM, nohup), where a bar prints nothing until the fit ends.

Example::

    trainer = L.Trainer(callbacks=[..., EpochLines()], enable_progress_bar=False)
"""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar

from pl_pruning.callbacks.logs import info
from pl_pruning.callbacks.lookup import find_callback
from pl_pruning.callbacks.phase_controller import PhaseController

__all__ = ["EpochLines", "PruningProgressBar", "planned_epochs"]


def planned_epochs(trainer: L.Trainer) -> int | None:
    """The epochs the fit will have run when it ends, as far as known now: the
    :class:`PhaseController`'s plan if one is on the Trainer, else ``max_epochs``."""
    controller = find_callback(trainer, PhaseController)
    if controller is not None:
        return controller.planned_epochs(trainer)
    return trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None


class PruningProgressBar(RichProgressBar):
    """``RichProgressBar`` whose epoch total is :func:`planned_epochs`."""

    def _get_train_description(self, current_epoch: int) -> str:
        total = planned_epochs(self.trainer)
        description = f"Epoch {current_epoch}" + (f"/{total - 1}" if total is not None else "")
        if len(self.validation_description) > len(description):  # as Lightning's: no flicker
            description = f"{description:{len(self.validation_description)}}"
        return description


class EpochLines(Callback):
    """After every training epoch (and its validation), one line: the epoch out of
    :func:`planned_epochs`, the epoch's scalar metrics and its wall time."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = planned_epochs(trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if "/" not in k and getattr(v, "numel", lambda: 1)() == 1}
        values = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        info(f"epoch {trainer.current_epoch + 1}/{total if total is not None else '?'}: "
             f"{values or 'no metrics'} ({time.monotonic() - self._started:.1f} s)")
