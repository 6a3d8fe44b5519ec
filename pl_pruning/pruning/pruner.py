"""Pruner: what a pruning run does to its network, without Lightning.

The controller decides (:mod:`~pl_pruning.pruning.schedule`); the pruner acts on the
module: it traces it (:class:`~pl_pruning.structure.graph.NetworkGraph`, cached per
architecture), prices it, scores its groups, cuts a plan (:func:`prune_filters` with the
run's settings), and snapshots / restores the accepted network with the scores that
belong to it. The module needs an ``example_input_array`` (a Tensor).

Example::

    pruner = Pruner(ignored_layers=("classifier",), compensate=False)
    scores = FilterScores()
    pruner.refresh(scores, model, ["l1"])               # data criteria: pass the collected statistics
    graph, scored = pruner.scored(model, scores.current("l1"))
    pruner.cut(model, planner.global_plan(scored, 0.2, graph), scores)   # 20% of the filters
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer

from pl_pruning.errors import PlPruningError
from pl_pruning.measure import channel_counts, count_params
from pl_pruning.pruning import optimizer_state, planner
from pl_pruning.pruning.planner import MEAN_KEY, FilterScores
from pl_pruning.pruning.surgery import SurgeryResult, prune_filters
from pl_pruning.statistics.result import CollectedStatistics
from pl_pruning.structure.graph import NetworkGraph

__all__ = ["Pruner", "private_copy"]


def private_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without the forward hooks others put on it (statistics
    taps, the controller's own): its forward passes feed nothing but the caller."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    return twin


@dataclass
class Pruner:
    """One run's pruning settings and the operations that use them.

    Args:
        ignored_layers: layer names or regular expressions never pruned.
        min_channels: filters every layer keeps at least.
        round_to: ``None``, or keep channel counts above this a multiple of it.
        compensate: fold removed filters' mean activations into the consumers' biases.

    The statistics that data criteria and compensation read are passed to :meth:`refresh`;
    a cut or a restore leaves them to whoever collects them (they describe the network as
    it was, and :meth:`~pl_pruning.statistics.CollectedStatistics.fits` says so).
    """

    ignored_layers: tuple[str, ...] = ()
    min_channels: int = 1
    round_to: int | None = None
    compensate: bool = True

    def graph(self, module: nn.Module) -> NetworkGraph:
        example = getattr(module, "example_input_array", None)
        if not isinstance(example, Tensor):
            raise PlPruningError("pruning traces the network with an example input: set example_input_array "
                                 "on the module, or use batches whose first element (or 'x' / 'input' key) "
                                 "is the model input")
        return NetworkGraph.of(module, example, self.ignored_layers)

    def cost(self, module: nn.Module) -> tuple[int, int]:
        """MACs per sample and parameters."""
        return self.graph(module).macs, count_params(module)

    def scored(self, module: nn.Module, scores: Mapping[str, Tensor]) -> tuple[NetworkGraph, planner.Scored]:
        graph = self.graph(module)
        return graph, planner.score_groups(graph.groups, scores)

    def refresh(self, scores: FilterScores, module: nn.Module, criteria: Iterable[str],
                statistics: CollectedStatistics | None = None) -> None:
        """Remember the latest scores of every current filter, by its original index (data
        criteria and the mean activations from ``statistics``, when they fit ``module``)."""
        scores.start(channel_counts(module, convs_only=True))
        scores.update(planner.fresh_scores(criteria, statistics, module))

    def cut(self, module: nn.Module, plan: Mapping[str, list[int]], scores: FilterScores) -> SurgeryResult:
        """Remove the planned filters (atomic); the scores forget them."""
        result = prune_filters(module, plan, module.example_input_array, graph=self.graph(module),
                               ignored_layers=self.ignored_layers, min_channels=self.min_channels,
                               round_to=self.round_to, compensate=self.compensate,
                               channel_means=scores.current(MEAN_KEY) if self.compensate else None)
        if result.filters_removed == 0:
            raise RuntimeError(f"the planned surgery {plan} removed no filter")
        scores.remove(result.removed)
        return result

    def snapshot(self, module: nn.Module, optimizers: Sequence[Optimizer], scores: FilterScores) -> dict[str, Any]:
        """The accepted network: weights, a deep copy of the optimizer state, its scores."""
        return {**optimizer_state.snapshot(module, optimizers), "scores": scores.copy()}

    def restore(self, module: nn.Module, accepted: Mapping[str, Any]) -> FilterScores:
        """Put the accepted network back; returns a copy of its own scores."""
        optimizer_state.restore_model(module, accepted["model"])
        return accepted["scores"].copy()
