"""Train/eval flags: the one place that switches them for a block and puts them back.

Every module's own flag is saved and restored (not only the root's), so a BatchNorm a
user froze in eval mode inside a training network stays frozen afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every module's flag put back after."""
    with kept_modes(model):
        model.eval()
        yield model


@contextlib.contextmanager
def kept_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Whatever the block does to train/eval flags, every module's flag is put back."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def autograd_on(model: nn.Module) -> Iterator[nn.Module]:
    """Autograd enabled (Torch-Pruning traces grad_fns), even inside Lightning's
    ``inference_mode`` validation hooks; every module's flag put back after."""
    with kept_modes(model), torch.inference_mode(False), torch.enable_grad():
        yield model
