"""Torch-Pruning's group-sparsity learning (its ``group_sl`` method) inside a Lightning fit.

Torch-Pruning's reproduction script (``reproduce/main.py`` in VainF/Torch-Pruning) runs
``group_sl`` in three stages: train the dense network with its ``GroupNormPruner``'s
regulariser added to the gradients after every backward pass (``pruner.regularize``: a
weight decay on each coupled group of filters, 16 times stronger on a group's least important
channels than on its most important), then prune in many small global steps until the MACs
target is met (``pruner.step()``, no training in between), then fine-tune. The pieces here
are those stages' parts that Lightning needs: the pruner, the regulariser as a callback, the
step learning-rate schedule, the progressive pruning and a tally of the compute spent.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn


def group_sl_pruner(net: nn.Module, example: torch.Tensor, num_classes: int, reg: float, steps: int,
                    max_pruning_ratio: float):
    """Their ``group_sl`` pruner: ``GroupNormPruner`` with group L2 magnitude normalised by each
    group's maximum ("for CIFAR"), global ranking, pruning ratio 1.0 reached over ``steps``
    linear steps (each step a 1/``steps`` slice), the classifier left whole."""
    import torch_pruning as tp

    from pl_pruning.modes import kept_modes

    classifier = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    with kept_modes(net):  # its tracing leaves every module in eval mode
        return tp.pruner.GroupNormPruner(net, example, importance=tp.importance.GroupMagnitudeImportance(p=2, normalizer="max"),
                                         reg=reg, global_pruning=True, pruning_ratio=1.0, iterative_steps=steps,
                                         max_pruning_ratio=max_pruning_ratio, ignored_layers=classifier)


def prune_progressively(pruner, net: nn.Module, example: torch.Tensor, target: float, count) -> int:
    """Their ``progressive_pruning``: one of the pruner's small steps at a time until the MACs
    (``count(net, example)``) are at or under ``target``, or the steps run out. Returns the
    steps taken."""
    from pl_pruning.modes import kept_modes

    with kept_modes(net):
        while count(net, example) > target and pruner.current_step < pruner.iterative_steps:
            pruner.step()
    return pruner.current_step


class GroupSparsity(L.Callback):
    """Sparsity learning: after each backward pass (Lightning's ``on_before_optimizer_step``,
    gradients unscaled), the pruner's group regulariser is added to the gradients of ``net``,
    as their training loop calls ``pruner.regularize(model)`` between ``loss.backward()`` and
    ``optimizer.step()``."""

    def __init__(self, pruner, net: nn.Module) -> None:
        self.pruner, self.net = pruner, net

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pruner.update_regularizer()  # the groups of the network as it is now

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self.pruner.regularize(self.net)


class MultiStepLR(L.Callback):
    """torch's ``MultiStepLR`` (their schedule): ``lr * gamma**k`` in an epoch at or past ``k``
    of the ``milestones``, set at each epoch's start from the epoch's number alone, so a fit
    resumed from a checkpoint continues the schedule with no scheduler state to restore."""

    def __init__(self, lr: float, milestones: list[int], gamma: float) -> None:
        self.lr, self.milestones, self.gamma = lr, list(milestones), gamma

    def rate(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.rate(trainer.current_epoch)


class Tally(L.Callback):
    """Images forwarded (training, validation and test batches) and seconds spent in training
    epochs (their validation included). The counts are callback state, saved in the fit's
    checkpoints (Lightning runs checkpoint callbacks after this one at an epoch's end), so a
    fit resumed in a later sitting adds to the totals of the sittings before."""

    def __init__(self) -> None:
        self.images = {"train": 0, "val": 0, "test": 0}
        self.seconds = 0.0
        self._started: float | None = None

    def state_dict(self) -> dict:
        return {"images": dict(self.images), "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.images, self.seconds = dict(state_dict["images"]), float(state_dict["seconds"])

    @property
    def forwarded(self) -> int:
        return sum(self.images.values())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images["train"] += len(batch[0])

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.images["val"] += len(batch[0])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.images["test"] += len(batch[0])
