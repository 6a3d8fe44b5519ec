"""What a batch holds: its inputs, its class labels, a model's logits.

Batches are ``(inputs, labels, ...)`` tuples or lists, or dicts with the keys below, as
the common ``DataLoader`` layouts give them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pl_pruning.errors import PlPruningError

LABEL_KEYS = ("y", "label", "labels", "target", "targets")
INPUT_KEYS = ("x", "input", "inputs", "image", "images")


def labels_from_batch(batch: Any) -> Tensor:
    """The integer class labels of a batch: ``batch[1]`` of a tuple or list, or
    ``batch[key]`` of a mapping for ``key`` in :data:`LABEL_KEYS`.

    Raises:
        PlPruningError: the batch holds no 1-d integer tensor of labels there.
    """
    labels = None
    if isinstance(batch, Mapping):
        labels = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        labels = batch[1]
    ok = (isinstance(labels, Tensor) and labels.dim() == 1 and not labels.is_floating_point()
          and not labels.is_complex() and labels.dtype != torch.bool)
    if not ok:
        raise PlPruningError(
            f"condition_on='label' needs validation batches with integer class labels, "
            f"(inputs, labels) or a dict with one of the keys {list(LABEL_KEYS)}; got "
            f"{describe(batch)}. Allowed: labelled batches, or condition_on='prediction' "
            "for data without labels")
    return labels


def inputs_from_batch(batch: Any) -> Tensor | None:
    """The model input of a batch (``batch[0]``, ``batch[key]`` for ``key`` in
    :data:`INPUT_KEYS`, or the batch itself when it is a Tensor); None if there is none."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in INPUT_KEYS if k in batch), None)
    elif isinstance(batch, (tuple, list)) and batch:
        x = batch[0]
    else:
        x = None
    return x if isinstance(x, Tensor) else None


def example_input(module: nn.Module, batch: Any = None) -> Tensor | None:
    """An input to trace ``module`` with: its ``example_input_array`` when it has one (a
    Tensor), else the first sample of ``batch``'s inputs (None when neither is there)."""
    example = getattr(module, "example_input_array", None)
    if isinstance(example, Tensor):
        return example
    x = inputs_from_batch(batch) if batch is not None else None
    return x[:1].detach().clone() if x is not None and x.dim() > 0 and x.shape[0] > 0 else None


def logits_of(output: Any, where: str) -> Tensor:
    """The ``(N, classes)`` logits in a module's output (a Tensor, the first element of a
    tuple, or ``output["logits"]`` / ``output["out"]``).

    Raises:
        PlPruningError: there are none; ``where`` names the module in the message.
    """
    if isinstance(output, Mapping):
        output = output.get("logits", output.get("out"))
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, Tensor) or output.dim() != 2:
        raise PlPruningError(
            f"condition_on='prediction': the output of {where or 'the LightningModule'!r} is not "
            f"(N, classes) logits: got {describe(output)}; set output_module to the module "
            "that returns them")
    return output


def describe(batch: Any) -> str:
    """A short description of a batch's structure for error messages."""
    if isinstance(batch, Tensor):
        return f"a single Tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a dict with keys {sorted(map(str, batch))}"
    if isinstance(batch, (tuple, list)):
        parts = [f"Tensor{tuple(b.shape)}/{str(b.dtype).replace('torch.', '')}"
                 if isinstance(b, Tensor) else type(b).__name__ for b in batch]
        return f"a {type(batch).__name__} of [{', '.join(parts)}]"
    return f"a {type(batch).__name__}"


__all__ = ["INPUT_KEYS", "LABEL_KEYS", "describe", "example_input", "inputs_from_batch",
           "labels_from_batch", "logits_of"]
