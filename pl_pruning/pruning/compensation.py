"""Bias compensation: the paper's "bias update" after filters are removed.

A removed filter ``c`` still carried information: on average its activation
(as its consumers see it, after the BatchNorm and ReLU that follow the convolution)
was ``m_c``. Each layer that consumed it computed, for each output ``o``, a term
``sum_k W[o, c, k] * a_c(x + k)``. Removing the channel drops that term; this module
puts its expected value back into a constant of the consumer::

    delta[o] = sum over removed c of  m_c * sum_k W[o, c, k]

and ``delta`` is added to

* the consumer's bias (Conv or Linear; for a Linear after a flatten, channel ``c`` is
  its block of H x W columns, each weighted by ``m_c``);
* else, the ``running_mean`` of the BatchNorm directly after the consumer, lowered by
  ``delta`` (``BN(z - delta)`` with ``running_mean - delta`` equals ``BN(z)`` in eval
  mode; in training mode BatchNorm subtracts the batch mean, which absorbs any constant
  anyway);
* else a bias is created on the consumer (its state dict then gains a ``bias`` key,
  which :func:`pl_pruning.checkpoint.restore_pruned_shapes` recreates on load).

``channel_means`` maps a conv name to ``m`` (one value per filter, in the conv's current
indexing), for instance ``EntropyStatistics.mean_activation()``: the activation after
the BatchNorm and ReLU that follow the convolution, averaged over H x W and samples.

What is exact and what is approximate:

* **Exact** when the removed channel is constant, over samples and positions, as the
  consumer sees it, and the consumer sees every position: for instance a dead filter
  (zero weights, so BatchNorm and ReLU give a constant ``m_c``, zero or not) feeding a
  1x1 convolution, or a Linear after global pooling or after a flatten. The network's
  outputs are then unchanged (tested to 1e-5).
* **Exact in expectation** for non-constant channels, under the same conditions: the
  consumer is linear, so the mean of each of its pre-activations is preserved; what the
  channel contributed beyond its mean (its variation) is lost, which is the pruning
  error fine-tuning has to repair.
* **Approximate at padding borders**: a k x k convolution with zero padding sees fewer
  than k x k real values at the image border; there the true dropped term is smaller
  than ``m_c * sum_k W`` (the interior is still right).
* **Approximate through pooling**: a max-pool between the tap and the consumer raises
  the mean the consumer actually sees above ``m_c`` (exact for constant channels).
* **Not compensated on residual streams**: a channel of a residual stream is the sum of
  several layers' outputs (``relu(bn2(conv2(x)) + shortcut)``), and its consumers see
  that sum. ``EntropyStatistics`` taps each convolution's own contribution (at ``bn2``,
  before the addition), whose mean is not the mean of the sum after the ReLU, so a
  consumer reached through an addition is left alone and listed in
  ``SurgeryResult.uncompensated``. Fine-tuning (and, in training mode, BatchNorm)
  absorbs the shift. Where no addition intervenes (a block's first convolution, the
  depthwise channel of an inverted residual), compensation applies as above.
* Consumers that are grouped (not depthwise) convolutions are not compensated and
  reported in ``SurgeryResult.uncompensated``; depthwise convolutions are not consumers
  (their channel is removed with the filter that feeds it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_pruning import ops

from pl_pruning.errors import PlPruningError
from pl_pruning.structure.groups import PRUNABLE_TYPES, kept_indices, out_size

_WEIGHTED = PRUNABLE_TYPES


@dataclass
class BiasUpdate:
    """``delta`` (one value per original output of ``consumer``) to fold in."""

    consumer: nn.Module
    delta: Tensor
    target: str  # "bias", "running_mean" or "new_bias"
    batchnorm: nn.Module | None = None


def check_channel_means(channel_means: Mapping[str, Tensor], names: Mapping[nn.Module, str]
                        ) -> dict[nn.Module, Tensor]:
    """``{conv module: means as float64}``; names and sizes are checked."""
    modules = {n: m for m, n in names.items()}
    out: dict[nn.Module, Tensor] = {}
    for name, means in channel_means.items():
        module = modules.get(name)
        if module is None or not isinstance(module, _WEIGHTED):
            layers = [n for n, m in modules.items() if isinstance(m, _WEIGHTED)][:6]
            raise PlPruningError(f"channel_means has an entry for {name!r}, which is not a Conv/Linear "
                                 f"layer of the model (layers are named like {layers})")
        means = torch.as_tensor(means).detach().reshape(-1).to("cpu", torch.float64)
        if means.numel() != out_size(module):
            raise PlPruningError(f"channel_means[{name!r}] has {means.numel()} values; the layer has "
                                 f"{out_size(module)} filters (means from before an earlier surgery?)")
        if not torch.isfinite(means).all():
            raise PlPruningError(f"channel_means[{name!r}] holds NaN or infinite values")
        out[module] = means
    return out


def _nearest_producers(node, members: set) -> list[tuple[object, bool]]:
    """The closest nodes upstream of ``node`` whose module is a Conv/Linear in ``members``,
    each with whether the path joins other tensors on the way (a residual addition)."""
    found: list[tuple[object, bool]] = []
    seen = {node}
    frontier = deque([(n, 1, False) for n in node.inputs])
    best = None
    while frontier:
        current, depth, mixed = frontier.popleft()
        if current in seen or (best is not None and depth > best):
            continue
        seen.add(current)
        if isinstance(current.module, _WEIGHTED):
            if current.module in members:
                found.append((current, mixed))
                best = depth
            continue  # another layer's output: the channel does not come from further up
        joins = isinstance(current.module, ops._ElementWiseOp) and len(current.inputs) > 1
        frontier.extend((n, depth + 1, mixed or joins) for n in current.inputs)
    return found


def plan_compensation(graph, groups: list, channel_means: Mapping[str, Tensor],
                      names: Mapping[nn.Module, str], batchnorm_of: Mapping[str, str],
                      result) -> list[BiasUpdate]:
    """Deltas for every consumer of the removed channels, from the unpruned weights.

    ``groups`` are Torch-Pruning groups (with removal indices) of the traced ``graph``;
    ``batchnorm_of`` is :attr:`NetworkGraph.batchnorm_of <pl_pruning.structure.graph.NetworkGraph.batchnorm_of>`
    (the BatchNorm reading a layer's output); consumers that cannot be compensated are
    recorded in ``result.uncompensated``.
    """
    means = check_channel_means(channel_means, names)
    order = {m: i for i, m in enumerate(names)}
    deltas: dict[nn.Module, Tensor] = {}
    for group in groups:
        producers: dict[nn.Module, dict[int, int]] = {}  # module -> root idx -> own idx
        for item in group:
            dep = item.dep
            m = dep.target.module
            if isinstance(m, _WEIGHTED) and graph.is_out_channel_pruning_fn(dep.handler):
                producers[m] = dict(zip(item.root_idxs, item.idxs, strict=True))
        for item in group:
            dep = item.dep
            consumer = dep.target.module
            if not isinstance(consumer, _WEIGHTED) or graph.is_out_channel_pruning_fn(dep.handler):
                continue  # not a consumer whose inputs are cut (depthwise convs go whole)
            if not graph.is_in_channel_pruning_fn(dep.handler):
                continue
            name = names[consumer]
            if isinstance(consumer, nn.modules.conv._ConvNd) and consumer.groups != 1:
                result.uncompensated[name] = f"grouped convolution (groups={consumer.groups})"
                continue
            candidates = _nearest_producers(dep.target, set(producers))
            if not candidates:
                result.uncompensated[name] = "no producing layer found upstream"
                continue
            if any(mixed for _, mixed in candidates):
                result.uncompensated[name] = ("residual stream: the consumer sees a sum of "
                                              "several layers' outputs, not one tapped filter")
                continue
            producer = min((c.module for c, _ in candidates), key=order.__getitem__)
            if producer not in means:
                result.uncompensated[name] = f"no channel_means entry for {names[producer]!r}"
                continue
            to_own = producers[producer]
            try:
                m = torch.stack([means[producer][to_own[r]] for r in item.root_idxs])
            except KeyError:
                result.uncompensated[name] = f"channels not traceable to {names[producer]!r}"
                continue
            cols = torch.tensor(item.idxs, dtype=torch.long)
            w = consumer.weight.detach().to("cpu", torch.float64)
            w = w.index_select(1, cols)
            if w.dim() > 2:
                w = w.flatten(2).sum(2)  # sum over the kernel's positions
            delta = w @ m
            deltas[consumer] = deltas.get(consumer, 0) + delta
    updates = []
    modules = {n: m for m, n in names.items()}
    for consumer, delta in deltas.items():
        name = names[consumer]
        if consumer.bias is not None:
            updates.append(BiasUpdate(consumer, delta, "bias"))
        else:
            only_reader = len(graph.module2node[consumer].outputs) == 1
            follower = modules.get(batchnorm_of.get(name)) if only_reader else None
            if follower is not None and follower.running_mean is not None:
                updates.append(BiasUpdate(consumer, delta, "running_mean", follower))
            else:
                updates.append(BiasUpdate(consumer, delta, "new_bias"))
        result.compensated.append(name)
    return updates


def _kept_rows(delta: Tensor, removed: list[int] | None) -> Tensor:
    keep = kept_indices(delta.numel(), removed)
    return delta if keep is None else delta.index_select(0, keep)


def apply_compensation(updates: list[BiasUpdate], removed: Mapping[str, list[int]],
                       names: Mapping[nn.Module, str]) -> None:
    """Fold the deltas in, after the surgery (a consumer may have lost outputs too).

    Tensors are replaced, never changed in place, so the surgery's snapshot can undo it.
    """
    for up in updates:
        c = up.consumer
        delta = _kept_rows(up.delta, removed.get(names[c]))
        if up.target == "running_mean":
            bn = up.batchnorm
            d = _kept_rows(up.delta, removed.get(names[bn])).to(bn.running_mean)
            bn.running_mean = bn.running_mean - d
        elif up.target == "bias":
            old = c.bias
            new = nn.Parameter(old.detach() + delta.to(old), requires_grad=old.requires_grad)
            if old.grad is not None:
                new.grad = old.grad.clone()
            c.bias = new
        else:
            c.bias = nn.Parameter(delta.to(c.weight))
