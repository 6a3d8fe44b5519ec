"""The number ``pl-prune`` returns to a sweeper (Optuna, Nevergrad, ...); higher is better.

::

    value = results[metric]                    if acc_drop <= max_drop
            penalty - (acc_drop - max_drop)    otherwise

``metric`` is ``macs_reduction`` (default) or ``params_reduction``, at least 1.0 for any
pruned network; ``acc_drop`` is the *test* accuracy drop (baseline minus pruned, a
fraction), which the controller never sees. With the default penalty 0.0 every run over
the bound scores below every run within it, and a smaller excess scores higher, so the
sampler still learns from infeasible trials. Without pruning the value is 1.0 (no
reduction, no drop). The settings are the config's ``objective`` node; ``max_drop``
follows ``pruning.controller.max_drop`` unless set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pl_pruning.validate import check_choice, check_number

METRICS = ("macs_reduction", "params_reduction")


@dataclass(frozen=True)
class Objective:
    """The objective and its settings.

    Args:
        metric: ``"macs_reduction"`` or ``"params_reduction"`` (baseline / pruned).
        max_drop: the largest test accuracy drop (a fraction) that still scores ``metric``.
        penalty: the score at the bound for a run over it; the excess is subtracted.

    Raises:
        PlPruningError: an unknown metric, ``max_drop`` outside ``[0, 1)`` or a
            non-finite penalty.

    Example::

        Objective(max_drop=0.02)({"pruned": {...}, "macs_reduction": 4.0, "acc_drop": 0.01})  # 4.0
    """

    metric: str = "macs_reduction"
    max_drop: float = 0.02
    penalty: float = 0.0

    def __post_init__(self) -> None:
        check_choice("objective.metric", self.metric, METRICS)
        object.__setattr__(self, "max_drop",
                           check_number("objective.max_drop", self.max_drop, 0.0, 1.0, high_open=True))
        object.__setattr__(self, "penalty", check_number("objective.penalty", self.penalty))

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> Objective:
        """From the config's ``objective`` node; absent keys take the defaults."""
        node = node or {}
        return cls(**{k: node[k] for k in ("metric", "max_drop", "penalty") if node.get(k) is not None})

    def __call__(self, results: Mapping[str, Any]) -> float:
        """The value of one job's ``results.json`` content."""
        if "pruned" not in results:
            return 1.0
        excess = results["acc_drop"] - self.max_drop
        return float(results[self.metric]) if excess <= 0 else float(self.penalty - excess)

    def summary(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """What ``results.json`` records as ``objective``."""
        return {"value": self(results), "metric": self.metric, "max_drop": self.max_drop,
                "within_max_drop": "pruned" not in results or results["acc_drop"] <= self.max_drop}
