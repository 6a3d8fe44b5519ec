"""The ground floor: what statistics, scoring, pruning and the callbacks share about a network
and its batches (no Lightning, nothing above it imported).

* :mod:`~pl_pruning.structure.graph`: :class:`NetworkGraph`, one traced description of a
  network (coupled groups, conv -> BatchNorm, consumers, channels, MACs), cached per
  architecture;
* :mod:`~pl_pruning.structure.groups`: :class:`PruningGroup`, which filters go together and
  which groups may not be cut;
* :mod:`~pl_pruning.structure.batches`: inputs, labels and logits of a batch.
"""

from pl_pruning.structure.batches import example_input, inputs_from_batch, labels_from_batch
from pl_pruning.structure.graph import NetworkGraph
from pl_pruning.structure.groups import PruningGroup

__all__ = ["NetworkGraph", "PruningGroup", "example_input", "inputs_from_batch", "labels_from_batch"]
