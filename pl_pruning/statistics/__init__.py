"""Statistics: the collection engine (no Lightning) and what it produces.

* :mod:`~pl_pruning.statistics.collector`: :class:`StatisticsCollector`, forward hooks to
  per-filter histograms, usable in a plain loop;
* :mod:`~pl_pruning.statistics.states`: its state as torchmetrics ``Metric``s (DDP reductions
  declared);
* :mod:`~pl_pruning.statistics.taps`: where a convolution's filters are read;
* :mod:`~pl_pruning.statistics.result`: :class:`LayerStatistics`, :class:`CollectedStatistics`.
"""

from pl_pruning.statistics.collector import StatisticsCollector
from pl_pruning.statistics.result import CollectedStatistics, LayerStatistics
from pl_pruning.statistics.taps import TapPoint, conv_layers, plan_taps

__all__ = [
    "CollectedStatistics", "LayerStatistics", "StatisticsCollector", "TapPoint", "conv_layers", "plan_taps",
]
