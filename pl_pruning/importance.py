"""A pruning criterion as a Torch-Pruning ``Importance``.

Torch-Pruning asks an ``Importance`` for one score per channel of a dependency *group*:
the set of layers whose channels must go together (a convolution, its BatchNorm, the next
layer's input channels; in a ResNet stage every convolution that feeds the same residual
sum). :class:`CriterionImportance` takes the output-filter scores of the convolutions in
the group that have scores (from :class:`~pl_pruning.callbacks.EntropyStatistics` or a
data-free criterion), maps them onto the group's root channels and reduces them, by the
mean by default. Layers without scores (BatchNorms, input-channel dependencies, Linear
layers) carry no opinion and are skipped; a group in which no layer has scores gets
``None``, which Torch-Pruning's pruners read as "do not prune this group".

Example::

    import torch_pruning as tp
    imp = CriterionImportance.from_statistics(stats, "conditional_entropy")
    pruner = tp.pruner.BasePruner(model.net, example, importance=imp, pruning_ratio=0.5,
                                  ignored_layers=[model.net.classifier])
    pruner.step()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function

from pl_pruning.criteria import DEFAULT_CRITERION, Criterion, get_criterion
from pl_pruning.errors import PlPruningError, choice_error

REDUCTIONS = ("mean", "sum", "max", "min", "first")
OUT_CHANNEL_FUNCTIONS = (function.prune_conv_out_channels,)


class CriterionImportance(tp.importance.Importance):
    """Per-channel importance of a Torch-Pruning group from per-filter scores.

    Args:
        scores: ``{module or module name: Tensor[out_channels]}``, higher = keep.
        model: the module the names in ``scores`` are relative to (needed for names).
        reduction: how the scores of coupled layers combine: ``"mean"`` (default), ``"sum"``,
            ``"max"``, ``"min"`` or ``"first"`` (the group's first scored layer).

    Raises:
        PlPruningError: an unknown reduction, a name not in ``model``, or (when called) a
            score vector whose length is not the layer's current ``out_channels`` (stale
            scores: collect them again after surgery).
    """

    def __init__(self, scores: Mapping[nn.Module | str, Tensor], model: nn.Module | None = None,
                 reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise choice_error("reduction", reduction, REDUCTIONS)
        self.reduction = reduction
        self._scores: dict[int, tuple[str, Tensor]] = {}
        names = dict(model.named_modules()) if model is not None else {}
        for key, values in scores.items():
            if isinstance(key, str):
                if key not in names:
                    raise choice_error("layer", key, [n for n, m in names.items()
                                                      if isinstance(m, nn.Conv2d)])
                module, label = names[key], key
            elif isinstance(key, nn.Module):
                module, label = key, type(key).__name__
            else:
                raise PlPruningError(f"scores keys must be modules or module names, got {key!r}")
            self._scores[id(module)] = (label, torch.as_tensor(values).detach().float().cpu())

    @classmethod
    def from_statistics(cls, statistics: Any, criterion: str | Criterion = DEFAULT_CRITERION,
                        normalize: str = "none", reduction: str = "mean",
                        **criterion_options: Any) -> CriterionImportance:
        """Scores of ``criterion`` from an :class:`EntropyStatistics` that has statistics
        (or, for data-free criteria, has seen the model). ``normalize`` is ``"none"`` by
        default because a group mixes layers: normalise afterwards, as Torch-Pruning does."""
        scores = statistics.scores(criterion, normalize=normalize, **criterion_options)
        model = statistics._model
        if model is None:
            raise PlPruningError("the EntropyStatistics has not seen a model yet")
        return cls(scores, model=model, reduction=reduction)

    @classmethod
    def from_criterion(cls, criterion: str | Criterion, model: nn.Module,
                       reduction: str = "mean", **criterion_options: Any) -> CriterionImportance:
        """A data-free criterion (``l1``, ``random``) evaluated on ``model``."""
        crit = get_criterion(criterion, **criterion_options)
        return cls(crit(model, normalize="none"), model=model, reduction=reduction)

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor | None:
        root_size = len(group[0].idxs)
        parts: list[tuple[Tensor, Tensor]] = []
        for item in group:
            dep, idxs = item.dep, item.idxs
            if dep.pruning_fn not in OUT_CHANNEL_FUNCTIONS:
                continue
            entry = self._scores.get(id(dep.target.module))
            if entry is None:
                continue
            label, scores = entry
            layer = dep.target.module
            if scores.numel() != layer.out_channels:
                raise PlPruningError(
                    f"scores of layer {label} have {scores.numel()} entries, the layer has "
                    f"{layer.out_channels} output channels: stale scores, collect them again")
            root_idxs = item.root_idxs
            if root_idxs is None or any(r is None for r in root_idxs):
                continue
            local = scores[torch.as_tensor(_plain(idxs), dtype=torch.long)]
            parts.append((torch.as_tensor(_plain(root_idxs), dtype=torch.long), local))
        if not parts:
            return None
        return _reduce(parts, root_size, self.reduction)


def _plain(idxs: Any) -> list[int]:
    return [int(getattr(i, "idx", i)) for i in idxs]


def _reduce(parts: list[tuple[Tensor, Tensor]], size: int, reduction: str) -> Tensor:
    if reduction == "first":
        out = torch.full((size,), float("nan"))
        for root, values in reversed(parts):
            out[root] = values
        return torch.nan_to_num(out, nan=0.0)
    stacked = torch.full((len(parts), size), float("nan"))
    for row, (root, values) in enumerate(parts):
        stacked[row, root] = values
    present = ~torch.isnan(stacked)
    filled = torch.nan_to_num(stacked, nan=0.0)
    if reduction == "sum":
        return filled.sum(0)
    if reduction == "mean":
        return filled.sum(0) / present.sum(0).clamp_min(1)
    if reduction == "max":
        return torch.where(present, stacked, torch.tensor(-float("inf"))).amax(0).nan_to_num(neginf=0.0)
    return torch.where(present, stacked, torch.tensor(float("inf"))).amin(0).nan_to_num(posinf=0.0)


__all__ = ["CriterionImportance", "REDUCTIONS"]
