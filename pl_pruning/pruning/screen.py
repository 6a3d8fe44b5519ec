"""The cheap screen: how much a planned step costs before any fine-tuning, in seconds.

A fine-tuning epoch is the expensive part of a step. Before spending one, the controller
can cut a *copy* of the network, re-estimate its BatchNorm statistics on a few training
batches (the surviving filters' activations shift when their neighbours go, and stale
running statistics alone can make a recoverable network look broken), and measure its
accuracy on a few held-out batches. A step whose screened accuracy is far below the
accepted network's is unlikely to recover in one epoch: the schedule halves it and
screens again, at no epoch's cost (:meth:`~pl_pruning.pruning.schedule.Schedule.decide`).

Example::

    screen = Screen(pruner, train_batches, heldout_batches)
    screen.drop(model, plan, scores)   # accuracy points lost by the cut, before fine-tuning
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pl_pruning.modes import eval_mode, kept_modes
from pl_pruning.pruning.planner import FilterScores
from pl_pruning.pruning.pruner import Pruner, private_copy
from pl_pruning.structure.batches import inputs_from_batch, labels_from_batch, logits_of

__all__ = ["Screen", "accuracy", "reestimate_batchnorm"]


@torch.no_grad()
def accuracy(module: nn.Module, batches: Sequence[Any]) -> float:
    """Top-1 accuracy of ``module`` (in eval mode) over labelled ``batches``."""
    correct = total = 0
    with eval_mode(module):
        for batch in batches:
            logits = logits_of(module(inputs_from_batch(batch)), type(module).__name__)
            labels = labels_from_batch(batch).to(logits.device)
            correct += int((logits.argmax(1) == labels).sum())
            total += labels.numel()
    return correct / max(1, total)


@torch.no_grad()
def reestimate_batchnorm(module: nn.Module, batches: Sequence[Any]) -> None:
    """Replace every BatchNorm's running mean and variance by their average over
    ``batches`` (forward passes in train mode, nothing else changes)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or not batches:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    try:
        with kept_modes(module):
            module.train()
            for batch in batches:
                module(inputs_from_batch(batch))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


class Screen:
    """Screens planned steps against the network they would be cut from.

    Args:
        pruner: the run's pruner (its settings cut the copy).
        train_batches: batches whose inputs re-estimate the copy's BatchNorm statistics.
        heldout_batches: labelled batches the accuracies are measured on.
    """

    def __init__(self, pruner: Pruner, train_batches: Sequence[Any], heldout_batches: Sequence[Any]) -> None:
        self.pruner = pruner
        self.train_batches, self.heldout_batches = list(train_batches), list(heldout_batches)

    def drop(self, module: nn.Module, plan: Mapping[str, list[int]], scores: FilterScores) -> float:
        """Accuracy lost (a fraction, positive = worse) by cutting ``plan`` from ``module``,
        after BatchNorm re-estimation, against ``module`` as it is."""
        reference = accuracy(module, self.heldout_batches)
        trial = private_copy(module)
        self.pruner.cut(trial, plan, scores.copy())
        reestimate_batchnorm(trial, self.train_batches)
        return reference - accuracy(trial, self.heldout_batches)
