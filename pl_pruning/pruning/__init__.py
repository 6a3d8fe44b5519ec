"""The pruning engine, free of Lightning.

* :mod:`~pl_pruning.pruning.graph`: :class:`NetworkGraph`, one traced description of a
  network (coupled groups, conv -> BatchNorm, consumers, channels, MACs), cached per
  architecture; :mod:`~pl_pruning.pruning.groups`: which filters go together.
* :mod:`~pl_pruning.pruning.planner`: group scores, global and layer-wise plans, Phase II
  layer orders (a registry: :func:`register_layer_order`).
* :mod:`~pl_pruning.pruning.surgery`: :func:`prune_filters`, atomic physical removal;
  :mod:`~pl_pruning.pruning.compensation`: the bias update.
* :mod:`~pl_pruning.pruning.optimizer_state`: momentum / Adam state and scheduler
  progress carried across surgery and rollback.
* :mod:`~pl_pruning.pruning.schedule`: the two-phase decision rule;
  :mod:`~pl_pruning.pruning.run_state`: the run's data (phases, steps, checkpoints);
  :mod:`~pl_pruning.pruning.pruner`: :class:`Pruner`, what a run does to its network
  (trace, price, score, cut, snapshot, restore).
"""

from pl_pruning.pruning.graph import NetworkGraph
from pl_pruning.pruning.groups import PruningGroup
from pl_pruning.pruning.planner import LAYER_ORDERS, register_layer_order
from pl_pruning.pruning.pruner import Pruner
from pl_pruning.pruning.surgery import SurgeryResult, prune_filters, pruning_groups

__all__ = [
    "LAYER_ORDERS",
    "NetworkGraph",
    "Pruner",
    "PruningGroup",
    "SurgeryResult",
    "prune_filters",
    "pruning_groups",
    "register_layer_order",
]
