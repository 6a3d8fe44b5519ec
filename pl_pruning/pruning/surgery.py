"""Filter surgery: remove filters physically, with everything coupled to them.

The coupling rules (BatchNorm after a convolution, the next layer's input channels,
residual additions, depthwise convolutions, the Linear after a flatten, concatenations)
are Torch-Pruning's: the :class:`~pl_pruning.structure.graph.NetworkGraph` of the model
(traced once per architecture) gives the dependency group of each planned removal. This
module adds what a pruning controller needs around it:

* names instead of modules (``plan = {"features.0": [3, 17]}``, names as in
  ``model.named_modules()``, so ``"net.features.0"`` when ``model`` is a LightningModule
  whose network sits at ``.net``);
* validation of the whole plan before anything is touched, and a snapshot that is put
  back if the surgery fails anyway: the model is changed completely or not at all;
* plan entries that fall into one coupled group (the convolutions feeding one residual
  stream) merged into one removal;
* the outputs of the final classifier (any layer whose outputs are the network's
  outputs) never pruned; ``ignored_layers``, ``min_channels`` and ``round_to`` honoured;
* bias compensation (:mod:`pl_pruning.pruning.compensation`);
* a report of what was removed from every layer, coupled layers included, and how each
  replaced parameter maps to the old one (to carry optimizer state over).

:func:`pruning_groups` exposes the grouping itself, so that a controller can rank the
filters of each coupled group together.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import Tensor, nn

from pl_pruning.errors import PlPruningError
from pl_pruning.measure import channel_counts
from pl_pruning.modes import autograd_on, eval_mode
from pl_pruning.pruning.compensation import apply_compensation, plan_compensation
from pl_pruning.structure.graph import NetworkGraph, forward, out_fn, shape_of
from pl_pruning.structure.groups import (
    PruningGroup,
    _Group,
    _Layout,
    check_plan,
    kept_indices,
    resolve_ignored,
)
from pl_pruning.validate import check_int

__all__ = [
    "ParameterChange",
    "PruningGroup",
    "SurgeryResult",
    "prunable_layers",
    "prune_filters",
    "pruning_groups",
]

# Plain attributes the Torch-Pruning functions rewrite; saved with the snapshot.
_SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features",
                "out_features", "num_channels", "num_parameters", "normalized_shape")


@dataclass
class ParameterChange:
    """How a parameter replaced by the surgery relates to the one it replaced.

    ``new == old[kept[0]]`` along dim 0 and ``[:, kept[1]]`` along dim 1 (``None`` for a
    dimension that kept all its entries). ``old`` is ``None`` for a bias that bias
    compensation created. A controller uses this to carry momentum over.
    """

    old: nn.Parameter | None
    new: nn.Parameter
    kept: tuple[Tensor | None, ...]


@dataclass
class SurgeryResult:
    """What one surgery did.

    Attributes:
        removed: original indices of the output channels removed from every module
            (the planned convolutions and everything coupled to them: BatchNorms,
            convolutions on the same residual stream, depthwise convolutions).
        removed_inputs: original indices of the input channels (for a Linear after a
            flatten: columns) removed from the layers that consumed them.
        groups: the coupled groups that were cut, each with the removed group indices.
        channels_before, channels_after: out channels of every Conv/Linear layer.
        compensated: consumers whose bias (or following BatchNorm's running mean)
            absorbed the removed channels' mean contribution.
        uncompensated: consumers that could not be compensated, with the reason.
        skipped: groups left whole because ``round_to`` left nothing to remove.
        parameter_changes: every parameter that was replaced, by name.
        seconds: wall-clock time of the surgery, graph tracing included.
    """

    removed: dict[str, list[int]] = field(default_factory=dict)
    removed_inputs: dict[str, list[int]] = field(default_factory=dict)
    groups: list[tuple[PruningGroup, list[int]]] = field(default_factory=list)
    channels_before: dict[str, int] = field(default_factory=dict)
    channels_after: dict[str, int] = field(default_factory=dict)
    compensated: list[str] = field(default_factory=list)
    uncompensated: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    parameter_changes: dict[str, ParameterChange] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def filters_removed(self) -> int:
        """Filters removed from Conv/Linear layers, coupled ones included."""
        return sum(self.channels_before[n] - self.channels_after[n] for n in self.channels_before)


# --------------------------------------------------------------------------- public API


def pruning_groups(model: nn.Module, example_inputs: object,
                   ignored_layers: Iterable[str | nn.Module] = ()) -> list[PruningGroup]:
    """The coupled groups whose filters may be removed, in module order.

    Groups feeding the network's output (the final classifier) and groups that contain
    an ignored layer are left out. The model is not changed; it is traced only if its
    :class:`~pl_pruning.structure.graph.NetworkGraph` is not cached already.

    Args:
        model: the network, or a LightningModule (names then start with ``net.``).
        example_inputs: a batch the model accepts (one sample of it is used).
        ignored_layers: layer names, regular expressions (full match) or modules.
    """
    return NetworkGraph.of(model, example_inputs, ignored_layers).groups


def prunable_layers(model: nn.Module, example_inputs: object,
                    ignored_layers: Iterable[str | nn.Module] = ()) -> list[str]:
    """Names of the Conv/Linear layers a plan may name (see :func:`pruning_groups`)."""
    return [name for g in pruning_groups(model, example_inputs, ignored_layers) for name in g.convs]


def _root_indices(graph: tp.DependencyGraph, module: nn.Module, idxs: list[int],
                  root: nn.Module) -> list[int]:
    """Indices ``idxs`` of ``module``'s filters, in the coordinates of its group's root."""
    if module is root:
        return idxs
    group = graph.get_pruning_group(module, out_fn(graph, module), idxs)
    for dep, dep_idxs in group:
        if dep.target.module is root and graph.is_out_channel_pruning_fn(dep.handler):
            return list(dep_idxs)
    raise RuntimeError(f"no index mapping from {module} to its group root {root}")


def _snapshot(model: nn.Module) -> list[tuple]:
    """Everything the surgery may replace: parameter/buffer objects and shape attributes.
    Nothing is changed in place, so references are enough to put the model back."""
    return [(m, dict(m._parameters), dict(m._buffers),
             {a: getattr(m, a) for a in _SHAPE_ATTRS if a in m.__dict__})
            for m in model.modules()]


def _restore(snapshot: list[tuple]) -> None:
    for m, params, buffers, attrs in snapshot:
        m._parameters.clear()
        m._parameters.update(params)
        m._buffers.clear()
        m._buffers.update(buffers)
        for a, v in attrs.items():
            setattr(m, a, v)


def prune_filters(model: nn.Module, plan: Mapping[str, Iterable[int]], example_inputs: object, *,
                  ignored_layers: Iterable[str | nn.Module] = (), min_channels: int = 1,
                  round_to: int | None = None,
                  channel_means: Mapping[str, Tensor] | None = None,
                  compensate: bool = True, graph: NetworkGraph | None = None) -> SurgeryResult:
    """Remove the planned filters, and everything coupled to them, in place.

    Args:
        model: the network, or a LightningModule whose network is at ``.net`` (then the
            names start with ``"net."``). Changed in place; its parameters are replaced by
            new (smaller) ones, so optimizers must be rebuilt afterwards
            (``result.parameter_changes`` maps old to new).
        plan: ``{layer name: filter indices}``; names as in ``model.named_modules()``,
            Conv or hidden Linear layers. Entries in one coupled group (residual
            stream, depthwise pair) are merged. Indices are removal candidates in the
            order given: when ``round_to`` asks for fewer removals, the last ones stay.
        example_inputs: a batch the model accepts; one sample of it is traced (one
            forward pass in eval mode, with autograd, even under ``inference_mode``)
            unless the model's graph is cached; the cut network must run on it.
        ignored_layers: names, regular expressions (full match) or modules whose
            filters are never removed, nor those of any layer coupled with them.
        min_channels: every layer keeps at least this many channels (>= 1).
        round_to: the channels left in each pruned group are a multiple of this, or at
            most this (:func:`allowed_width`; for fast kernels): fewer filters are removed
            than planned where needed.
        channel_means: ``{conv name: mean activation per filter}`` (the activation the
            consumers see: after the BatchNorm and ReLU that follow the conv, pooled over
            H x W, averaged over samples), for instance from
            ``EntropyStatistics.mean_activation()``. See :mod:`pl_pruning.pruning.compensation`.
        compensate: fold the removed filters' mean contributions into the consumers'
            biases (needs ``channel_means``; ignored without them).
        graph: the model's :class:`NetworkGraph` as it is now (default: looked up, or
            traced, with :meth:`NetworkGraph.of`). It describes a different network after
            the surgery and is dropped from the cache.

    Returns:
        :class:`SurgeryResult`: what was removed from every layer, coupled ones included.

    Raises:
        PlPruningError: a layer name not in the model or not a Conv/Linear layer, an index
            out of range, a removal that leaves fewer than ``min_channels`` in some layer,
            a layer of the final classifier's group or coupled with an ignored layer, a
            ``channel_means`` entry of the wrong size, a ``graph`` of another network.
            The model is then unchanged.
        RuntimeError: the cut network no longer runs on the traced input, or returns
            other shapes (the cause chained). Any failure during the cut puts the model
            back as it was.

    Example::

        result = prune_filters(net, {"features.0": [1, 5], "features.3": [0]},
                               torch.zeros(1, 3, 32, 32))
        result.removed["features.1"]  # the BatchNorm after features.0: [1, 5]
    """
    start = time.perf_counter()
    check_int("min_channels", min_channels, 1)
    check_int("round_to", round_to, 1, optional=True)
    modules = dict(model.named_modules())
    resolve_ignored(model, ignored_layers)  # a bad entry fails even when the plan is empty
    clean_plan = check_plan(plan, modules)  # names and ranges first: cheap, no tracing

    result = SurgeryResult(channels_before=channel_counts(model))
    if not clean_plan:  # nothing to remove: no trace needed
        result.channels_after = dict(result.channels_before)
        result.seconds = time.perf_counter() - start
        return result
    if graph is not None and not graph.describes(model, example_inputs):
        raise PlPruningError("graph is not the NetworkGraph of this model as it is now (traced "
                             "before a surgery, or for another model or input shape)")
    net = NetworkGraph.of(model, example_inputs, ignored_layers)
    dg, layout = net.dependency_graph, net.layout
    with autograd_on(model):
        steps = _plan_groups(model, dg, layout, clean_plan, min_channels, round_to, result)
        validated = [dg.get_pruning_group(g.root, out_fn(dg, g.root), idxs) for g, idxs in steps]
        for (g, _), group in zip(steps, validated, strict=True):
            _check_group(dg, layout, g, group, min_channels)
        updates = []
        if compensate and channel_means:
            updates = plan_compensation(dg, validated, channel_means, layout.names, net.batchnorm_of, result)
        _record_removed(dg, layout, steps, validated, result)

        old_params = dict(model.named_parameters())
        snapshot = _snapshot(model)
        NetworkGraph.forget(model)  # from here on the graph describes another network
        try:
            for g, idxs in steps:
                # Groups are re-derived just before each cut, as Torch-Pruning's own pruners
                # do: index maps through concatenations follow the shapes of the moment.
                dg.get_pruning_group(g.root, out_fn(dg, g.root), idxs).prune()
            apply_compensation(updates, result.removed, layout.names)
            _check_runs(model, net)
        except Exception:
            _restore(snapshot)
            raise
    result.channels_after = channel_counts(model)
    for name, p in model.named_parameters():
        old = old_params.get(name)
        if old is p:
            continue
        module_name = name.rpartition(".")[0]
        kept0 = kept_indices(old.shape[0], result.removed.get(module_name)) if old is not None else None
        kept1 = None
        if old is not None and old.dim() > 1 and old.shape[1] != p.shape[1]:
            kept1 = kept_indices(old.shape[1], result.removed_inputs.get(module_name))
        result.parameter_changes[name] = ParameterChange(old, p, (kept0, kept1))
    result.seconds = time.perf_counter() - start
    return result


def rounded_removal(channels: int, planned: int, round_to: int | None) -> int:
    """How many of ``planned`` removals from ``channels`` filters to make so that what
    remains is a width ``round_to`` allows (:func:`allowed_width`, rounded up; 0: none)."""
    if round_to is None or round_to <= 1:
        return planned
    return max(0, channels - allowed_width(channels - planned, round_to))


def allowed_width(width: int, round_to: int | None) -> int:
    """The narrowest width at least ``width`` that ``round_to`` allows: a multiple of it,
    or any width up to it (a group narrower than the multiple cannot reach one by cutting,
    and a runtime that pads channels charges it the multiple's time anyway; on oneDNN the
    convolution reading it still gets faster with every input channel fewer)."""
    if round_to is None or round_to <= 1 or width <= round_to:
        return width
    return -(-width // round_to) * round_to


def narrower_width(width: int, round_to: int | None) -> int:
    """The next width below ``width`` that ``round_to`` allows (:func:`allowed_width`)."""
    if round_to is None or round_to <= 1 or width <= round_to:
        return width - 1
    return (width - 1) // round_to * round_to


def _check_runs(model: nn.Module, graph: NetworkGraph) -> None:
    """The cut network must still run on the traced input and return the same shapes
    (in eval mode, so BatchNorm statistics stay as they are)."""
    try:
        with eval_mode(model), torch.no_grad():
            got = shape_of(forward(model, graph.inputs))
    except Exception as err:
        raise RuntimeError(f"the pruned network no longer runs ({type(err).__name__}: {err}); "
                           "the surgery was undone") from err
    if got != graph.signature:
        raise RuntimeError(f"the pruned network returns shapes {got} instead of "
                           f"{graph.signature}; the surgery was undone")


def _plan_groups(model: nn.Module, graph: tp.DependencyGraph, layout: _Layout,
                 plan: dict[str, list[int]], min_channels: int, round_to: int | None,
                 result: SurgeryResult) -> list[tuple[_Group, list[int]]]:
    """Merge the plan per coupled group (indices in the group root's coordinates)."""
    modules = dict(model.named_modules())
    merged: dict[int, list[int]] = {}
    by_id: dict[int, _Group] = {}
    for name, idxs in plan.items():
        module = modules[name]
        g = layout.group_of.get(module)
        if g is None:
            raise PlPruningError(f"plan names {name!r}, which the traced forward pass never "
                                 "reaches (or whose outputs cannot be pruned)")
        if module in layout.ignored:
            raise PlPruningError(f"plan names {name!r}, which is protected by ignored_layers entry "
                                 f"{layout.ignored[module]!r}")
        if g.fixed is not None:
            raise PlPruningError(f"plan names {name!r}, whose filters cannot be removed: {g.fixed}")
        root_idxs = _root_indices(graph, module, idxs, g.root)
        bucket = merged.setdefault(id(g), [])
        by_id[id(g)] = g
        present = set(bucket)
        for i in root_idxs:
            if i not in present:
                present.add(i)
                bucket.append(i)
    steps = []
    for key, idxs in merged.items():
        g = by_id[key]
        n = g.info.channels
        if n - len(idxs) < min_channels:
            planned = ", ".join(repr(p) for p in plan if layout.group_of[modules[p]] is g)
            raise PlPruningError(
                f"plan removes {len(idxs)} of the {n} filters of {g.info.root!r} (through "
                f"{planned}); at least min_channels={min_channels} must remain"
                + (f"; coupled layers: {list(g.info.convs)}" if len(g.info.convs) > 1 else ""))
        keep = rounded_removal(n, len(idxs), round_to)
        if keep == 0:
            result.skipped[g.info.root] = (
                f"round_to={round_to}: {n} channels, removing {len(idxs)} planned filters "
                f"leaves {n - len(idxs)}; the next width it allows (a multiple, or at most {round_to}) is not below {n}")
            continue
        idxs = idxs[:keep]
        steps.append((g, idxs))
    return steps


def _check_group(graph: tp.DependencyGraph, layout: _Layout, g: _Group, group,
                 min_channels: int) -> None:
    """No layer of the group may fall below ``min_channels`` (inputs included)."""
    for dep, idxs in group:
        module = dep.target.module
        if not isinstance(module, nn.Module) or module not in layout.names:
            continue
        fn = dep.handler
        if graph.is_out_channel_pruning_fn(fn):
            size = graph.get_out_channels(module)
        elif graph.is_in_channel_pruning_fn(fn):
            size = graph.get_in_channels(module)
        else:
            continue
        if size is not None and size - len(idxs) < min_channels:
            raise PlPruningError(
                f"removing {len(idxs)} channels from group {g.info.root!r} leaves "
                f"{size - len(idxs)} in {layout.names[module]!r} ({type(module).__name__}, "
                f"{size} channels); at least min_channels={min_channels} must remain")
    if not graph.check_pruning_group(group):
        raise PlPruningError(f"removing these channels would empty a layer of group {g.info.root!r}")


def _record_removed(graph: tp.DependencyGraph, layout: _Layout,
                    steps: list[tuple[_Group, list[int]]], groups: list,
                    result: SurgeryResult) -> None:
    for (g, idxs), group in zip(steps, groups, strict=True):
        result.groups.append((g.info, sorted(idxs)))
        for dep, dep_idxs in group:
            module = dep.target.module
            name = layout.names.get(module) if isinstance(module, nn.Module) else None
            if name is None:
                continue
            target = result.removed if graph.is_out_channel_pruning_fn(dep.handler) else result.removed_inputs
            merged = set(target.get(name, [])) | set(dep_idxs)
            target[name] = sorted(merged)
