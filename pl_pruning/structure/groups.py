"""Coupled groups: which filters can only be removed together, and which may not be cut.

Torch-Pruning's dependency graph says which channels are coupled (a conv and its
BatchNorm, the next layer's inputs, the convolutions feeding one residual addition, a
depthwise convolution and the layer before it). This module turns its groups into named
:class:`PruningGroup` records and decides which are prunable: not the final classifier's,
not one with a grouped (non-depthwise) convolution, not one coupled with an ignored layer.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning import ops

from pl_pruning.errors import PlPruningError

__all__ = ["PRUNABLE_TYPES", "PruningGroup", "check_plan", "kept_indices", "out_size", "resolve_ignored"]

# Layers whose outputs are "filters" a plan may name.
PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class PruningGroup:
    """Filters that can only be removed together.

    Attributes:
        root: the first layer of the group in module order; it names the group.
        convs: every Conv/Linear layer whose outputs (filters) belong to the group, in
            module order. Convolutions that feed one residual addition, and a depthwise
            convolution with the layer before it, share a group. Filter ``i`` of the
            group is filter ``i`` of each of them (additions and depthwise convolutions
            do not permute channels), so a planner ranks filter ``i`` of a group by
            reducing the scores of filter ``i`` of every layer in ``convs``.
        channels: number of filters in the group (the out channels of each conv).
        layers: every module whose outputs are cut with the group (BatchNorms included).
    """

    root: str
    convs: tuple[str, ...]
    channels: int
    layers: tuple[str, ...]


def resolve_ignored(model: nn.Module, ignored_layers: Iterable[str | nn.Module]) -> dict[nn.Module, str]:
    """``{module: the entry that matched it}``; an entry that matches nothing is an error.

    Raises:
        PlPruningError: an entry that is not a name, a regular expression (full match) or
            a module of ``model``, or that matches no module.
    """
    if isinstance(ignored_layers, (str, nn.Module)):
        ignored_layers = [ignored_layers]
    named = list(model.named_modules())
    out: dict[nn.Module, str] = {}
    for item in ignored_layers:
        if isinstance(item, nn.Module):
            hits = [m for _, m in named if m is item]
            label = type(item).__name__
        elif isinstance(item, str):
            try:
                rx = re.compile(item)
            except re.error as err:
                raise PlPruningError(f"ignored_layers entry {item!r} is neither a layer name nor "
                                     f"a valid regular expression: {err}") from err
            hits = [m for n, m in named if n == item or rx.fullmatch(n)]
            label = item
        else:
            raise PlPruningError(f"ignored_layers entries must be layer names, regular expressions "
                                 f"or modules, got {item!r}")
        if not hits:
            raise PlPruningError(f"ignored_layers entry {label!r} matches no module of the model; "
                                 f"names look like {[n for n, _ in named[1:4]]}")
        for m in hits:
            out.setdefault(m, label)
    return out


# --------------------------------------------------------------------------- groups


def out_size(module: nn.Module) -> int:
    """The outputs (filters, features) of a Conv or Linear layer."""
    return module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features


def kept_indices(size: int, removed: Iterable[int] | None) -> Tensor | None:
    """The indices of ``range(size)`` a removal of ``removed`` keeps, in order (``None``
    when nothing was removed)."""
    if not removed:
        return None
    gone = set(removed)
    return torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long)


@dataclass
class _Group:
    """One coupled group of the traced model, with its modules."""

    info: PruningGroup
    root: nn.Module
    members: list[nn.Module]  # out-pruned Conv/Linear modules
    fixed: str | None  # why the group may not be pruned, else None
    untraceable: bool = False  # coupled through an operation the graph cannot follow


class _Layout:
    """Every coupled group of a traced model, and which group each layer belongs to."""

    def __init__(self, model: nn.Module, graph: tp.DependencyGraph, names: Mapping[nn.Module, str],
                 ignored: Mapping[nn.Module, str]) -> None:
        self.graph, self.names, self.ignored = graph, names, ignored
        order = {m: i for i, m in enumerate(names)}
        self.groups: list[_Group] = []
        self.group_of: dict[nn.Module, _Group] = {}
        for group in graph.get_all_groups(root_module_types=PRUNABLE_TYPES):
            outs: list[nn.Module] = []
            fixed = None
            for dep, _ in group:
                node = dep.target
                if isinstance(node.module, ops._OutputOp):
                    fixed = "its channels are the network's outputs"
                    continue
                if not graph.is_out_channel_pruning_fn(dep.handler) or node.module not in order:
                    continue
                outs.append(node.module)
                if not node.outputs and isinstance(node.module, PRUNABLE_TYPES):
                    fixed = "it feeds the network's output (the final classifier is never pruned)"
            for dep, _ in group:
                m = dep.target.module
                if (isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1
                        and ops.module2type(m) != ops.OPTYPE.DEPTHWISE_CONV and fixed is None):
                    fixed = (f"it is coupled with the grouped convolution {names.get(m)!r} "
                             f"(groups={m.groups}), which Torch-Pruning 1.6 does not cut "
                             "consistently (depthwise convolutions are fine)")
            outs = sorted(set(outs), key=order.__getitem__)
            members = [m for m in outs if isinstance(m, PRUNABLE_TYPES)]
            if not members:
                continue
            channels = len(group[0].idxs)
            odd = [names[m] for m in members if out_size(m) != channels]
            if odd and fixed is None:
                # The graph coupled layers whose widths differ: their channels meet through
                # an operation it cannot see (an option-A zero-padding shortcut, a reshape).
                fixed = (f"its layers have different widths ({', '.join(odd[:3])}"
                         f"{', ...' if len(odd) > 3 else ''} differ from {channels}): they are "
                         "coupled through an operation the dependency graph cannot follow, "
                         "such as a zero-padding shortcut")
            for m in outs:
                if m in ignored and fixed is None:
                    fixed = f"it is coupled with {names[m]!r}, which ignored_layers entry {ignored[m]!r} protects"
            info = PruningGroup(root=names[members[0]], convs=tuple(names[m] for m in members),
                                channels=channels, layers=tuple(names[m] for m in outs))
            g = _Group(info, members[0], members, fixed, untraceable=bool(odd) and fixed is not None
                       and fixed.startswith("its layers have different widths"))
            self.groups.append(g)
            for m in members:
                self.group_of[m] = g
        self.groups.sort(key=lambda g: order[g.root])

    def prunable(self) -> list[PruningGroup]:
        return [g.info for g in self.groups if g.fixed is None]

    def untraceable(self) -> list[str]:
        """Conv/Linear layers left out because their coupling cannot be traced."""
        return [name for g in self.groups if g.untraceable for name in g.info.convs]


# --------------------------------------------------------------------------- the trace


def check_plan(plan: Mapping[str, Iterable[int]], modules: Mapping[str, nn.Module]
               ) -> dict[str, list[int]]:
    """``plan`` with names and indices checked (duplicates dropped, empty entries left out).

    Raises:
        PlPruningError: not a mapping, a name not in ``modules`` (close names suggested) or
            not a Conv/Linear layer, an index that is not an integer or is out of range.
    """
    if not isinstance(plan, Mapping):
        raise PlPruningError(f"plan must map layer names to filter indices, got {type(plan).__name__}")
    out: dict[str, list[int]] = {}
    for name, idxs in plan.items():
        if name not in modules:
            close = difflib.get_close_matches(str(name), list(modules), n=3)
            hint = f"; did you mean {close}?" if close else ""
            known = [n for n, m in modules.items() if isinstance(m, PRUNABLE_TYPES)][:8]
            raise PlPruningError(f"plan names layer {name!r}, which is not in the model{hint} "
                                 f"(Conv/Linear layers are named like {known})")
        module = modules[name]
        if not isinstance(module, PRUNABLE_TYPES):
            raise PlPruningError(f"plan names {name!r}, a {type(module).__name__}; only the filters "
                                 "of Conv1d/Conv2d/Conv3d/Linear layers can be removed")
        if isinstance(idxs, Tensor):
            idxs = idxs.flatten().tolist()
        if isinstance(idxs, (str, bytes)) or not isinstance(idxs, Iterable):
            raise PlPruningError(f"plan[{name!r}] must be a list of filter indices, got {idxs!r}")
        size = module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features
        clean: list[int] = []
        seen: set[int] = set()
        for i in idxs:
            try:
                if isinstance(i, (bool, float)):
                    raise TypeError
                i = operator.index(i)
            except TypeError:
                raise PlPruningError(f"plan[{name!r}] holds {i!r}; filter indices are integers") from None
            if not 0 <= i < size:
                raise PlPruningError(f"plan[{name!r}] holds filter index {i}, out of range: "
                                     f"{name!r} has {size} filters (indices 0..{size - 1})")
            if i not in seen:
                seen.add(i)
                clean.append(i)
        if clean:
            out[name] = clean
    return out
