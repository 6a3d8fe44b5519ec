"""Scoring: pure math from collected statistics to one score per filter (higher = keep).

* :mod:`~pl_pruning.scoring.information`: entropy, conditional entropy, mutual information
  from histogram counts;
* :mod:`~pl_pruning.scoring.criteria`: the criteria and their one registry
  (:func:`get_criterion`, :func:`register_criterion`, :data:`CRITERIA`);
* :mod:`~pl_pruning.scoring.normalize`: the one score normalisation;
* :mod:`~pl_pruning.scoring.table`: every data criterion's raw value per filter, as CSV.
"""

from pl_pruning.scoring.criteria import (
    CRITERIA,
    DEFAULT_CRITERION,
    APoZ,
    ConditionalEntropy,
    Criterion,
    Entropy,
    L1Norm,
    MutualInformation,
    NormalizedConditionalEntropy,
    RandomScore,
    compute_scores,
    get_criterion,
    register_criterion,
)
from pl_pruning.scoring.information import (
    conditional_entropy_from_counts,
    entropy_from_counts,
    mutual_information_from_counts,
    uncertainty_coefficient_from_counts,
)
from pl_pruning.scoring.normalize import (
    DEFAULT_NORMALIZE,
    NORMALIZATIONS,
    check_normalize,
    normalize_scores,
    per_layer_normalize,
)

__all__ = [
    "CRITERIA", "DEFAULT_CRITERION", "DEFAULT_NORMALIZE", "NORMALIZATIONS", "APoZ",
    "ConditionalEntropy", "Criterion", "Entropy", "L1Norm", "MutualInformation",
    "NormalizedConditionalEntropy", "RandomScore", "check_normalize", "compute_scores",
    "conditional_entropy_from_counts", "entropy_from_counts", "get_criterion",
    "mutual_information_from_counts", "normalize_scores", "per_layer_normalize", "register_criterion",
    "uncertainty_coefficient_from_counts",
]
