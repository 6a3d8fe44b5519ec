"""What the controller asks of Lightning's loops: a validation after every epoch, a
validation run now, how many samples one validation sees (for the standard error of
an accuracy), the first batches of the loaders (for the cheap screen), and BatchNorm
re-estimated in place (for a step judged before any fine-tuning)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, IterableDataset

from pl_pruning.errors import PlPruningError
from pl_pruning.pruning.planner import FilterScores
from pl_pruning.pruning.pruner import Pruner
from pl_pruning.pruning.screen import Screen, reestimate_batchnorm

__all__ = ["monitored_value", "noise_at_bound", "reestimate_batchnorm_now", "require_validation_every_epoch",
           "scale_learning_rates", "standard_error", "validate_now", "validation_size"]


def require_validation_every_epoch(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """PhaseController's demand on the fit: a validation loop after every epoch.

    Raises:
        PlPruningError: the first demand that is not met, named.
    """
    if not is_overridden("validation_step", pl_module):
        raise PlPruningError("PhaseController needs a validation loop: "
                             f"{type(pl_module).__name__} defines no validation_step")
    if trainer.limit_val_batches == 0:
        raise PlPruningError("PhaseController needs a validation loop, but limit_val_batches=0")
    if trainer.check_val_every_n_epoch != 1 or trainer.val_check_interval != 1.0:
        raise PlPruningError(
            "PhaseController decides after every epoch's validation: use check_val_every_n_epoch=1 "
            f"and val_check_interval=1.0, got {trainer.check_val_every_n_epoch} and "
            f"{trainer.val_check_interval}")


def validate_now(trainer: L.Trainer) -> None:
    """Run the fit's validation loop once, as the training epoch loop does at an epoch's
    end (every callback's validation hooks fire; the metrics reach ``callback_metrics``)."""
    loop = trainer.fit_loop.epoch_loop.val_loop
    trainer.validating = True
    try:
        loop.run()
    finally:
        trainer.training = True


def validation_size(trainer: L.Trainer) -> int | None:
    """Samples one validation run sees on all ranks together (None when it cannot tell)."""
    loaders = trainer.val_dataloaders
    if loaders is None:
        return None
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    batches = trainer.num_val_batches
    total = 0
    for loader, n in zip(loaders, batches):
        dataset: Any = getattr(loader, "dataset", None)
        size = getattr(loader, "batch_size", None)
        try:
            length = len(dataset)
        except TypeError:
            return None
        if size is None or not math.isfinite(n):
            total += length
        else:
            total += min(length, int(n) * size * trainer.world_size)
    return total or None


def standard_error(accuracy: float, samples: int | None) -> float:
    """The binomial standard error of an accuracy measured on ``samples`` samples (0 when
    the value is not a fraction or the count is unknown)."""
    if samples is None or not 0.0 <= accuracy <= 1.0:
        return 0.0
    return math.sqrt(accuracy * (1.0 - accuracy) / samples)


def noise_at_bound(trainer: L.Trainer, baseline: float, max_drop: float, mode: str, monitor: str) -> float:
    """The standard error of an accuracy ``max_drop`` below the baseline, where decisions
    are taken, on this validation set (0 for a metric minimised, such as a loss); warns
    when it is more than half of ``max_drop``."""
    if mode != "max":
        return 0.0
    noise = standard_error(baseline - max_drop, validation_size(trainer))
    if noise > max_drop / 2:
        rank_zero_warn(f"[PhaseController] the standard error of {monitor} on this validation set ({noise:.4f}) "
                       f"is more than half of max_drop={max_drop}: decisions will follow noise; use a larger "
                       "validation split")
    return noise


def monitored_value(trainer: L.Trainer, monitor: str) -> float:
    """The last logged value of ``monitor``.

    Raises:
        PlPruningError: ``monitor`` is not logged (the message lists what is).
    """
    metrics = trainer.callback_metrics
    if monitor not in metrics:
        keys = ", ".join(sorted(metrics)) or "none"
        raise PlPruningError(f"monitor={monitor!r} is not logged; the logged keys are: {keys}")
    return float(metrics[monitor])


def first_batches(trainer: L.Trainer, loaders: Any, count: int) -> list[Any]:
    """The first ``count`` batches of ``loaders`` (a DataLoader, or the first of a list), on
    the module's device, read through a private loader in this process: iterating the fit's
    own loader would, with persistent workers, take its batches from the fit's next epoch
    (one epoch short of batches, so its validation would not run)."""
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    batches: list[Any] = []
    for batch in _private(loader) if loader is not None else ():
        batches.append(trainer.strategy.batch_to_device(batch))
        if len(batches) >= count:
            break
    return batches


def _private(loader: Any) -> Any:
    """A loader over the same data, order and batching as ``loader``, without workers."""
    if not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        return DataLoader(loader.dataset, batch_size=loader.batch_size, drop_last=loader.drop_last,
                          collate_fn=loader.collate_fn)
    if loader.batch_sampler is not None:
        return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn)
    return DataLoader(loader.dataset, sampler=loader.sampler, batch_size=None, collate_fn=loader.collate_fn)


def screen_for(trainer: L.Trainer, pl_module: L.LightningModule, pruner: Pruner,
               scores: Callable[[], FilterScores], count: int) -> Callable[[dict[str, list[int]]], float] | None:
    """The schedule's screen for one decision: a plan is cut from a copy of ``pl_module``,
    whose BatchNorm statistics are re-estimated on the first ``count`` training batches,
    and judged on the first ``count`` validation batches (both read again at every
    decision, so a resumed run screens on the same batches). None with SyncBatchNorm,
    whose train-mode forward would wait for the other ranks."""
    if any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()):
        return None
    screen: Screen | None = None

    def lost(plan: dict[str, list[int]]) -> float:
        nonlocal screen
        if screen is None:
            screen = Screen(pruner, first_batches(trainer, trainer.train_dataloader, count),
                            first_batches(trainer, trainer.val_dataloaders, count))
        return screen.drop(pl_module, plan, scores())

    return lost


def reestimate_batchnorm_now(trainer: L.Trainer, pl_module: L.LightningModule, count: int) -> None:
    """Re-estimate ``pl_module``'s BatchNorm statistics on the first ``count`` training batches
    of every rank, averaged across ranks (every rank ends with the same statistics)."""
    reestimate_batchnorm(pl_module, first_batches(trainer, trainer.train_dataloader, count))
    if trainer.world_size > 1:
        with torch.no_grad():
            for m in pl_module.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                    m.running_mean.copy_(trainer.strategy.reduce(m.running_mean.clone(), reduce_op="mean"))
                    m.running_var.copy_(trainer.strategy.reduce(m.running_var.clone(), reduce_op="mean"))


def scale_learning_rates(trainer: L.Trainer, base_lrs: list[list[float]], factor: float) -> None:
    """Every optimizer's param group at ``factor`` times its base learning rate."""
    for opt, lrs in zip(trainer.optimizers, base_lrs):
        for group, lr in zip(opt.param_groups, lrs):
            group["lr"] = lr * factor

