"""Compatibility names while the rest of the package moves to :mod:`pl_pruning.scoring`."""

from pl_pruning.scoring.criteria import *  # noqa: F403
from pl_pruning.scoring.criteria import (  # noqa: F401
    CRITERIA,
    DEFAULT_CRITERION,
    Criterion,
    compute_scores,
    get_criterion,
)
from pl_pruning.scoring.information import *  # noqa: F403
from pl_pruning.scoring.normalize import *  # noqa: F403
from pl_pruning.statistics.result import LayerStatistics  # noqa: F401
from pl_pruning.statistics.taps import conv_layers, no_conv_error  # noqa: F401
