"""One traced description of a network, shared by everything that needs its structure.

:class:`NetworkGraph` runs ONE forward pass of one sample through Torch-Pruning's
:class:`~torch_pruning.DependencyGraph` and, during that same pass, records every
layer's output shape, the MACs of the pass (``torch.utils.flop_counter``, as
:func:`pl_pruning.measure.count_macs`) and which BatchNorm reads each convolution's output
(the same tensor object). From that one trace it answers: the prunable coupled groups, the
BatchNorm after a conv, the layers that consume a conv's channels, channel counts, output
sizes, the MACs of a sample and THE MACs one filter costs.

A trace is cached per architecture: the key is the model object, the shapes of all its
parameters and buffers, its modules and the example input's shape. A surgery or rollback
changes the key, so the next :meth:`NetworkGraph.of` traces once; every other call is free.
``NetworkGraph.traces`` counts the traces made (tests use it).

Example::

    g = NetworkGraph.of(model, torch.zeros(1, 3, 32, 32))
    g.batchnorm_of["features.0"]      # "features.1"
    g.macs_per_filter["features.0"]   # what removing one filter of features.0 saves
    [grp.root for grp in g.groups]    # what a plan may name
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import ClassVar

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torch_pruning import ops

from pl_pruning.errors import PlPruningError
from pl_pruning.measure import channel_counts
from pl_pruning.modes import autograd_on
from pl_pruning.structure.groups import PRUNABLE_TYPES, PruningGroup, _Layout, resolve_ignored

__all__ = ["NetworkGraph", "PruningGroup", "forward", "resolve_ignored", "shape_of"]

_CONVS = nn.modules.conv._ConvNd
_BATCHNORMS = nn.modules.batchnorm._BatchNorm


# --------------------------------------------------------------------------- inputs


def forward(model: nn.Module, inputs: object) -> object:
    """``model(inputs)`` for a tensor, a tuple of positional inputs or a dict of keywords."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def shape_of(x: object) -> object:
    """The shapes of a (nested) output, to compare a network's outputs before and after."""
    if isinstance(x, Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)):
        return [shape_of(v) for v in x]
    if isinstance(x, Mapping):
        return {k: shape_of(v) for k, v in x.items()}
    return type(x).__name__


def _one_sample(model: nn.Module, example_inputs: object) -> object:
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


def out_fn(graph: tp.DependencyGraph, module: nn.Module):
    """Torch-Pruning's function that removes output channels of ``module``."""
    return graph.get_pruner_of_module(module).prune_out_channels


class _Trace:
    """What one forward pass recorded (shared by the views of every ``ignored_layers``)."""

    def __init__(self, model: nn.Module, example_inputs: object, key: tuple) -> None:
        self.model, self.key = model, key
        self.names = {m: n for n, m in model.named_modules()}
        self.batchnorm_of: dict[str, str] = {}
        self.shapes: dict[nn.Module, tuple[tuple, tuple]] = {}  # first call: (input, output) shape
        self.views: dict[tuple, NetworkGraph] = {}
        self.signature: object = None
        self.macs = 0
        made: dict[int, str] = {}
        alive: list[Tensor] = []  # keeps conv outputs alive, so no id is reused mid-trace

        def on_output(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, Tensor) and args and isinstance(args[0], Tensor):
                self.shapes.setdefault(module, (tuple(args[0].shape), tuple(output.shape)))
                made[id(output)] = self.names[module]  # a Conv's or Linear's output
                alive.append(output)

        def on_batchnorm(module: nn.Module, args: tuple) -> None:
            conv = made.get(id(args[0])) if args else None
            if conv is not None:
                self.batchnorm_of.setdefault(conv, self.names[module])

        def traced_forward(m: nn.Module, x: object) -> object:
            with FlopCounterMode(display=False) as counter:  # the counter of measure.count_macs
                out = forward(m, x)
            self.macs = int(counter.get_total_flops()) // 2
            self.signature = shape_of(out)
            return out

        handles = []
        for module in self.names:
            if isinstance(module, PRUNABLE_TYPES):
                handles.append(module.register_forward_hook(on_output))
            elif isinstance(module, _BATCHNORMS):
                handles.append(module.register_forward_pre_hook(on_batchnorm))
        try:
            with autograd_on(model):  # Torch-Pruning traces grad_fns (and sets eval mode)
                self.inputs = _one_sample(model, example_inputs)  # not an inference tensor
                self.graph = tp.DependencyGraph().build_dependency(
                    model, self.inputs, forward_fn=traced_forward, verbose=False)
        except PlPruningError:
            raise
        except Exception as err:
            raise PlPruningError(
                f"could not trace {type(model).__name__} with example_inputs of shape "
                f"{shape_of(example_inputs)}: {type(err).__name__}: {err}") from err
        finally:
            for h in handles:
                h.remove()
        self.channels = channel_counts(model)
        self.output_hw = {self.names[m]: (o[-2], o[-1]) for m, (_, o) in self.shapes.items()
                          if isinstance(m, nn.Conv2d)}

    @cached_property
    def reads(self) -> dict[str, dict[str, int]]:
        """conv/linear name -> {consumer name: input channels it loses per removed filter}."""
        dg = self.graph
        out: dict[str, dict[str, int]] = {}
        for module, node in dg.module2node.items():
            if not isinstance(module, PRUNABLE_TYPES) or module not in self.names:
                continue
            direct = _direct_readers(node)
            reads: dict[str, int] = {}
            if direct:
                for dep, idxs in dg.get_pruning_group(module, out_fn(dg, module), [0]):
                    target = dep.target.module
                    if target in direct and dg.is_in_channel_pruning_fn(dep.handler):
                        reads[self.names[target]] = reads.get(self.names[target], 0) + len(idxs)
            out[self.names[module]] = reads
        return out

    @cached_property
    def macs_per_filter(self) -> dict[str, float]:
        """Own kernel over the output map + the input channel(s) of each consumer."""
        modules = {n: m for m, n in self.names.items()}

        def per_input(c: str) -> float:  # one input channel (column) of consumer c
            return self._layer_macs(modules[c]) / _in_size(modules[c])

        return {name: float(self._layer_macs(modules[name]) / self.channels[name]
                            + sum(cols * per_input(c) for c, cols in reads.items()))
                for name, reads in self.reads.items()}

    def _layer_macs(self, module: nn.Module) -> float:
        """MACs of one call of a Conv/Linear layer, from the shapes seen in the trace."""
        shape_in, shape_out = self.shapes[module]
        if isinstance(module, nn.Linear):
            return math.prod(shape_out) * module.in_features
        kernel = math.prod(module.kernel_size)
        if module.transposed:
            return math.prod(shape_in) * module.out_channels // module.groups * kernel
        return math.prod(shape_out) * module.in_channels // module.groups * kernel


class NetworkGraph:
    """The structure of one network, traced once per architecture (see the module doc).

    Build it with :meth:`of`. Names are as in ``model.named_modules()`` (``"net.features.0"``
    for a LightningModule whose network is ``.net``).

    Attributes:
        batchnorm_of: Conv (or Linear) name -> the BatchNorm that directly consumes its output:
            THE lookup of a layer's BatchNorm (taps, the freeze, bias compensation).
        consumers: conv name -> the Conv/Linear layers that read its channels directly
            (through BatchNorm, activations, pooling, flatten or concatenation; not through
            a residual addition, where they read a sum) and lose input channels with it.
        channels: out channels of every Conv / out features of every Linear
            (:func:`pl_pruning.measure.channel_counts`).
        output_hw: spatial size of each Conv2d's output, for one sample.
        layer_shapes: Conv/Linear name -> (input shape, output shape) of one sample (batch
            dimension 1) as the trace saw them: what a latency table times each layer at.
        reads: Conv/Linear name -> {consumer name: input channels it loses per removed filter}.
        macs_per_filter: THE MACs one filter costs per sample: its own kernel over its
            output map plus, for each consumer, the input channel(s) that go with it.
        macs: MACs of one sample (what :func:`pl_pruning.measure.count_macs` counts).
        groups: the prunable coupled groups, in module order (the final classifier's
            group and groups coupled with an ignored layer are left out).
        dependency_graph: Torch-Pruning's graph (what surgery cuts with).

    Raises:
        PlPruningError: (from :meth:`of`) a model that cannot be traced with
            ``example_inputs``, or a bad ``ignored_layers`` entry.
    """

    traces: ClassVar[int] = 0
    cache_size: ClassVar[int] = 4
    _cache: ClassVar[OrderedDict[int, _Trace]] = OrderedDict()

    def __init__(self, trace: _Trace, ignored: Mapping[nn.Module, str]) -> None:
        self._trace, self.ignored = trace, dict(ignored)
        self.model, self.names = trace.model, trace.names

    dependency_graph = property(lambda self: self._trace.graph)
    inputs = property(lambda self: self._trace.inputs)
    signature = property(lambda self: self._trace.signature)
    batchnorm_of = property(lambda self: self._trace.batchnorm_of)
    channels = property(lambda self: self._trace.channels)
    output_hw = property(lambda self: self._trace.output_hw)
    macs = property(lambda self: self._trace.macs)
    macs_per_filter = property(lambda self: self._trace.macs_per_filter)
    consumers = property(lambda self: {n: tuple(r) for n, r in self._trace.reads.items()})
    reads = property(lambda self: self._trace.reads)
    layer_shapes = property(lambda self: {self.names[m]: s for m, s in self._trace.shapes.items()})

    @classmethod
    def of(cls, model: nn.Module, example_inputs: object,
           ignored_layers: Iterable[str | nn.Module] = ()) -> NetworkGraph:
        """The graph of ``model`` as it is now, traced only if its architecture changed.

        Args:
            model: the network, or a LightningModule around it.
            example_inputs: a batch the model accepts (one sample of it is traced, in eval
                mode with autograd on, even inside ``inference_mode``; flags put back).
            ignored_layers: names, regular expressions (full match) or modules whose
                groups :attr:`groups` leaves out; each must match a module.
        """
        ignored = resolve_ignored(model, ignored_layers)
        key = _key(model, example_inputs)
        trace = cls._cache.get(id(model))
        if trace is None or trace.model is not model or trace.key != key:
            trace = _Trace(model, example_inputs, key)
            cls.traces += 1
            cls._cache[id(model)] = trace
            while len(cls._cache) > cls.cache_size:  # the entries hold their models alive
                cls._cache.popitem(last=False)
        cls._cache.move_to_end(id(model))
        view = tuple(sorted((id(m), label) for m, label in ignored.items()))
        if view not in trace.views:
            trace.views[view] = cls(trace, ignored)
        return trace.views[view]

    @classmethod
    def forget(cls, model: nn.Module) -> None:
        """Drop the cached trace of ``model`` (surgery calls this: its graph was cut)."""
        trace = cls._cache.get(id(model))
        if trace is not None and trace.model is model:
            del cls._cache[id(model)]

    def describes(self, model: nn.Module, example_inputs: object) -> bool:
        """Whether this graph is of ``model`` as it is now."""
        return self.model is model and self._trace.key == _key(model, example_inputs)

    @cached_property
    def layout(self) -> _Layout:
        """Every coupled group with its modules (for surgery)."""
        return _Layout(self.model, self.dependency_graph, self.names, self.ignored)

    @cached_property
    def groups(self) -> list[PruningGroup]:
        return self.layout.prunable()

    @cached_property
    def untraceable(self) -> list[str]:
        """Layers never pruned because the graph coupled layers of different widths: their
        channels meet through an operation it cannot follow (an option-A zero-padding
        shortcut, a reshape). Pruning them would break the network."""
        return self.layout.untraceable()


def _key(model: nn.Module, example_inputs: object) -> tuple:
    """An architecture: the shapes (and devices) of all parameters and buffers, the module
    objects, and the shape of one sample of the example input (the batch size is free)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    sample = shape_of(example_inputs)
    sample = sample[1:] if isinstance(sample, tuple) else sample  # nested inputs: as they are
    return (tuple((n, tuple(t.shape), t.device) for n, t in tensors),
            tuple(id(m) for m in model.modules()), sample)


def _in_size(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


def _direct_readers(node) -> set[nn.Module]:
    """Conv/Linear modules reached from ``node`` without passing another such layer or an
    element-wise join of several tensors (a residual addition)."""
    found: set[nn.Module] = set()
    seen = {node}
    queue = deque(node.outputs)
    while queue:
        current = queue.popleft()
        if current in seen:
            continue
        seen.add(current)
        module = current.module
        if isinstance(module, PRUNABLE_TYPES):
            found.add(module)
            continue
        if isinstance(module, ops._OutputOp) or (isinstance(module, ops._ElementWiseOp)
                                                 and len(current.inputs) > 1):
            continue
        queue.extend(current.outputs)
    return found
