"""What a pruning run can do to a network, known before its first epoch.

:func:`preflight` reads the traced network (:class:`~pl_pruning.structure.graph.NetworkGraph`):
every coupled group, how many filters it can lose under ``min_channels`` and ``round_to``
(or why it may not be cut: a grouped convolution, the final classifier, an ignored layer),
the most MACs all of them together could save, and so whether the run can prune at all
and whether ``target_macs`` is within reach. A fit that can prune nothing would otherwise
end with 1.00x and no word of why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pl_pruning.measure import count_macs
from pl_pruning.pruning.pruner import private_copy
from pl_pruning.pruning.surgery import prune_filters, rounded_removal
from pl_pruning.structure.graph import NetworkGraph

__all__ = ["Preflight", "preflight"]


@dataclass
class Preflight:
    """The network's prunable groups and what stops the run, if anything.

    Attributes:
        groups: per coupled group ``{"root", "channels", "can_lose", "blocked"}``
            (``blocked``: why it may not be cut, else ``None``).
        macs: MACs per sample of the network as given.
        least_macs: MACs per sample of the network with every group cut to its minimum
            (counted on a copy cut so, when a target needs it).
        reason: why the run cannot prune or cannot reach its target; ``None`` when it can.
    """

    groups: list[dict[str, Any]] = field(default_factory=list)
    macs: float = 0.0
    least_macs: float | None = None
    reason: str | None = None

    @property
    def can_prune(self) -> bool:
        return self.reason is None

    def summary(self) -> dict[str, Any]:
        prunable = [g for g in self.groups if g["can_lose"]]
        return {"can_prune": self.can_prune, "reason": self.reason, "groups": len(self.groups),
                "prunable_groups": len(prunable), "filters_removable": sum(g["can_lose"] for g in prunable),
                "filters": sum(g["channels"] for g in self.groups)}


def preflight(graph: NetworkGraph, *, min_channels: int = 1, round_to: int | None = None,
              target_macs: float | None = None) -> Preflight:
    """What a run with these settings can cut from the network ``graph`` describes.

    Args:
        graph: the traced network (with the run's ``ignored_layers``).
        min_channels, round_to: the surgery's settings.
        target_macs: MACs per sample to reach (:func:`~pl_pruning.pruning.schedule.target_in_macs`),
            or ``None``.
    """
    out = Preflight(macs=float(graph.macs))
    most_saved = 0.0  # an upper bound: cutting a layer and its consumer saves their shared columns once
    for g in graph.layout.groups:
        can_lose = 0
        if g.fixed is None:
            can_lose = rounded_removal(g.info.channels, max(0, g.info.channels - min_channels), round_to)
        out.groups.append({"root": g.info.root, "channels": g.info.channels, "can_lose": can_lose,
                           "blocked": g.fixed})
        cost = sum(graph.macs_per_filter.get(c, 0.0) for c in g.info.convs)
        most_saved += can_lose * cost
    open_groups = [g for g in out.groups if g["blocked"] is None]
    if not any(g["can_lose"] for g in out.groups):
        if open_groups:
            widest = max(open_groups, key=lambda g: g["channels"])
            rounding = f" with round_to={round_to}" if round_to and round_to > 1 else ""
            out.reason = (f"min_channels={min_channels}{rounding} leaves no filter to remove: the widest "
                          f"prunable layer, {widest['root']!r}, has {widest['channels']}")
        else:
            blocked = [g for g in out.groups if g["blocked"] and "network's output" not in g["blocked"]]
            first = blocked[0] if blocked else (out.groups[0] if out.groups else None)
            out.reason = ("no layer can be pruned" + (f": {first['root']!r} may not be cut because "
                                                      f"{first['blocked']}" if first else
                                                      ": the network has no convolution or linear layer")
                          + (f" (and {len(blocked) - 1} more groups)" if len(blocked) > 1 else ""))
    elif target_macs is not None and _least_macs(graph, out, most_saved, target_macs) > target_macs:
        out.reason = (f"target_macs={target_macs:.4g} MACs per sample is out of reach: with min_channels="
                      f"{min_channels}{f' and round_to={round_to}' if round_to else ''} at most "
                      f"{out.macs - out.least_macs:.4g} of the network's {out.macs:.4g} MACs can be removed "
                      f"(to {out.least_macs:.4g}, {out.macs / out.least_macs:.2f}x fewer)")
    return out


def _least_macs(graph: NetworkGraph, out: Preflight, most_saved: float, target: float) -> float:
    """The MACs left with every group cut to its minimum: from the upper bound of the
    savings when that already misses the target, else counted on a cut copy."""
    if out.macs - most_saved > target:
        out.least_macs = out.macs - most_saved
        return out.least_macs
    twin = private_copy(graph.model)
    plan = {g["root"]: list(range(g["can_lose"])) for g in out.groups if g["can_lose"]}
    try:
        prune_filters(twin, plan, graph.inputs, compensate=False)
        out.least_macs = float(count_macs(twin, graph.inputs))
    finally:
        NetworkGraph.forget(twin)
    return out.least_macs
