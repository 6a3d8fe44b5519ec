"""Which layer follows which: found by running the network once and watching tensors."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def following_batchnorms(model: nn.Module, example_inputs: Tensor) -> dict[str, str]:
    """``{conv name: batchnorm name}`` for every Conv2d whose output goes straight into a
    BatchNorm2d (the same tensor object), names as in ``model.named_modules()``.

    Tracing one forward pass finds the pairs whatever the module layout (Sequential,
    ResNet blocks, torchvision models), where walking the module tree would guess.
    """
    produced: dict[int, str] = {}
    alive: list[Tensor] = []  # keep outputs alive so that no id is reused mid-trace
    pairs: dict[str, str] = {}
    handles = []

    def conv_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            produced[id(output)] = name
            alive.append(output)
        return hook

    def bn_hook(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            conv = produced.get(id(args[0]))
            if conv is not None:
                pairs.setdefault(conv, name)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(bn_hook(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            outputs = model(example_inputs.to(device))
        del outputs
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return pairs
