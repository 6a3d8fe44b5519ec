"""pl_pruning: two-phase filter pruning by conditional entropy, as Lightning callbacks.

The three callbacks (and the optional ``Distillation``) go into any ``lightning.Trainer``; the rest works without one:
``prune_filters`` / ``pruning_groups`` (physical removal), ``measure_cost`` (MACs,
parameters, latency; more in :mod:`pl_pruning.measure`), ``save_pruned`` /
``load_pruned`` (pruned networks back into their original classes), ``build_model``
and ``ImageClassifier`` (the model zoo and a LightningModule around it).
"""

from pl_pruning.callbacks import Distillation, EntropyStatistics, MaxEntropyFreeze, PhaseController
from pl_pruning.checkpoint import load_pruned, save_pruned
from pl_pruning.errors import PlPruningError
from pl_pruning.measure import Cost, measure_cost
from pl_pruning.models import available_models, build_model
from pl_pruning.module import ImageClassifier
from pl_pruning.pruning.surgery import prune_filters, pruning_groups

__version__ = "0.1.0"

__all__ = [
    "Cost",
    "Distillation",
    "EntropyStatistics",
    "ImageClassifier",
    "MaxEntropyFreeze",
    "PhaseController",
    "PlPruningError",
    "available_models",
    "build_model",
    "load_pruned",
    "measure_cost",
    "prune_filters",
    "pruning_groups",
    "save_pruned",
]
