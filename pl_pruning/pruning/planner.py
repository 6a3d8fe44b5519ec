"""Which filters to remove next: group scores, the global and layer-wise plans, and the
Phase II layer orders.

A plan is ``{group root: [filter indices]}`` for :func:`~pl_pruning.pruning.surgery.prune_filters`.
Filters are ranked per coupled group (:class:`~pl_pruning.structure.graph.PruningGroup`):
filter ``i`` of a group is scored by the mean of the scores of filter ``i`` of the group's
convolutions (:func:`score_groups`); a filter never scored (NaN) is ranked last.

Phase II visits the groups one at a time in a *layer order*, a small function registered
by name (:data:`LAYER_ORDERS`, :func:`register_layer_order`)::

    def widest_first(scored, graph):
        return sorted(scored, key=lambda gs: -gs[0].channels)

    register_layer_order("widest_first", widest_first)
    PhaseController(layer_order="widest_first")

A layer order gets ``scored`` (``[(PruningGroup, Tensor of group filter scores)]`` in module
order) and the :class:`~pl_pruning.structure.graph.NetworkGraph` of the network, and returns
the groups (or their root names) in the order to visit; groups it leaves out are not pruned
in Phase II.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pl_pruning.errors import PlPruningError
from pl_pruning.pruning.surgery import allowed_width, narrower_width, rounded_removal
from pl_pruning.scoring import compute_scores, get_criterion, normalize_scores
from pl_pruning.statistics.result import CollectedStatistics
from pl_pruning.structure.graph import NetworkGraph, PruningGroup

__all__ = [
    "LAYER_ORDERS", "FilterScores", "Scored", "global_plan", "layer_plan", "order_layers",
    "register_layer_order", "rounded", "score_groups",
]

Scored = list[tuple[PruningGroup, Tensor]]
LayerOrder = Callable[[Scored, NetworkGraph], Sequence["PruningGroup | tuple | str"]]
MEAN_KEY = "__mean_activation__"  # FilterScores key of the mean activations (compensation)


# --------------------------------------------------------------------------- scores


@dataclass
class FilterScores:
    """The latest score of every filter that ever existed, by its ORIGINAL index.

    After a rollback the network is an earlier one whose statistics were collected
    before; keeping every filter's latest score means planning (and the freeze) always
    has a score for each surviving filter without another validation pass.

    Attributes:
        ids: layer -> original indices of its current filters.
        cache: criterion (or :data:`MEAN_KEY`) -> layer -> scores by original index (NaN
            where never scored).
    """

    ids: dict[str, Tensor] = field(default_factory=dict)
    cache: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def start(self, channels: Mapping[str, int]) -> None:
        """Number the filters of an unpruned network (once, at the first validation)."""
        if not self.ids:
            self.ids = {name: torch.arange(c) for name, c in channels.items()}

    def update(self, fresh: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Remember ``{criterion: {layer: scores of the current filters}}``."""
        for key, scores in fresh.items():
            cache = self.cache.setdefault(key, {})
            for layer, values in scores.items():
                ids = self.ids.get(layer)
                if ids is None or values.numel() != ids.numel():
                    continue
                if layer not in cache:
                    cache[layer] = torch.full((int(ids.max()) + 1 if ids.numel() else 0,), float("nan"))
                cache[layer][ids] = values.detach().float().cpu()

    def current(self, key: str) -> dict[str, Tensor]:
        """Latest known scores of the current filters, by layer (NaN if never scored)."""
        cache = self.cache.get(key, {})
        return {layer: cache[layer][ids] for layer, ids in self.ids.items() if layer in cache}

    def copy(self) -> FilterScores:
        """A deep copy (what an accepted network keeps, so a rollback restores its own scores)."""
        return FilterScores(ids={k: v.clone() for k, v in self.ids.items()},
                            cache={key: {k: v.clone() for k, v in layers.items()} for key, layers in self.cache.items()})

    def remove(self, removed: Mapping[str, Sequence[int]]) -> None:
        """Forget the filters a surgery removed (indices in each layer's current numbering)."""
        for name, gone in removed.items():
            if name in self.ids:
                keep = torch.ones(len(self.ids[name]), dtype=torch.bool)
                keep[torch.as_tensor(list(gone), dtype=torch.long)] = False
                self.ids[name] = self.ids[name][keep]


def fresh_scores(criteria: Iterable[str], statistics: CollectedStatistics | None,
                 model: nn.Module) -> dict[str, dict[str, Tensor]]:
    """Raw scores of the current filters under each criterion, plus the mean activations
    (:data:`MEAN_KEY`), for :meth:`FilterScores.update`. Data criteria and the means need
    ``statistics`` collected on ``model`` as it is now (statistics of other channel counts
    are left unused); data-free ones the model."""
    fresh: dict[str, dict[str, Tensor]] = {}
    ready = statistics is not None and statistics.fits(model)
    for name in criteria:
        criterion = get_criterion(name)
        if not criterion.needs_data:
            fresh[criterion.name] = criterion(model, normalize="none")
        elif ready:
            modules = {layer: model.get_submodule(layer) for layer in statistics}
            fresh[criterion.name] = compute_scores(criterion, list(statistics), modules, statistics, "none")
    if ready:
        fresh[MEAN_KEY] = {layer: s.mean_activation for layer, s in statistics.items()}
    return fresh


def score_groups(groups: Sequence[PruningGroup], scores: Mapping[str, Tensor]) -> Scored:
    """THE group score: filter ``i`` of a group gets the mean of the scores of filter ``i``
    of its convolutions (those scored at the group's size); NaN becomes ``+inf``, so a
    filter never scored is removed last. Groups without any scored conv are left out."""
    out: Scored = []
    for group in groups:
        member = [scores[c] for c in group.convs if c in scores and scores[c].numel() == group.channels]
        if member:
            out.append((group, torch.nan_to_num(torch.stack(member).mean(0), nan=float("inf"))))
    return out


def group_costs(scored: Scored, graph: NetworkGraph, per_filter: Mapping[str, float] | None = None) -> list[float]:
    """What one filter of each group costs: the sum over its convs of ``graph.macs_per_filter``
    (MACs), or of ``per_filter`` when given (such as milliseconds on a runtime,
    :meth:`~pl_pruning.pruning.latency.LatencyTable.per_filter`)."""
    cost = graph.macs_per_filter if per_filter is None else per_filter
    return [sum(cost.get(c, 0.0) for c in g.convs) or 1.0 for g, _ in scored]


def normalised(scored: Scored, normalize: str, graph: NetworkGraph,
               latency_per_filter: Mapping[str, float] | None = None) -> list[Tensor]:
    """Group scores on one scale for a global ranking (:func:`~pl_pruning.scoring.normalize_scores`,
    the cost of a group's filter being :func:`group_costs`: MACs for ``"cost-aware"``,
    ``latency_per_filter`` for ``"latency-aware"``)."""
    scores = {g.root: s for g, s in scored}
    costs = latency = None
    if normalize == "cost-aware":
        costs = dict(zip(scores, group_costs(scored, graph), strict=True))
    elif normalize == "latency-aware" and latency_per_filter is not None:
        latency = dict(zip(scores, group_costs(scored, graph, latency_per_filter), strict=True))
    out = normalize_scores(scores, normalize, costs, latency)
    return [out[g.root] for g, _ in scored]


# --------------------------------------------------------------------------- plans


def global_plan(scored: Scored, step: float, graph: NetworkGraph, *, normalize: str = "per-layer",
                min_channels: int = 1, macs: float | None = None, latency_ms: float | None = None,
                latency_per_filter: Mapping[str, float] | None = None,
                round_to: int | None = None) -> dict[str, list[int]]:
    """Phase I: the lowest-ranked filters of all groups, ranked together.

    How many: with ``macs``, the fewest filters whose removal saves at least ``macs`` MACs
    per sample (a filter of a group saves :func:`group_costs`); with ``latency_ms``, the
    fewest that save that many milliseconds, a filter of a layer saving
    ``latency_per_filter`` (needed then, and by ``normalize="latency-aware"``); without
    either, the ``step`` share of all group filters. Every group keeps at least
    ``min_channels``; ties go to the earlier group and filter.

    With ``round_to`` the ranked units are blocks of filters that keep every group's width
    one it allows, a multiple of it or at most it (a group's lowest ``channels % round_to``
    first, then ``round_to`` at a time, then one filter at a time at or below ``round_to``,
    never below ``min_channels``), each ranked by the mean of its filters' scores: a ranking
    of single filters would pick a few from many groups (or, ranked per millisecond, only
    from the narrow early ones), which rounding to whole multiples then cuts to nothing.
    """
    if latency_ms is not None and latency_per_filter is None:
        raise PlPruningError("global_plan(latency_ms=...) needs latency_per_filter (ms per filter by layer)")
    budget = macs if latency_ms is None else latency_ms
    total = sum(g.channels for g, _ in scored)
    k = total if budget is not None else int(step * total)
    if not scored or k < 1 or (budget is not None and budget <= 0):
        return {}
    ranked = normalised(scored, normalize, graph, latency_per_filter)
    if round_to is not None and round_to > 1:
        candidates = sorted(block for (group, _), s in zip(scored, ranked, strict=True)
                            for block in _blocks(group.root, s, round_to, min_channels))
        limit = {g.root: g.channels for g, _ in scored}  # the blocks respect min_channels already
    else:
        candidates = sorted((v, group.root, [i]) for (group, _), s in zip(scored, ranked, strict=True)
                            for i, v in enumerate(s.tolist()))
        limit = {g.root: g.channels - min_channels for g, _ in scored}
    unit = None if latency_ms is None else latency_per_filter
    cost = dict(zip((g.root for g, _ in scored), group_costs(scored, graph, unit), strict=True))
    plan: dict[str, list[int]] = {}
    saved = 0.0
    for _, root, idxs in candidates:
        if k <= 0 or (budget is not None and saved >= budget):
            break
        if limit[root] >= len(idxs):
            plan.setdefault(root, []).extend(idxs)
            limit[root] -= len(idxs)
            k -= len(idxs)
            saved += cost[root] * len(idxs)
    return plan


def _blocks(root: str, scores: Tensor, round_to: int, min_channels: int) -> list[tuple[float, str, list[int]]]:
    """A group's removable blocks for a rounded global plan, lowest-scored filters first:
    ``(mean score, root, filter indices)``; each leaves a width ``round_to`` allows (the
    first takes the remainder above a multiple, then a multiple at a time, one filter at a
    time at or below ``round_to``: :func:`~pl_pruning.pruning.surgery.allowed_width`), none
    below ``min_channels``. A block's mean is never below its predecessor's, so the ranking
    takes a group's blocks in order."""
    order = torch.argsort(scores, stable=True).tolist()
    width, start, out = len(order), 0, []
    while True:
        nxt = narrower_width(width, round_to)
        if nxt < min_channels:
            return out
        idxs = order[start:start + width - nxt]
        out.append((float(scores[idxs].mean()), root, idxs))
        start, width = start + len(idxs), nxt


def layer_plan(scored: Scored, layer: str, step: float, *, min_channels: int = 1,
               max_filters: int | None = None, round_to: int | None = None) -> dict[str, list[int]]:
    """Phase II: the lowest ``step`` share of one group's filters (``layer`` is its root),
    at most ``max_filters``.

    With ``round_to`` the width left above it is the multiple of it nearest to what the step
    asks (half a multiple rounds to the narrower width; at or below ``round_to`` any width),
    never below ``min_channels``: a quarter of a 32-wide group at ``round_to=16`` removes 16,
    where rounded down it would remove nothing and the group would leave the queue uncut.
    ``max_filters`` then caps it at whole multiples, or at one multiple's worth when fewer
    are allowed (the step that reaches a target may pass it by less than one multiple)."""
    for group, s in scored:
        if group.root == layer:
            c = group.channels
            if round_to is not None and round_to > 1:
                k = _aligned_removal(c, step * c, round_to, min_channels, max_filters)
            else:
                k = min(int(step * c), c - min_channels)
                if max_filters is not None:
                    k = min(k, max_filters)
            return {layer: torch.argsort(s, stable=True)[:k].tolist()} if k >= 1 else {}
    return {}


def _aligned_removal(channels: int, wanted: float, round_to: int, min_channels: int,
                     cap: int | None) -> int:
    """Filters to remove from ``channels`` so that a width ``round_to`` allows is left
    (:func:`~pl_pruning.pruning.surgery.allowed_width`): above ``round_to`` the multiple
    nearest ``channels - wanted`` (ties to the narrower), at or below it ``int(wanted)``
    filters as without rounding; at least ``min_channels``, capped by ``cap`` (see
    :func:`layer_plan`)."""
    left = channels - wanted
    width = math.ceil(left / round_to - 0.5) * round_to if left > round_to else channels - int(wanted)
    width = allowed_width(max(width, min_channels), round_to)
    k = max(0, channels - width)
    if cap is not None and k > cap:
        within = channels - allowed_width(channels - cap, round_to)  # the most a width it allows keeps within the cap
        nxt = narrower_width(channels, round_to)  # else one block's worth, where min_channels allows it
        k = min(k, within if within > 0 else (channels - nxt if nxt >= min_channels else 0))
    return k


def rounded(plan: Mapping[str, list[int]], scored: Scored, round_to: int | None) -> dict[str, list[int]]:
    """``plan`` with as many removals per group as leave a width ``round_to`` allows
    (what :func:`~pl_pruning.pruning.surgery.prune_filters` would remove, rounded down);
    groups where that is none are dropped, so an empty result means there is nothing to cut.
    A plan made with ``round_to`` (:func:`global_plan`, :func:`layer_plan`) is aligned
    already and comes back as it is."""
    if round_to is None or round_to <= 1:
        return {root: list(idxs) for root, idxs in plan.items() if idxs}
    sizes = {g.root: g.channels for g, _ in scored}
    out = {}
    for root, idxs in plan.items():
        keep = rounded_removal(sizes[root], len(idxs), round_to)
        if keep:
            out[root] = list(idxs[:keep])
    return out


# --------------------------------------------------------------------------- layer orders


def by_score(scored: Scored, graph: NetworkGraph) -> Scored:
    """Groups whose filters score lowest on average first."""
    return sorted(scored, key=lambda gs: float(gs[1][torch.isfinite(gs[1])].mean()))


def by_macs(scored: Scored, graph: NetworkGraph) -> Scored:
    """Groups that cost the most MACs first (channels x MACs per filter): under a tight
    epoch budget the steps go where they save the most."""
    costs = group_costs(scored, graph)
    order = sorted(range(len(scored)), key=lambda i: -scored[i][0].channels * costs[i])
    return [scored[i] for i in order]


def front_to_back(scored: Scored, graph: NetworkGraph) -> Scored:
    """Module order."""
    return list(scored)


def back_to_front(scored: Scored, graph: NetworkGraph) -> Scored:
    """Reverse module order."""
    return list(scored)[::-1]


LAYER_ORDERS: dict[str, LayerOrder] = {
    "by_score": by_score, "by_macs": by_macs, "front_to_back": front_to_back, "back_to_front": back_to_front,
}
_BUILT_IN = frozenset(LAYER_ORDERS)


def register_layer_order(name: str, fn: LayerOrder) -> LayerOrder:
    """Make ``fn`` a Phase II layer order called ``name`` (usable as ``layer_order=name``).

    Raises:
        PlPruningError: a name that is not a non-empty string or is a built-in order, or an
            ``fn`` that is not callable.
    """
    if not isinstance(name, str) or not name:
        raise PlPruningError(f"a layer order's name must be a non-empty string, got {name!r}")
    if name in _BUILT_IN:
        raise PlPruningError(f"{name!r} is a built-in layer order; register yours under another name")
    if not callable(fn):
        raise PlPruningError(f"layer order {name!r} must be callable (scored, graph) -> order, got {fn!r}")
    LAYER_ORDERS[name] = fn
    return fn


def order_layers(name: str, scored: Scored, graph: NetworkGraph) -> list[str]:
    """The group roots Phase II visits, in the order of the layer order ``name``.

    Raises:
        PlPruningError: the order returned something that is not one of ``scored``'s groups.
    """
    roots = {g.root for g, _ in scored}
    out: list[str] = []
    for item in LAYER_ORDERS[name](scored, graph):
        root = item if isinstance(item, str) else item.root if isinstance(item, PruningGroup) else item[0].root
        if root not in roots:
            raise PlPruningError(f"layer order {name!r} returned {root!r}, which is not one of the "
                                 f"prunable groups {sorted(roots)}")
        if root not in out:
            out.append(root)
    return out
