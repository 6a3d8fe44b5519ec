"""Optimizer and LR-scheduler state carried across surgery and rollback.

A surgery replaces the parameters it cuts by smaller ones, so the optimizers are built
again; the momentum / Adam moments of the surviving channels should not be lost. Before
the surgery :func:`capture` remembers every parameter's state (by parameter object) and
every scheduler's progress; after the new optimizers are built, :func:`carry_over` gives
each new parameter the state of the one it replaced, sliced to the channels that survived
(``SurgeryResult.parameter_changes`` says which), and puts the schedulers' progress back.

A rollback returns to the last accepted network: :func:`snapshot` copies its weights and
deep-copies the optimizers' state when a network is accepted; :func:`restore_model` puts
the weights back and :func:`carry_over` with ``saved=`` loads a deep COPY of the
optimizer state. The copy matters: ``Optimizer.load_state_dict`` keeps the tensors it is
given, so loading the snapshot itself would let the next epoch's in-place updates rewrite
the snapshot, and a second rollback would return to a state that never existed.

Example::

    carried = capture(optimizers, schedulers)
    result = prune_filters(model, plan, x)
    optimizers, schedulers = build_again(model)          # e.g. configure_optimizers()
    carry_over(optimizers, schedulers, carried, result.parameter_changes)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = ["Carried", "capture", "carry_over", "rebuild", "restore_model", "snapshot"]


@dataclass
class Carried:
    """Per-parameter optimizer state (keyed by ``id`` of the parameter object) and the
    schedulers' state dicts, taken just before a surgery or rollback."""

    state: dict[int, dict[str, Any]]
    schedulers: list[dict[str, Any]]


def capture(optimizers: Sequence[Optimizer], schedulers: Sequence[Any] = ()) -> Carried:
    """What the optimizers and schedulers know now (references; the old optimizers are
    about to be discarded, so nothing is copied)."""
    return Carried(state={id(p): st for o in optimizers for p, st in o.state.items()},
                   schedulers=[s.state_dict() for s in schedulers])


def snapshot(model: nn.Module, optimizers: Sequence[Optimizer]) -> dict[str, Any]:
    """What a rollback returns to: ``{"model": a CPU copy of the state dict, "optimizers":
    deep copies of the optimizers' state dicts}``."""
    return {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizers": [copy.deepcopy(o.state_dict()) for o in optimizers]}


def restore_model(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Shapes and weights of ``state`` (a :func:`snapshot`'s ``"model"``) in place: module
    objects stay, so hooks and the names of a dependency graph stay valid; the tensors
    are copied, never shared with ``state``."""
    from pl_pruning.checkpoint import restore_pruned_shapes

    restore_pruned_shapes(model, state)
    for name, module in model.named_modules():  # biases that compensation created since
        for key, param in list(module._parameters.items()):
            if param is not None and f"{name}.{key}".lstrip(".") not in state:
                module._parameters[key] = None
    model.load_state_dict(state)


def carry_over(optimizers: Sequence[Optimizer], schedulers: Sequence[Any], carried: Carried,
               changes: Mapping[str, Any] | None = None,
               saved: Sequence[dict[str, Any]] | None = None) -> None:
    """Fill freshly built optimizers and schedulers.

    Args:
        optimizers, schedulers: the new ones (schedulers in the order they were captured).
        carried: :func:`capture` of the old ones.
        changes: ``SurgeryResult.parameter_changes`` (new parameter -> old one and the
            kept indices); parameters not in it keep their state as they are.
        saved: :func:`snapshot` to return to (a rollback): optimizer ``i`` loads a deep
            copy of ``saved[i]`` instead of the carried state.
    """
    by_new = {id(c.new): c for c in (changes or {}).values()}
    for i, opt in enumerate(optimizers):
        if saved is not None and i < len(saved):
            opt.load_state_dict(copy.deepcopy(saved[i]))  # a copy: the snapshot stays as it is
            continue
        for group in opt.param_groups:
            for p in group["params"]:
                change = by_new.get(id(p))
                if change is None:
                    st = carried.state.get(id(p))
                    if st:
                        opt.state[p] = st
                elif change.old is not None and carried.state.get(id(change.old)):
                    opt.state[p] = {k: _slice(v, change.kept, change.old.shape)
                                    for k, v in carried.state[id(change.old)].items()}
    for scheduler, state in zip(schedulers, carried.schedulers):
        scheduler.load_state_dict(state)
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr


def rebuild(trainer: Any, model: nn.Module, carried: Carried | None = None,
            changes: Mapping[str, Any] | None = None, saved: Sequence[dict[str, Any]] | None = None) -> None:
    """For a Lightning ``trainer``: the module back on its device and wrapped again under
    DDP, new optimizers and schedulers from ``configure_optimizers``, then :func:`carry_over`
    (``carried`` defaults to what the trainer's optimizers hold now)."""
    from torch.nn.parallel import DistributedDataParallel

    def schedulers() -> list[Any]:
        return [config.scheduler for config in trainer.lr_scheduler_configs]

    carried = carried or capture(trainer.optimizers, schedulers())
    strategy = trainer.strategy
    model.to(strategy.root_device)
    if isinstance(strategy.model, DistributedDataParallel):
        strategy.model = model
        strategy.configure_ddp()
    strategy.setup_optimizers(trainer)
    carry_over(trainer.optimizers, schedulers(), carried, changes, saved)


def _slice(value: Any, kept: tuple[Tensor | None, ...], shape: Any) -> Any:
    """State of a surviving slice: ``value[kept[0]][:, kept[1]]`` for per-element state
    (momentum, Adam moments); scalars such as Adam's ``step`` pass through."""
    if not isinstance(value, Tensor) or value.shape != shape:
        return value
    for dim, idx in enumerate(kept):
        if idx is not None:
            value = value.index_select(dim, idx.to(value.device))
    return value.clone()
