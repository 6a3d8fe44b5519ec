"""Where the collector reads each convolution's filters: the *tap point*.

Rule: the tap is the output of the BatchNorm and the activation that follow the
convolution, where there are such, else the convolution's own output. "Follows" means
single-consumer data flow, found by tracing the model with ``torch.fx``:

1. start at the convolution's node; if its only consumer is the convolution's BatchNorm
   (:attr:`~pl_pruning.structure.graph.NetworkGraph.batchnorm_of`, called once per
   forward), move to it;
2. if the only consumer of where we are is an element-wise activation (a module such as
   ``nn.ReLU``, or a function such as ``F.relu``), the tap is after it.

The forward hook goes on the last *module* of that chain. When the activation is a
function, or a module called more than once per forward (torchvision's ResNet blocks reuse
one ``self.relu``), the hook sits on the BatchNorm (or convolution) and applies the
activation itself, out of place, before pooling.

In a residual block (``conv2 -> bn2 -> (+ shortcut) -> relu``) the consumer of ``bn2`` is
the addition, so ``conv2`` is tapped at ``bn2``'s output, before the residual sum and the
final ReLU: the filter's own contribution, not mixed with the shortcut. The same holds for
the shortcut's 1x1 convolution.

Where a part of the model cannot be traced (data-dependent control flow), its children are
traced one by one; a convolution no trace covers falls back to its ``nn.Sequential``
siblings (``conv``, its BatchNorm, an activation in a row), else to its own output.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from pl_pruning.errors import PlPruningError

NONNEGATIVE_MODULES = (nn.ReLU, nn.ReLU6)
ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)
# element-wise functions recognised after a convolution: target -> (function, non-negative)
ACTIVATION_FUNCTIONS: dict[object, tuple[Callable[[Tensor], Tensor], bool]] = {
    F.relu: (torch.relu, True), torch.relu: (torch.relu, True), torch.relu_: (torch.relu, True),
    F.relu_: (torch.relu, True), F.relu6: (F.relu6, True), F.silu: (F.silu, False),
    F.gelu: (F.gelu, False), F.hardswish: (F.hardswish, False), F.mish: (F.mish, False),
    torch.sigmoid: (torch.sigmoid, False), F.sigmoid: (torch.sigmoid, False),
    torch.tanh: (torch.tanh, False), F.tanh: (torch.tanh, False),
}
ACTIVATION_METHODS: dict[str, tuple[Callable[[Tensor], Tensor], bool]] = {
    "relu": (torch.relu, True), "relu_": (torch.relu, True), "sigmoid": (torch.sigmoid, False),
    "sigmoid_": (torch.sigmoid, False), "tanh": (torch.tanh, False), "tanh_": (torch.tanh, False),
}

@dataclass
class TapPoint:
    """Where one convolution's filters are read.

    Attributes:
        layer: the convolution's name.
        module: the name of the module whose forward output the hook reads.
        kind: ``"activation"`` (after BN/activation), ``"batchnorm"`` or ``"conv"``.
        activation: the activation applied by the hook itself (a function, or the name of a
            shared activation module), when the hook is not on the activation; else None.
        nonnegative: the tapped values are >= 0 (after a ReLU), which makes counting zeros cheaper.
        how: ``"fx"`` or ``"sequential"`` (fallback) or ``"none"`` (untraced, own output).
    """

    layer: str
    module: str
    kind: str
    activation: Callable[[Tensor], Tensor] | str | None = None
    nonnegative: bool = False
    how: str = "fx"

    def transform(self, root: nn.Module) -> Callable[[Tensor], Tensor] | None:
        """What the hook applies to the module output before pooling (None: nothing)."""
        if self.activation is None or callable(self.activation):
            return self.activation
        act = copy.copy(root.get_submodule(self.activation))  # shares parameters
        if hasattr(act, "inplace"):
            act.inplace = False  # never change the tensor the network is about to use
        return act.forward


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` of ``model`` with its name (each module once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def no_conv_error(model: nn.Module) -> PlPruningError:
    kinds = sorted({type(m).__name__ for m in model.modules() if m is not model})
    return PlPruningError(
        f"model {type(model).__name__} has no nn.Conv2d (its modules: {', '.join(kinds) or 'none'}); "
        "filter pruning scores the output filters of nn.Conv2d layers, so a model with at "
        "least one nn.Conv2d is required")


def plan_taps(root: nn.Module, layers: list[str], batchnorm_of: Mapping[str, str]
              ) -> dict[str, TapPoint]:
    """The tap point of every convolution in ``layers`` (names relative to ``root``).

    Args:
        root: the model.
        layers: names of ``nn.Conv2d`` modules of ``root``.
        batchnorm_of: ``{conv name: the BatchNorm that consumes its output}``, from
            :class:`~pl_pruning.structure.graph.NetworkGraph` of ``root``.
    """
    plans: dict[str, TapPoint] = {}
    wanted = set(layers)
    for prefix, module, graph in _traced_parts(root, wanted):
        plans.update(_plan_graph(prefix, module, graph, wanted - set(plans), batchnorm_of))
    for name in layers:
        if name not in plans:
            plans[name] = _plan_sequential(root, name, batchnorm_of)
    return {name: plans[name] for name in layers}


def _traced_parts(module: nn.Module, wanted: set[str], prefix: str = ""
                  ) -> Iterator[tuple[str, nn.Module, fx.Graph]]:
    """The largest sub-modules (containing wanted convolutions) that ``torch.fx`` can trace."""
    graph = _trace(module)
    if graph is not None:
        yield prefix, module, graph
        return
    for name, child in module.named_children():
        child_prefix = f"{prefix}{name}."
        if isinstance(child, nn.Conv2d) or not any(w.startswith(child_prefix) for w in wanted):
            continue
        yield from _traced_parts(child, wanted, child_prefix)


def _trace(module: nn.Module) -> fx.Graph | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fx.Tracer().trace(module)
    except Exception:  # untraceable forward (control flow, unsupported ops): fall back
        return None


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _plan_graph(prefix: str, part: nn.Module, graph: fx.Graph, wanted: set[str],
                batchnorm_of: Mapping[str, str]) -> dict[str, TapPoint]:
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    nodes_of: dict[str, list[fx.Node]] = {}
    for n in graph.nodes:
        if n.op == "call_module":
            nodes_of.setdefault(prefix + n.target, []).append(n)

    def module_of(node: fx.Node) -> nn.Module | None:
        return part.get_submodule(node.target) if node.op == "call_module" else None

    plans = {}
    for name in wanted:
        nodes = nodes_of.get(name)
        if not nodes:
            continue
        if len(nodes) > 1:  # called several times per forward: every call is counted
            plans[name] = TapPoint(name, name, "conv", how="fx")
            continue
        node, tap = nodes[0], TapPoint(name, name, "conv", how="fx")
        user = _single_user(node)
        if (user is not None and user.op == "call_module" and calls[user.target] == 1
                and prefix + user.target == batchnorm_of.get(name)):
            node, tap.module, tap.kind = user, prefix + user.target, "batchnorm"
        user = _single_user(node)
        if user is not None:
            act = module_of(user)
            if isinstance(act, ACTIVATION_MODULES):
                tap.kind, tap.nonnegative = "activation", isinstance(act, NONNEGATIVE_MODULES)
                if calls[user.target] == 1:
                    tap.module = prefix + user.target
                else:  # a shared module: hook where we are, apply a copy of it
                    tap.activation = prefix + user.target
            else:
                fn = _activation_function(user)
                if fn is not None:
                    tap.kind, tap.activation, tap.nonnegative = "activation", fn[0], fn[1]
        plans[name] = tap
    return plans


def _activation_function(node: fx.Node) -> tuple[Callable[[Tensor], Tensor], bool] | None:
    if node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS:
        fn, nonneg = ACTIVATION_FUNCTIONS[node.target]
    elif node.op == "call_method" and node.target in ACTIVATION_METHODS:
        fn, nonneg = ACTIVATION_METHODS[node.target]
    elif node.op == "call_function" and node.target is F.leaky_relu:
        slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
        if isinstance(slope, fx.Node):
            return None
        return functools.partial(F.leaky_relu, negative_slope=float(slope)), False
    else:
        return None
    if fn is F.gelu and isinstance(node.kwargs.get("approximate"), str):
        return functools.partial(F.gelu, approximate=node.kwargs["approximate"]), False
    return fn, nonneg


def _plan_sequential(root: nn.Module, name: str, batchnorm_of: Mapping[str, str]) -> TapPoint:
    """Fallback without a trace: ``conv``, its BatchNorm, an activation: siblings in a Sequential."""
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    tap = TapPoint(name, name, "conv", how="none")
    if not isinstance(parent, nn.Sequential):
        return tap
    tap.how = "sequential"
    children = list(parent.named_children())
    index = [n for n, _ in children].index(attr)
    registered = Counter(id(m) for _, m in root.named_modules(remove_duplicate=False))
    rest = children[index + 1:]

    def sibling(attr: str) -> str:
        return f"{parent_name}.{attr}" if parent_name else attr

    if rest and sibling(rest[0][0]) == batchnorm_of.get(name):
        tap.module, tap.kind = sibling(rest[0][0]), "batchnorm"
        rest = rest[1:]
    if rest and isinstance(rest[0][1], ACTIVATION_MODULES):
        act_name = sibling(rest[0][0])
        tap.kind, tap.nonnegative = "activation", isinstance(rest[0][1], NONNEGATIVE_MODULES)
        if registered[id(rest[0][1])] == 1:
            tap.module = act_name
        else:
            tap.activation = act_name
    return tap


__all__ = ["TapPoint", "conv_layers", "no_conv_error", "plan_taps"]
