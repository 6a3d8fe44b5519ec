"""The ``pruning`` node of the app's config: one node per pruning callback, each holding its
constructor's keyword arguments as they are (``PhaseController(**cfg.pruning.controller)``),
and ``fit``, the pruning fit's own settings (``max_epochs``, ``lr``, ``scheduler``)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from pl_pruning.callbacks import Distillation, EntropyStatistics, MaxEntropyFreeze, PhaseController
from pl_pruning.cli.keys import keyed

__all__ = ["PRUNING_CALLBACKS", "pruning_callbacks", "pruning_on"]

# The ``pruning`` node's callback nodes and their classes, in the order their hooks run.
PRUNING_CALLBACKS = {"statistics": EntropyStatistics, "controller": PhaseController,
                     "freeze": MaxEntropyFreeze, "distill": Distillation}


def pruning_on(node: DictConfig | None) -> bool:
    """Whether the ``pruning`` node is a preset's (it holds every callback node)."""
    return bool(node) and all(name in node for name in PRUNING_CALLBACKS)


def pruning_callbacks(node: DictConfig | None, measure: DictConfig | None = None) -> list[Any]:
    """EntropyStatistics, PhaseController, MaxEntropyFreeze and Distillation from the
    ``pruning`` node, each given its node's keys as arguments; a node set to ``null`` or
    ``false`` is left out (``true``: the class with its defaults). Empty for ``pruning=none``,
    whose node holds none of the four (an experiment's pruning settings are then ignored).
    The controller's latency runtime takes its batch size and threads from ``measure`` (the
    app's ``measure`` node) unless ``pruning.controller.latency`` sets them."""
    if not pruning_on(node):
        return []
    settings = OmegaConf.to_container(node, resolve=True)
    controller = settings.get("controller")
    if measure is not None and isinstance(controller, dict) and isinstance(controller.get("latency") or {}, dict):
        controller["latency"] = {"batch_size": measure.batch_size, "num_threads": measure.num_threads,
                                 **(controller.get("latency") or {})}
    callbacks = []
    for name, cls in PRUNING_CALLBACKS.items():
        arguments = settings.get(name)
        if arguments is True:
            arguments = {}
        if arguments is not None and arguments is not False:
            with keyed(f"{node._get_full_key(None)}.{name}", list(arguments)):  # named by its full key
                callbacks.append(cls(**arguments))
    return callbacks
