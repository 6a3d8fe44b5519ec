"""pl_pruning: two-phase filter pruning by conditional entropy, as Lightning callbacks."""

from pl_pruning.callbacks import EntropyStatistics, MaxEntropyFreeze, PhaseController
from pl_pruning.errors import PlPruningError
from pl_pruning.measure import Cost, measure
from pl_pruning.models import available_models, build_model
from pl_pruning.module import ImageClassifier

__version__ = "0.1.0"

__all__ = [
    "Cost",
    "EntropyStatistics",
    "ImageClassifier",
    "MaxEntropyFreeze",
    "PhaseController",
    "PlPruningError",
    "available_models",
    "build_model",
    "measure",
]
