"""Lightning callbacks of the pruning pipeline, one per file."""

from pl_pruning.callbacks.channels_last import ChannelsLast
from pl_pruning.callbacks.distillation import Distillation
from pl_pruning.callbacks.entropy_statistics import EntropyStatistics
from pl_pruning.callbacks.max_entropy_freeze import MaxEntropyFreeze
from pl_pruning.callbacks.phase_controller import PhaseController

__all__ = ["ChannelsLast", "Distillation", "EntropyStatistics", "MaxEntropyFreeze", "PhaseController"]
