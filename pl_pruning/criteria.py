"""Filter-scoring criteria: one small class each, one registry. Higher score = keep.

Every criterion turns what it needs into one score per output filter of a convolution:

=======================  ===========================================  ===========  ==========
name                     score                                        needs data   reference
=======================  ===========================================  ===========  ==========
``conditional_entropy``  H(A | Y) = sum_y p(y) H(A | Y=y)  (default)  yes          2PFPCE
``entropy``              H(A)                                         yes          Luo & Wu 2017
``mutual_information``   I(A; Y) = H(A) - H(A | Y)                    yes          --
``apoz``                 1 - APoZ (fraction of non-zero activations)  yes          Hu et al. 2016
``l1``                   sum of |weights| of the filter               no           Li et al. 2017
``random``               uniform in [0, 1), seeded per layer name     no           --
=======================  ===========================================  ===========  ==========

``A`` is a filter's pooled activation (see :class:`~pl_pruning.callbacks.EntropyStatistics`
for the tap point) discretised into ``B`` equal-width bins, ``Y`` the class. Entropies are
in **nats** (natural logarithm), as ``scipy.stats.entropy`` and
``sklearn.metrics.mutual_info_score``. The estimates are plug-in (maximum likelihood) from
the counts, with ``0 log 0 = 0``; a class without samples has ``p(y) = 0`` and adds nothing,
so empty bins, constant activations and empty classes all give finite numbers.
A filter that is always zero puts all its mass in one bin: ``H(A) = H(A | Y) = 0``, the
lowest possible value.

Normalisation for ranking filters of different layers together (``normalize=``):

* ``"none"``: raw scores;
* ``"per-layer"`` (**default**): each layer's scores divided by that layer's mean score
  (Torch-Pruning's ``normalizer="mean"``). Raw scores of different layers live on
  different scales (L1 norms grow with the fan-in, entropies with the spread of a layer),
  so a global ranking on raw scores tends to empty whole layers; dividing by the layer
  mean keeps the order inside each layer and makes "below average for its layer"
  comparable across layers;
* ``"cost-aware"``: the per-layer score divided by the MACs that removing one filter of
  that layer saves (relative to the mean over layers), i.e. score per MAC saved, so the
  global ranking prefers removing filters of expensive layers.

Inside one layer all three give the same order.
"""

from __future__ import annotations

import abc
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pl_pruning.errors import PlPruningError, choice_error

NORMALIZATIONS = ("none", "per-layer", "cost-aware")
DEFAULT_NORMALIZE = "per-layer"
DEFAULT_CRITERION = "conditional_entropy"


# --------------------------------------------------------------------------- the math


def entropy_from_counts(counts: Tensor, dim: int = -1) -> Tensor:
    """Plug-in entropy in nats of the histograms along ``dim``; 0 for an empty histogram."""
    counts = counts.to(torch.float64)
    total = counts.sum(dim, keepdim=True)
    p = counts / total.clamp_min(1.0)
    return -torch.special.xlogy(p, p).sum(dim)


def conditional_entropy_from_counts(counts: Tensor) -> Tensor:
    """H(A | Y) = sum_y p(y) H(A | Y=y) from joint counts ``[..., bins, classes]``."""
    counts = counts.to(torch.float64)
    per_class = counts.sum(-2)  # [..., K]
    p_y = per_class / per_class.sum(-1, keepdim=True).clamp_min(1.0)
    h_given_y = entropy_from_counts(counts, dim=-2)  # [..., K]; 0 for an empty class
    return (p_y * h_given_y).sum(-1)


def mutual_information_from_counts(counts: Tensor) -> Tensor:
    """I(A; Y) = H(A) - H(A | Y) >= 0 from joint counts ``[..., bins, classes]``."""
    h = entropy_from_counts(counts.to(torch.float64).sum(-1), dim=-1)
    return (h - conditional_entropy_from_counts(counts)).clamp_min(0.0)


# --------------------------------------------------------------------------- inputs


@dataclass
class LayerStatistics:
    """What :class:`~pl_pruning.callbacks.EntropyStatistics` gathered for one convolution.

    Attributes:
        counts: ``[filters, bins, classes]`` joint histogram of the binned pooled activation
            and the class.
        activation_sum: ``[filters]`` sum of the pooled activation over the samples.
        zeros: ``[filters]`` number of exactly-zero elements of the tapped feature map.
        elements: ``[filters]`` number of elements of the tapped feature map seen.
        low, high: ``[filters]`` the bin range (see the collector for the rule).
        macs_per_filter: MACs one filter of this layer costs (own convolution plus the
            input channel of the convolutions that consume it), if known.
    """

    counts: Tensor
    activation_sum: Tensor
    zeros: Tensor
    elements: Tensor
    low: Tensor
    high: Tensor
    macs_per_filter: float | None = None

    @property
    def num_filters(self) -> int:
        return int(self.counts.shape[0])

    @property
    def samples(self) -> Tensor:
        return self.counts.to(torch.float64).sum((1, 2))

    @property
    def mean_activation(self) -> Tensor:
        return (self.activation_sum / self.samples.clamp_min(1.0)).to(torch.float32)

    @property
    def zero_fraction(self) -> Tensor:
        """APoZ: the fraction of zeros among the tapped feature map's elements."""
        return (self.zeros.to(torch.float64) / self.elements.to(torch.float64).clamp_min(1.0)).float()


# --------------------------------------------------------------------------- criteria


class Criterion(abc.ABC):
    """One score per output filter of a convolution; higher = keep.

    Call it with an :class:`~pl_pruning.callbacks.EntropyStatistics`, a mapping
    ``{layer name: LayerStatistics}`` or (data-free criteria only) an ``nn.Module``;
    it returns ``{layer name: CPU float tensor [out_channels]}``.
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool]

    @abc.abstractmethod
    def layer_scores(self, name: str, stats: LayerStatistics | None,
                     module: nn.Module | None) -> Tensor:
        """Scores of one layer from its statistics (data criteria) or its module."""

    def __call__(self, source: Any, layers: Iterable[str] | None = None,
                 normalize: str = DEFAULT_NORMALIZE) -> dict[str, Tensor]:
        if hasattr(source, "scores") and hasattr(source, "layer_names"):  # EntropyStatistics
            return source.scores(self, normalize=normalize, layers=layers)
        if isinstance(source, nn.Module):
            if self.needs_data:
                raise PlPruningError(
                    f"criterion {self.name!r} needs activation statistics, got a model; pass an "
                    "EntropyStatistics (after a validation epoch) or use a data-free criterion: "
                    + ", ".join(n for n, c in CRITERIA.items() if not c.needs_data))
            modules = dict(conv_layers(source))
            if not modules:
                raise no_conv_error(source)
            names = _select(layers, modules)
            return compute_scores(self, names, {n: modules[n] for n in names}, None, normalize)
        if isinstance(source, Mapping):
            names = _select(layers, source)
            return compute_scores(self, names, None, {n: source[n] for n in names}, normalize)
        raise PlPruningError(
            f"cannot score {type(source).__name__}; allowed: EntropyStatistics, "
            "a mapping of LayerStatistics, or an nn.Module (data-free criteria)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ConditionalEntropy(Criterion):
    """H(A | Y): how much a filter's activation still varies once the class is known.

    Our reading of 2PFPCE's criterion: filters with the lowest value carry the least
    information and are removed first. A dead filter scores 0, the minimum.
    """

    name = "conditional_entropy"
    needs_data = True

    def layer_scores(self, name, stats, module):
        return conditional_entropy_from_counts(stats.counts).float()


class Entropy(Criterion):
    """H(A), the activation entropy of Luo & Wu (2017)."""

    name = "entropy"
    needs_data = True

    def layer_scores(self, name, stats, module):
        return entropy_from_counts(stats.counts.to(torch.float64).sum(-1)).float()


class MutualInformation(Criterion):
    """I(A; Y): how much a filter's activation tells about the class."""

    name = "mutual_information"
    needs_data = True

    def layer_scores(self, name, stats, module):
        return mutual_information_from_counts(stats.counts).float()


class APoZ(Criterion):
    """1 - APoZ (Hu et al. 2016): the fraction of non-zero elements of the tapped map.

    Meaningful where the tap is after a ReLU; at a BatchNorm or convolution output zeros
    are rare and every filter scores about 1.
    """

    name = "apoz"
    needs_data = True

    def layer_scores(self, name, stats, module):
        return 1.0 - stats.zero_fraction


class L1Norm(Criterion):
    """Sum of absolute kernel weights of each filter (Li et al. 2017); data-free."""

    name = "l1"
    needs_data = False

    def layer_scores(self, name, stats, module):
        if module is None:
            raise PlPruningError(f"criterion 'l1' needs the module of layer {name!r}")
        return module.weight.detach().abs().flatten(1).sum(1).float().cpu()


class RandomScore(Criterion):
    """Uniform scores in [0, 1), reproducible: seeded by ``seed`` and the layer name, so
    every DDP rank draws the same scores."""

    name = "random"
    needs_data = False

    def __init__(self, seed: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise PlPruningError(f"seed must be an integer, got {seed!r}")
        self.seed = seed

    def layer_scores(self, name, stats, module):
        if module is not None:
            n = int(module.weight.shape[0])
        elif stats is not None:
            n = stats.num_filters
        else:
            raise PlPruningError(f"criterion 'random' needs the module of layer {name!r}")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
        return torch.rand(n, generator=gen)

    def __repr__(self) -> str:
        return f"RandomScore(seed={self.seed})"


CRITERIA: dict[str, type[Criterion]] = {
    c.name: c for c in (ConditionalEntropy, Entropy, MutualInformation, APoZ, L1Norm, RandomScore)
}


def get_criterion(name: str | Criterion, **kwargs: Any) -> Criterion:
    """The criterion called ``name`` (a :class:`Criterion` passes through unchanged).

    Raises:
        PlPruningError: an unknown name (the message lists :data:`CRITERIA`) or an option
            the criterion does not take.
    """
    if isinstance(name, Criterion):
        if kwargs:
            raise PlPruningError(f"options {sorted(kwargs)} given with a criterion object {name!r}")
        return name
    if name not in CRITERIA:
        raise choice_error("criterion", name, CRITERIA)
    try:
        return CRITERIA[name](**kwargs)
    except TypeError as err:
        raise PlPruningError(f"criterion {name!r} does not take options {sorted(kwargs)}: {err}") from None


# --------------------------------------------------------------------------- scoring


def check_normalize(normalize: str) -> str:
    if normalize not in NORMALIZATIONS:
        raise choice_error("normalize", normalize, NORMALIZATIONS)
    return normalize


def compute_scores(criterion: Criterion, names: Iterable[str],
                   modules: Mapping[str, nn.Module] | None,
                   statistics: Mapping[str, LayerStatistics] | None,
                   normalize: str = DEFAULT_NORMALIZE) -> dict[str, Tensor]:
    """Scores of ``names`` under ``criterion``, then normalised (see the module docstring)."""
    check_normalize(normalize)
    raw: dict[str, Tensor] = {}
    for name in names:
        stats = statistics.get(name) if statistics is not None else None
        module = modules.get(name) if modules is not None else None
        if criterion.needs_data and stats is None:
            raise PlPruningError(f"criterion {criterion.name!r} needs statistics of layer {name!r}")
        scores = criterion.layer_scores(name, stats, module).detach().float().cpu()
        raw[name] = torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
    if normalize == "none":
        return raw
    out = {name: per_layer_normalize(s) for name, s in raw.items()}
    if normalize == "cost-aware":
        costs = {}
        for name in out:
            stats = statistics.get(name) if statistics is not None else None
            cost = stats.macs_per_filter if stats is not None else None
            if not cost:
                raise PlPruningError(
                    f"normalize='cost-aware' needs the MACs per filter of layer {name!r}, known "
                    "after a validation epoch of EntropyStatistics; use 'none' or 'per-layer'")
            costs[name] = float(cost)
        mean_cost = sum(costs.values()) / len(costs)
        out = {name: s * (mean_cost / costs[name]) for name, s in out.items()}
    return out


def per_layer_normalize(scores: Tensor) -> Tensor:
    """Scores divided by their mean (unchanged when the mean is not positive)."""
    mean = scores.mean() if scores.numel() else torch.tensor(0.0)
    return scores / mean if mean > 0 else scores.clone()


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` of ``model`` with its name (each module once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def no_conv_error(model: nn.Module) -> PlPruningError:
    kinds = sorted({type(m).__name__ for m in model.modules() if m is not model})
    return PlPruningError(
        f"model {type(model).__name__} has no nn.Conv2d (its modules: {', '.join(kinds) or 'none'}); "
        "filter pruning scores the output filters of nn.Conv2d layers, so a model with at "
        "least one nn.Conv2d is required")


def _select(layers: Iterable[str] | None, available: Mapping[str, Any]) -> list[str]:
    if layers is None:
        return list(available)
    names = list(layers)
    for name in names:
        if name not in available:
            raise choice_error("layer", name, available)
    return names


__all__ = [
    "CRITERIA", "DEFAULT_CRITERION", "DEFAULT_NORMALIZE", "NORMALIZATIONS", "APoZ",
    "ConditionalEntropy", "Criterion", "Entropy", "L1Norm", "LayerStatistics",
    "MutualInformation", "RandomScore", "compute_scores", "conditional_entropy_from_counts",
    "entropy_from_counts", "get_criterion", "mutual_information_from_counts",
]
