"""The pruning engine, free of Lightning (the network's graph and groups it reads are in
:mod:`pl_pruning.structure`).

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

from pl_pruning.pruning.planner import LAYER_ORDERS, register_layer_order
from pl_pruning.pruning.pruner import Pruner
from pl_pruning.pruning.surgery import SurgeryResult, prune_filters, pruning_groups

__all__ = [
    "LAYER_ORDERS",
    "Pruner",
    "SurgeryResult",
    "prune_filters",
    "pruning_groups",
    "register_layer_order",
]
