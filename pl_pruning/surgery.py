"""Filter surgery: remove filters physically, with everything coupled to them.

The coupling rules (BatchNorm after a convolution, the next layer's input channels,
residual additions, depthwise convolutions, the Linear after a flatten, concatenations)
are Torch-Pruning's: one :class:`torch_pruning.DependencyGraph` is traced per surgery and
asked for the dependency group of each planned removal. This module adds what a pruning
controller needs around it:

* names instead of modules (``plan = {"features.0": [3, 17]}``, names as in
  ``model.named_modules()``, so ``"net.features.0"`` when ``model`` is a LightningModule
  whose network sits at ``.net``);
* validation of the whole plan before anything is touched, and a snapshot that is put
  back if the surgery fails anyway: the model is changed completely or not at all;
* plan entries that fall into one coupled group (the convolutions feeding one residual
  stream) merged into one removal;
* the outputs of the final classifier (any layer whose outputs are the network's
  outputs) never pruned; ``ignored_layers``, ``min_channels`` and ``round_to`` honoured;
* bias compensation (:mod:`pl_pruning.compensation`);
* a report of what was removed from every layer, coupled layers included, and how each
  replaced parameter maps to the old one (to carry optimizer state over).

:func:`pruning_groups` exposes the grouping itself, so that a controller can rank the
filters of each coupled group together.
"""

from __future__ import annotations

import contextlib
import difflib
import operator
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning import ops

from pl_pruning.compensation import apply_compensation, plan_compensation
from pl_pruning.errors import PlPruningError

__all__ = [
    "ParameterChange",
    "PruningGroup",
    "SurgeryResult",
    "prunable_layers",
    "prune_filters",
    "pruning_groups",
]

# Layers whose outputs are "filters" a plan may name.
PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
# Plain attributes the Torch-Pruning functions rewrite; saved with the snapshot.
_SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features",
                "out_features", "num_channels", "num_parameters", "normalized_shape")


@dataclass(frozen=True)
class PruningGroup:
    """Filters that can only be removed together.

    Attributes:
        root: the first layer of the group in module order; it names the group.
        convs: every Conv/Linear layer whose outputs (filters) belong to the group, in
            module order. Convolutions that feed one residual addition, and a depthwise
            convolution with the layer before it, share a group. Filter ``i`` of the
            group is filter ``i`` of each of them (additions and depthwise convolutions
            do not permute channels), so a controller ranks filter ``i`` of a group by
            reducing the scores of filter ``i`` of every layer in ``convs``.
        channels: number of filters in the group (the out channels of each conv).
        layers: every module whose outputs are cut with the group (BatchNorms included).
    """

    root: str
    convs: tuple[str, ...]
    channels: int
    layers: tuple[str, ...]


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


# --------------------------------------------------------------------------- helpers


def _forward(model: nn.Module, inputs: object) -> object:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _prepare_inputs(model: nn.Module, example_inputs: object) -> object:
    """One sample on the model's device, as ordinary tensors (not inference tensors)."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")

    def one(t: object) -> object:
        if isinstance(t, Tensor):
            return t[:1].detach().clone().to(device) if t.dim() > 0 else t.clone().to(device)
        return t

    if isinstance(example_inputs, Mapping):
        return {k: one(v) for k, v in example_inputs.items()}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(one(v) for v in example_inputs)
    if isinstance(example_inputs, Tensor):
        return one(example_inputs)
    raise PlPruningError(
        f"example_inputs must be a Tensor, a tuple of tensors or a dict, got {type(example_inputs).__name__}")


@contextlib.contextmanager
def _tracing_context(model: nn.Module) -> Iterator[None]:
    """Autograd on (Torch-Pruning traces grad_fns), even inside Lightning's
    ``inference_mode`` validation hooks; every module's train/eval flag put back."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


class _Traced:
    """The dependency graph of one surgery, with the input it was traced on and the
    shapes of what the network returned."""

    def __init__(self, model: nn.Module, example_inputs: object) -> None:
        self.inputs = _prepare_inputs(model, example_inputs)
        self.signature: object = None

        def forward(m: nn.Module, x: object) -> object:
            out = _forward(m, x)
            self.signature = _shape_of(out)
            return out

        try:
            self.graph = tp.DependencyGraph().build_dependency(
                model, self.inputs, forward_fn=forward, verbose=False)
        except PlPruningError:
            raise
        except Exception as err:
            raise PlPruningError(
                f"could not trace {type(model).__name__} with example_inputs of shape "
                f"{_shape_of(example_inputs)}: {type(err).__name__}: {err}") from err

    def check_runs(self, model: nn.Module) -> None:
        """The cut network must still run on the traced input and return the same shapes.

        Runs in eval mode (BatchNorm statistics stay as they are); call it inside
        :func:`_tracing_context`, which puts every module's train/eval flag back.
        """
        model.eval()
        try:
            with torch.no_grad():
                got = _shape_of(_forward(model, self.inputs))
        except Exception as err:
            raise PlPruningError(f"the pruned network no longer runs ({type(err).__name__}: "
                                 f"{err}); the surgery was undone") from err
        if got != self.signature:
            raise PlPruningError(f"the pruned network returns shapes {got} instead of "
                                 f"{self.signature}; the surgery was undone")


def _build_graph(model: nn.Module, example_inputs: object) -> tp.DependencyGraph:
    return _Traced(model, example_inputs).graph


def _shape_of(x: object) -> object:
    if isinstance(x, Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)):
        return [_shape_of(v) for v in x]
    if isinstance(x, Mapping):
        return {k: _shape_of(v) for k, v in x.items()}
    return type(x).__name__


def _resolve_ignored(model: nn.Module, ignored_layers: Iterable[str | nn.Module]
                     ) -> dict[nn.Module, str]:
    """``{module: the pattern that matched it}``; a pattern that matches nothing is an error."""
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


def _is_out_fn(graph: tp.DependencyGraph, fn: object) -> bool:
    return graph.is_out_channel_pruning_fn(fn)


def _out_fn(graph: tp.DependencyGraph, module: nn.Module):
    return graph.get_pruner_of_module(module).prune_out_channels


@dataclass
class _Group:
    """One coupled group of the traced model (full indices)."""

    info: PruningGroup
    root: nn.Module
    members: list[nn.Module]  # out-pruned Conv/Linear modules
    fixed: str | None  # why the group may not be pruned, else None


class _Layout:
    """Every coupled group of a traced model, and which group each layer belongs to."""

    def __init__(self, model: nn.Module, graph: tp.DependencyGraph,
                 ignored: Mapping[nn.Module, str]) -> None:
        self.model, self.graph, self.ignored = model, graph, ignored
        self.names = {m: n for n, m in model.named_modules()}
        order = {m: i for i, (_, m) in enumerate(model.named_modules())}
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
                if not _is_out_fn(graph, dep.handler) or node.module not in order:
                    continue
                outs.append(node.module)
                if not node.outputs and isinstance(node.module, PRUNABLE_TYPES):
                    fixed = "it feeds the network's output (the final classifier is never pruned)"
            for dep, _ in group:
                m = dep.target.module
                if (isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1
                        and ops.module2type(m) != ops.OPTYPE.DEPTHWISE_CONV and fixed is None):
                    fixed = (f"it is coupled with the grouped convolution {self.names.get(m)!r} "
                             f"(groups={m.groups}), which Torch-Pruning 1.6 does not cut "
                             "consistently (depthwise convolutions are fine)")
            outs = sorted(set(outs), key=order.__getitem__)
            members = [m for m in outs if isinstance(m, PRUNABLE_TYPES)]
            if not members:
                continue
            for m in outs:
                if m in ignored and fixed is None:
                    fixed = (f"it is coupled with {self.names[m]!r}, which ignored_layers "
                             f"entry {ignored[m]!r} protects")
            root = members[0]
            info = PruningGroup(root=self.names[root], convs=tuple(self.names[m] for m in members),
                                channels=len(group[0].idxs),
                                layers=tuple(self.names[m] for m in outs))
            g = _Group(info, root, members, fixed)
            self.groups.append(g)
            for m in members:
                self.group_of[m] = g
        self.groups.sort(key=lambda g: order[g.root])

    def prunable(self) -> list[PruningGroup]:
        return [g.info for g in self.groups if g.fixed is None]


# --------------------------------------------------------------------------- public API


def pruning_groups(model: nn.Module, example_inputs: object,
                   ignored_layers: Iterable[str | nn.Module] = ()) -> list[PruningGroup]:
    """The coupled groups whose filters may be removed, in module order.

    Groups feeding the network's output (the final classifier) and groups that contain
    an ignored layer are left out. The model is traced once (one forward pass in eval
    mode); it is not changed.

    Args:
        model: the network, or a LightningModule (names then start with ``net.``).
        example_inputs: a batch the model accepts (one sample of it is used).
        ignored_layers: layer names, regular expressions (full match) or modules.
    """
    with _tracing_context(model):
        graph = _build_graph(model, example_inputs)
        return _Layout(model, graph, _resolve_ignored(model, ignored_layers)).prunable()


def prunable_layers(model: nn.Module, example_inputs: object,
                    ignored_layers: Iterable[str | nn.Module] = ()) -> list[str]:
    """Names of the Conv/Linear layers a plan may name (see :func:`pruning_groups`)."""
    return [name for g in pruning_groups(model, example_inputs, ignored_layers) for name in g.convs]


def _normalise_plan(plan: Mapping[str, Iterable[int]], modules: Mapping[str, nn.Module]
                    ) -> dict[str, list[int]]:
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


def _root_indices(graph: tp.DependencyGraph, module: nn.Module, idxs: list[int],
                  root: nn.Module) -> list[int]:
    """Indices ``idxs`` of ``module``'s filters, in the coordinates of its group's root."""
    if module is root:
        return idxs
    group = graph.get_pruning_group(module, _out_fn(graph, module), idxs)
    for dep, dep_idxs in group:
        if dep.target.module is root and _is_out_fn(graph, dep.handler):
            return list(dep_idxs)
    raise PlPruningError(f"internal: no index mapping from {module} to its group root {root}")


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


def _channels(model: nn.Module) -> dict[str, int]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
    return out


def _kept(size: int, removed: Sequence[int] | None) -> Tensor | None:
    if not removed:
        return None
    gone = set(removed)
    return torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long)


def prune_filters(model: nn.Module, plan: Mapping[str, Iterable[int]], example_inputs: object, *,
                  ignored_layers: Iterable[str | nn.Module] = (), min_channels: int = 1,
                  round_to: int | None = None,
                  channel_means: Mapping[str, Tensor] | None = None,
                  compensate: bool = True) -> SurgeryResult:
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
            forward pass in eval mode, with autograd, even under ``inference_mode``).
        ignored_layers: names, regular expressions (full match) or modules whose
            filters are never removed, nor those of any layer coupled with them.
        min_channels: every layer keeps at least this many channels (>= 1).
        round_to: the channels left in each pruned group are a multiple of this
            (for fast kernels): fewer filters are removed than planned where needed.
        channel_means: ``{conv name: mean activation per filter}`` (the activation the
            consumers see: after the BatchNorm and ReLU that follow the conv, pooled over
            H x W, averaged over samples), for instance from
            ``EntropyStatistics.mean_activation()``. See :mod:`pl_pruning.compensation`.
        compensate: fold the removed filters' mean contributions into the consumers'
            biases (needs ``channel_means``; ignored without them).

    Returns:
        :class:`SurgeryResult`: what was removed from every layer, coupled ones included.

    Raises:
        PlPruningError: a layer name not in the model or not a Conv/Linear layer, an index
            out of range, a removal that leaves fewer than ``min_channels`` in some layer,
            a layer of the final classifier's group or coupled with an ignored layer, a
            ``channel_means`` entry of the wrong size. The model is then unchanged;
            any other failure during the surgery also puts the model back as it was.

    Example::

        result = prune_filters(net, {"features.0": [1, 5], "features.3": [0]},
                               torch.zeros(1, 3, 32, 32))
        result.removed["features.1"]  # the BatchNorm after features.0: [1, 5]
    """
    start = time.perf_counter()
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
        raise PlPruningError(f"min_channels must be an integer >= 1, got {min_channels!r}")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int)
                                 or round_to < 1):
        raise PlPruningError(f"round_to must be an integer >= 1 or None, got {round_to!r}")
    modules = dict(model.named_modules())
    ignored = _resolve_ignored(model, ignored_layers)
    clean_plan = _normalise_plan(plan, modules)  # names and ranges first: cheap, no tracing

    result = SurgeryResult(channels_before=_channels(model))
    if not clean_plan:  # nothing to remove: no trace needed
        result.channels_after = dict(result.channels_before)
        result.seconds = time.perf_counter() - start
        return result
    with _tracing_context(model):
        traced = _Traced(model, example_inputs)
        graph = traced.graph
        layout = _Layout(model, graph, ignored)
        steps = _plan_groups(model, graph, layout, clean_plan,
                             min_channels, round_to, result)
        validated = [graph.get_pruning_group(g.root, _out_fn(graph, g.root), idxs)
                     for g, idxs in steps]
        for (g, _), group in zip(steps, validated, strict=True):
            _check_group(graph, layout, g, group, min_channels)
        updates = []
        if compensate and channel_means:
            updates = plan_compensation(graph, validated, channel_means, layout.names, result)
        _record_removed(graph, layout, steps, validated, result)

        old_params = dict(model.named_parameters())
        snapshot = _snapshot(model)
        try:
            for g, idxs in steps:
                # Groups are re-derived just before each cut, as Torch-Pruning's own pruners
                # do: index maps through concatenations follow the shapes of the moment.
                graph.get_pruning_group(g.root, _out_fn(graph, g.root), idxs).prune()
            apply_compensation(updates, result.removed, layout.names)
            traced.check_runs(model)
        except Exception:
            _restore(snapshot)
            raise
    result.channels_after = _channels(model)
    for name, p in model.named_parameters():
        old = old_params.get(name)
        if old is p:
            continue
        module_name = name.rpartition(".")[0]
        kept0 = _kept(old.shape[0], result.removed.get(module_name)) if old is not None else None
        kept1 = None
        if old is not None and old.dim() > 1 and old.shape[1] != p.shape[1]:
            kept1 = _kept(old.shape[1], result.removed_inputs.get(module_name))
        result.parameter_changes[name] = ParameterChange(old, p, (kept0, kept1))
    result.seconds = time.perf_counter() - start
    return result


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
        if round_to is not None and round_to > 1:
            target = -(-(n - len(idxs)) // round_to) * round_to  # round the remainder up
            if target >= n:
                result.skipped[g.info.root] = (
                    f"round_to={round_to}: {n} channels, removing {len(idxs)} planned filters "
                    f"leaves {n - len(idxs)}; the next multiple of {round_to} is not below {n}")
                continue
            idxs = idxs[: n - target]
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
        if _is_out_fn(graph, fn):
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
            target = result.removed if _is_out_fn(graph, dep.handler) else result.removed_inputs
            merged = set(target.get(name, [])) | set(dep_idxs)
            target[name] = sorted(merged)
