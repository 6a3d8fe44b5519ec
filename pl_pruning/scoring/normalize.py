"""Score normalisation: the one place that puts the scores of different layers (or
coupled groups) on one scale, so that filters can be ranked together.

* ``"none"``: raw scores;
* ``"per-layer"`` (**default**): each layer's scores divided by that layer's mean score
  (Torch-Pruning's ``normalizer="mean"``). Raw scores of different layers live on
  different scales (L1 norms grow with the fan-in, entropies with the spread of a layer),
  so a global ranking on raw scores tends to empty whole layers; dividing by the layer
  mean keeps the order inside each layer and makes "below average for its layer"
  comparable across layers;
* ``"cost-aware"``: the per-layer score divided by the MACs that removing one filter of
  that layer saves (relative to the mean over the layers scored), i.e. score per MAC
  saved, so the global ranking prefers removing filters of expensive layers. The MACs
  are an argument (:attr:`pl_pruning.structure.graph.NetworkGraph.macs_per_filter`, or
  their sum over a coupled group's convolutions); they are never computed here;
* ``"latency-aware"``: the same with the milliseconds one filter costs on a runtime
  instead of its MACs (:meth:`pl_pruning.pruning.latency.LatencyTable.per_filter`), so the
  ranking prefers filters that cost time there (BatchNorm, ReLU and pooling over large maps
  included).

Inside one layer all four give the same order.

Example::

    >>> import torch
    >>> scores = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([4.0, 4.0])}
    >>> normalize_scores(scores, "per-layer")["a"]
    tensor([0.5000, 1.5000])
    >>> normalize_scores(scores, "cost-aware", macs_per_filter={"a": 100.0, "b": 300.0})["b"]
    tensor([0.6667, 0.6667])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pl_pruning.errors import PlPruningError
from pl_pruning.validate import check_choice

NORMALIZATIONS = ("none", "per-layer", "cost-aware", "latency-aware")
DEFAULT_NORMALIZE = "per-layer"


def check_normalize(normalize: str) -> str:
    """``normalize`` if it is one of :data:`NORMALIZATIONS`, else :class:`PlPruningError`."""
    return check_choice("normalize", normalize, NORMALIZATIONS)


def per_layer_normalize(scores: Tensor) -> Tensor:
    """Scores divided by their mean (a copy, unchanged when the mean is not positive)."""
    mean = scores.mean() if scores.numel() else torch.tensor(0.0)
    return scores / mean if mean > 0 else scores.clone()


def normalize_scores(scores: Mapping[str, Tensor], normalize: str = DEFAULT_NORMALIZE,
                     macs_per_filter: Mapping[str, float] | None = None,
                     latency_per_filter: Mapping[str, float] | None = None) -> dict[str, Tensor]:
    """``scores`` (one tensor per layer or group) normalised as the module docstring says.

    Args:
        scores: ``{key: Tensor[filters]}``, higher = keep; keys are layers or group roots.
        normalize: one of :data:`NORMALIZATIONS`.
        macs_per_filter: for ``"cost-aware"`` only: ``{key: MACs one filter of it costs}``
            for every key of ``scores``.
        latency_per_filter: for ``"latency-aware"`` only: ``{key: ms one filter of it costs}``.

    Raises:
        PlPruningError: an unknown ``normalize``; ``"cost-aware"`` (``"latency-aware"``)
            without a positive cost for every key.
    """
    check_normalize(normalize)
    if normalize == "none":
        return dict(scores)
    out = {name: per_layer_normalize(s) for name, s in scores.items()}
    if normalize in ("cost-aware", "latency-aware") and out:
        given, what = ((macs_per_filter, "macs_per_filter") if normalize == "cost-aware"
                       else (latency_per_filter, "latency_per_filter"))
        costs = {}
        for name in out:
            cost = given.get(name) if given is not None else None
            if not cost or cost <= 0:
                raise PlPruningError(
                    f"normalize={normalize!r} needs the {what.replace('_', ' ')} of {name!r} (a positive "
                    f"number), got {cost!r}; use 'none' or 'per-layer', or give {what}")
            costs[name] = float(cost)
        mean_cost = sum(costs.values()) / len(costs)
        out = {name: s * (mean_cost / costs[name]) for name, s in out.items()}
    return out


__all__ = ["DEFAULT_NORMALIZE", "NORMALIZATIONS", "check_normalize", "normalize_scores",
           "per_layer_normalize"]
