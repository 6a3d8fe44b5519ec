"""Distillation: the dense network teaches the pruned one while it is fine-tuned."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from pl_pruning.callbacks.lookup import find_callback
from pl_pruning.errors import PlPruningError
from pl_pruning.pruning.pruner import private_copy
from pl_pruning.structure.batches import inputs_from_batch, logits_of
from pl_pruning.validate import check_bool, check_number

__all__ = ["Distillation", "distillation_loss"]


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Hinton et al.'s soft-target loss: ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``,
    averaged over the batch (the ``T²`` keeps its gradients on the scale of the hard loss)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t


class Distillation(Callback):
    r"""Add ``weight`` × the soft-target loss of the dense network (the teacher) to every
    training loss while a :class:`~pl_pruning.callbacks.PhaseController` fine-tunes (every
    training step when there is no controller).

    The teacher is the module as ``fit`` receives it (a copy taken in ``setup``, before any
    surgery; saved in checkpoints, so a resumed fit keeps the dense teacher). The student's
    logits are those of the module's own forward call in ``training_step`` (``self(x)``);
    the teacher sees the same inputs, in eval mode, without gradients. The loss is added in
    place before the backward pass, so there is one backward pass (DDP-safe) and what the
    module logs as its loss stays its own.

    Args:
        weight: the soft-target loss's weight, ``> 0``.
        temperature: the softmax temperature ``T``, ``> 0``.
        enabled: ``False`` leaves the callback in place, doing nothing.

    Example::

        trainer = Trainer(callbacks=[EntropyStatistics(), PhaseController(), Distillation()])
    """

    def __init__(self, weight: float = 1.0, temperature: float = 4.0, enabled: bool = True) -> None:
        self.weight = check_number("weight", weight, 0, low_open=True)
        self.temperature = check_number("temperature", temperature, 0, low_open=True)
        self.enabled = check_bool("enabled", enabled)
        self.teacher: nn.Module | None = None
        self._controller: Any = None
        self._logits: Tensor | None = None
        self._inputs: Tensor | None = None
        self._hook: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        from pl_pruning.callbacks.phase_controller import PhaseController

        self._controller = find_callback(trainer, PhaseController)
        self.teacher = private_copy(pl_module).requires_grad_(False)  # the dense network
        self._hook = pl_module.register_forward_hook(self._keep_logits)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _keep_logits(self, module: nn.Module, args: Any, output: Any) -> None:
        # Under DDP, Lightning reaches training_step through the module's own __call__ too
        # (the forward redirection): that call returns the loss, not logits, and is skipped.
        if module.training and torch.is_grad_enabled():
            try:
                self._logits = logits_of(output, type(module).__name__)
            except PlPruningError:
                pass

    def _active(self) -> bool:
        return self.enabled and self.teacher is not None and (
            self._controller is None or self._controller.is_finetuning)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._logits = None
        self._inputs = inputs_from_batch(batch) if self._active() else None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if self._inputs is None:
            return
        if self._logits is None:
            raise PlPruningError(
                "Distillation reads the student's logits from the module's forward call: call the "
                f"module itself (self(x)) in {type(pl_module).__name__}.training_step")
        teacher = self.teacher.to(self._logits.device).eval()
        with torch.no_grad():
            target = logits_of(teacher(self._inputs), "the teacher")
        loss.add_(self.weight * distillation_loss(self._logits, target, self.temperature))
        self._logits = self._inputs = None

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict()} if self.teacher is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "teacher" in state_dict and self.teacher is not None:
            self.teacher.load_state_dict(state_dict["teacher"])
