"""Filter-scoring criteria: one small class each, one registry. Higher score = keep.

Every criterion turns what it needs into one score per output filter of a convolution:

==================================  ===========================================  ==========  ==============
name                                score                                        needs data  reference
==================================  ===========================================  ==========  ==============
``conditional_entropy``             H(A | Y) = sum_y p(y) H(A | Y=y)  (default)  yes         2PFPCE, read 1
``normalized_conditional_entropy``  U(A | Y) = 1 - H(A | Y) / H(A)               yes         2PFPCE, read 2
``entropy``                         H(A)                                         yes         Luo & Wu 2017
``mutual_information``              I(A; Y) = H(A) - H(A | Y) = H(Y) - H(Y | A)  yes         2PFPCE, read 3
``apoz``                            1 - APoZ (fraction of non-zero activations)  yes         Hu et al. 2016
``l1``                              sum of |weights| of the filter               no          Li et al. 2017
``random``                          uniform in [0, 1), seeded per layer name     no          --
==================================  ===========================================  ==========  ==============

``A`` is a filter's pooled activation (see :class:`~pl_pruning.callbacks.EntropyStatistics`
for the tap point) discretised into ``B`` equal-width bins, ``Y`` the class; the estimates
are in :mod:`pl_pruning.scoring.information`. A filter that is always zero puts all its
mass in one bin: ``H(A) = H(A | Y) = 0``, the lowest possible value. Scores of several
layers are put on one scale by :mod:`pl_pruning.scoring.normalize`.

The paper's full text is not available to us, so its conditional-entropy criterion is
offered in three readings ("read 1-3" above; why each is plausible is in each class's
docstring and in the project's method notes). They differ on a filter whose activation
the class determines exactly: read 1 scores it 0, as low as a dead filter; reads 2 and 3
score it at their top.

A criterion of your own is a :class:`Criterion` subclass registered by name; from then on
every part that takes a criterion name (the callbacks, the Hydra config) accepts it::

    class Variance(Criterion):
        needs_data = True

        def layer_scores(self, name, stats, module):
            p = stats.counts.sum(-1).double()  # [filters, bins]
            bins = torch.arange(p.shape[1], dtype=torch.float64)
            mean = (p * bins).sum(1) / p.sum(1)
            return ((p * (bins - mean[:, None]) ** 2).sum(1) / p.sum(1)).float()

    register_criterion("variance", Variance)
    PhaseController(criterion="variance")
"""

from __future__ import annotations

import abc
import inspect
import zlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pl_pruning.errors import PlPruningError, choice_error
from pl_pruning.scoring.information import (
    conditional_entropy_from_counts,
    entropy_from_counts,
    mutual_information_from_counts,
    uncertainty_coefficient_from_counts,
)
from pl_pruning.scoring.normalize import DEFAULT_NORMALIZE, check_normalize, normalize_scores
from pl_pruning.statistics.result import LayerStatistics
from pl_pruning.statistics.taps import conv_layers, no_conv_error
from pl_pruning.validate import check_int

DEFAULT_CRITERION = "conditional_entropy"


class Criterion(abc.ABC):
    """One score per output filter of a convolution; higher = keep.

    Call it with an :class:`~pl_pruning.callbacks.EntropyStatistics`, a mapping
    ``{layer name: LayerStatistics}`` or (data-free criteria only) an ``nn.Module``;
    it returns ``{layer name: CPU float tensor [out_channels]}``.

    Attributes:
        name: the registry name (set by :func:`register_criterion` when a class leaves it out).
        needs_data: True when the scores come from activation statistics (the default),
            False when ``layer_scores`` needs only the module.
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool] = True

    @abc.abstractmethod
    def layer_scores(self, name: str, stats: LayerStatistics | None,
                     module: nn.Module | None) -> Tensor:
        """Scores of one layer from its statistics (data criteria) or its module."""

    def __call__(self, source: Any, layers: Iterable[str] | None = None,
                 normalize: str = DEFAULT_NORMALIZE,
                 macs_per_filter: Mapping[str, float] | None = None) -> dict[str, Tensor]:
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
            return compute_scores(self, names, {n: modules[n] for n in names}, None, normalize,
                                  macs_per_filter)
        if isinstance(source, Mapping):
            names = _select(layers, source)
            return compute_scores(self, names, None, {n: source[n] for n in names}, normalize,
                                  macs_per_filter)
        raise PlPruningError(
            f"cannot score {type(source).__name__}; allowed: EntropyStatistics, "
            "a mapping of LayerStatistics, or an nn.Module (data-free criteria)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ConditionalEntropy(Criterion):
    """H(A | Y): how much a filter's activation still varies once the class is known.

    Reading 1 of 2PFPCE's criterion (the default): the filters with the smallest H(A | Y)
    are removed first. Plausible as a *redundancy* score: the information a filter adds
    beyond what the rest of its layer carries is H(A_f | A_rest), which equals H(A_f | Y)
    when the rest of the layer determines the class and the filters are independent given
    the class. Its blind spot: a dead filter (H(A) = 0) and a filter whose activation the
    class determines exactly (H(A) = I(A; Y) > 0) both score 0, the minimum, and go first
    together; see :class:`NormalizedConditionalEntropy` for a reading that keeps them apart.
    """

    name = "conditional_entropy"

    def layer_scores(self, name, stats, module):
        return conditional_entropy_from_counts(stats.counts).float()


class NormalizedConditionalEntropy(Criterion):
    """U(A | Y) = 1 - H(A | Y) / H(A) = I(A; Y) / H(A) in [0, 1]: the share of a filter's
    activation entropy that the class explains (Theil's uncertainty coefficient).

    Reading 2 of 2PFPCE's criterion: the conditional entropy normalised by the marginal
    entropy, H(A | Y) / H(A), is the share of the activation's variation that the class
    does *not* explain; the filters with the **largest** normalised conditional entropy are
    removed first, which is the score ``1 - H(A | Y) / H(A)`` with the smallest removed
    first. Plausible as a *relevance* score that does not confuse "the class determines
    the activation" (score 1, kept longest) with "the activation is constant" (a dead
    filter: H(A) = 0, score 0, removed first); a filter whose activation varies
    independently of the class also scores 0. Being a ratio it ignores how much a filter
    varies: a filter with a little entropy, all of it explained by the class, ranks with
    a widely varying one that the class explains as well.
    """

    name = "normalized_conditional_entropy"

    def layer_scores(self, name, stats, module):
        return uncertainty_coefficient_from_counts(stats.counts).float()


class Entropy(Criterion):
    """H(A), the activation entropy of Luo & Wu (2017)."""

    name = "entropy"

    def layer_scores(self, name, stats, module):
        return entropy_from_counts(stats.counts.to(torch.float64).sum(-1)).float()


class MutualInformation(Criterion):
    """I(A; Y): how much a filter's activation tells about the class.

    Also reading 3 of 2PFPCE's criterion, the conditional entropy the other way round:
    I(A; Y) = H(Y) - H(Y | A), and H(Y) is the same for every filter (every filter sees
    the same samples), so removing the filters with the **largest** H(Y | A) (the class
    stays most uncertain given the filter) removes them in the order of the smallest
    I(A; Y). Removing the smallest H(Y | A) first would remove the most class-informative
    filters first, and is not offered.
    """

    name = "mutual_information"

    def layer_scores(self, name, stats, module):
        return mutual_information_from_counts(stats.counts).float()


class APoZ(Criterion):
    """1 - APoZ (Hu et al. 2016): the fraction of non-zero elements of the tapped map.

    Meaningful where the tap is after a ReLU; at a BatchNorm or convolution output zeros
    are rare and every filter scores about 1.
    """

    name = "apoz"

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
        self.seed = check_int("seed", seed)

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


# ------------------------------------------------------------------ the registry

_REGISTRY: dict[str, type[Criterion]] = {}
#: the registered criteria, ``{name: class}`` (read-only; add with :func:`register_criterion`)
CRITERIA: Mapping[str, type[Criterion]] = MappingProxyType(_REGISTRY)


def register_criterion(name: str, cls: type[Criterion], *, replace: bool = False) -> type[Criterion]:
    """Make ``cls`` available as criterion ``name`` everywhere a criterion name is taken.

    Args:
        name: the name users type (e.g. in ``PhaseController(criterion=...)``).
        cls: a concrete :class:`Criterion` subclass; its ``name`` is set to ``name`` when
            the class does not set one itself.
        replace: allow replacing another class registered under ``name``.

    Returns:
        ``cls``.

    Raises:
        PlPruningError: ``name`` is not a non-empty string, ``cls`` is not a concrete
            Criterion subclass, its own ``name`` differs, or ``name`` is taken (and not
            ``replace``).
    """
    if not isinstance(name, str) or not name:
        raise PlPruningError(f"a criterion name must be a non-empty string, got {name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, Criterion)) or inspect.isabstract(cls):
        raise PlPruningError(
            f"criterion {name!r} must be a Criterion subclass that defines layer_scores, got {cls!r}")
    own = cls.__dict__.get("name")
    if own is not None and own != name:
        raise PlPruningError(f"class {cls.__name__} names itself {own!r}; register it as {own!r}")
    taken = _REGISTRY.get(name)
    if taken is not None and taken is not cls and not replace:
        raise PlPruningError(f"criterion {name!r} is already registered ({taken.__name__}); "
                             "pass replace=True to replace it")
    cls.name = name
    _REGISTRY[name] = cls
    return cls


for _cls in (ConditionalEntropy, Entropy, MutualInformation, APoZ, L1Norm, RandomScore,
             NormalizedConditionalEntropy):
    register_criterion(_cls.name, _cls)


def get_criterion(name: str | Criterion, **kwargs: Any) -> Criterion:
    """The criterion registered as ``name`` (a :class:`Criterion` passes through unchanged).

    Raises:
        PlPruningError: an unknown name (the message lists :data:`CRITERIA`) or an option
            the criterion does not take.
    """
    if isinstance(name, Criterion):
        if kwargs:
            raise PlPruningError(f"options {sorted(kwargs)} given with a criterion object {name!r}")
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise choice_error("criterion", name, _REGISTRY)
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as err:
        raise PlPruningError(f"criterion {name!r} does not take options {sorted(kwargs)}: {err}") from None


# ------------------------------------------------------------------ scoring layers


def compute_scores(criterion: Criterion, names: Iterable[str],
                   modules: Mapping[str, nn.Module] | None,
                   statistics: Mapping[str, LayerStatistics] | None,
                   normalize: str = DEFAULT_NORMALIZE,
                   macs_per_filter: Mapping[str, float] | None = None) -> dict[str, Tensor]:
    """Scores of ``names`` under ``criterion`` (NaN and infinities read as 0), then
    :func:`~pl_pruning.scoring.normalize.normalize_scores`.

    Raises:
        PlPruningError: a data criterion without statistics for a layer; see also
            :func:`~pl_pruning.scoring.normalize.normalize_scores`.
    """
    check_normalize(normalize)
    raw: dict[str, Tensor] = {}
    for name in names:
        stats = statistics.get(name) if statistics is not None else None
        module = modules.get(name) if modules is not None else None
        if criterion.needs_data and stats is None:
            raise PlPruningError(f"criterion {criterion.name!r} needs statistics of layer {name!r}")
        scores = criterion.layer_scores(name, stats, module).detach().float().cpu()
        raw[name] = torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
    return normalize_scores(raw, normalize, macs_per_filter)


def _select(layers: Iterable[str] | None, available: Mapping[str, Any]) -> list[str]:
    if layers is None:
        return list(available)
    names = list(layers)
    for name in names:
        if name not in available:
            raise choice_error("layer", name, available)
    return names


__all__ = [
    "CRITERIA", "DEFAULT_CRITERION", "APoZ", "ConditionalEntropy", "Criterion", "Entropy",
    "L1Norm", "MutualInformation", "NormalizedConditionalEntropy", "RandomScore", "compute_scores",
    "get_criterion", "register_criterion",
]
