"""Temporary stand-in for the engine's NetworkGraph: batchnorm_of, output_hw and
macs_per_filter only, found by one forward pass watching tensor identity."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pl_pruning.modes import eval_mode

_BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)
# modules a channel passes through unchanged in meaning, on its way to a consumer
_CHANNELWISE = (
    *_BATCHNORMS, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
    nn.Softplus, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity,
)


class NetworkGraph:
    """Stand-in: conv -> BatchNorm, conv output sizes and MACs per filter of ``model``."""

    traces: ClassVar[int] = 0
    _cache: ClassVar[dict[tuple, NetworkGraph]] = {}

    def __init__(self, batchnorm_of: dict[str, str], consumers: dict[str, tuple[str, ...]],
                 output_hw: dict[str, tuple[int, int]], macs_per_filter: dict[str, float]) -> None:
        self.batchnorm_of = batchnorm_of
        self.consumers = consumers
        self.output_hw = output_hw
        self.macs_per_filter = macs_per_filter

    @classmethod
    def of(cls, model: nn.Module, example_inputs: Any, ignored_layers: Any = ()) -> NetworkGraph:
        key = (id(model), tuple((n, tuple(t.shape)) for n, t in model.state_dict().items()))
        graph = cls._cache.get(key)
        if graph is None:
            graph = cls._trace(model, example_inputs)
            if len(cls._cache) > 16:
                cls._cache.clear()
            cls._cache[key] = graph
        return graph

    @classmethod
    def _trace(cls, model: nn.Module, example_inputs: Tensor) -> NetworkGraph:
        cls.traces += 1
        source: dict[int, str] = {}  # tensor id -> conv whose channels it carries
        alive: list[Tensor] = []     # keep outputs alive so that no id is reused mid-trace
        batchnorm_of: dict[str, str] = {}
        consumers: dict[str, list[str]] = {}
        output_hw: dict[str, tuple[int, int]] = {}
        convs: dict[str, nn.Conv2d] = {}

        def hook(name: str, module: nn.Module):
            def run(m: nn.Module, args: tuple, output: Any) -> None:
                x = args[0] if args else None
                came_from = source.get(id(x)) if isinstance(x, Tensor) else None
                if isinstance(m, nn.Conv2d):
                    convs[name] = m
                    output_hw[name] = (int(output.shape[-2]), int(output.shape[-1]))
                    if came_from is not None and name not in consumers.setdefault(came_from, []):
                        consumers[came_from].append(name)
                    source[id(output)] = name
                    alive.append(output)
                    return
                if came_from is None:
                    return
                if isinstance(m, _BATCHNORMS) and id(x) == conv_output.get(came_from):
                    batchnorm_of.setdefault(came_from, name)
                if isinstance(output, Tensor):
                    source[id(output)] = came_from
                    alive.append(output)
            return run

        conv_output: dict[str, int] = {}

        def remember(name: str):
            def run(m: nn.Module, args: tuple, output: Any) -> None:
                conv_output[name] = id(output)
            return run

        handles = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                handles.append(module.register_forward_hook(remember(name)))
                handles.append(module.register_forward_hook(hook(name, module)))
            elif isinstance(module, _CHANNELWISE):
                handles.append(module.register_forward_hook(hook(name, module)))
        try:
            with eval_mode(model), torch.no_grad():
                device = next(model.parameters()).device
                model(example_inputs.to(device))
        finally:
            for h in handles:
                h.remove()
        macs: dict[str, float] = {}
        for name, conv in convs.items():
            kh, kw = conv.kernel_size
            h, w = output_hw[name]
            own = conv.in_channels // conv.groups * kh * kw * h * w
            downstream = 0
            for c in consumers.get(name, ()):
                consumer = convs[c]
                ch, cw = consumer.kernel_size
                downstream += consumer.out_channels // consumer.groups * ch * cw * output_hw[c][0] * output_hw[c][1]
            macs[name] = float(own + downstream)
        return cls(batchnorm_of, {n: tuple(c) for n, c in consumers.items()}, output_hw, macs)


__all__ = ["NetworkGraph"]
