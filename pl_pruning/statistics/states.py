"""The collector's state as torchmetrics ``Metric``s, so that DDP synchronisation is declared.

* :class:`ActivationRange`: per-filter min and max of the pooled activation
  (``dist_reduce_fx="min"`` / ``"max"``), which fix the bin edges;
* :class:`FilterHistogram`: the joint histogram filter x bin x class and the activation
  sum (``dist_reduce_fx="sum"``), whose size depends on filters x bins x classes only,
  never on the number of samples;
* :class:`ZeroCount`: exactly-zero and total elements of each filter's feature map
  (``dist_reduce_fx="sum"``), for APoZ.

Each state changes only through its metric's ``update``. All filters of all tapped layers
live side by side in one flat state (layer ``i`` owns filters ``offsets[i]:offsets[i+1]``),
so one batch costs one vectorised binning and one ``scatter_add_`` for the whole network,
and one all-gather per state per epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ActivationRange(Metric):
    """Per-filter minimum and maximum of ``[samples, filters]`` values."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, num_filters: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("low", torch.full((num_filters,), float("inf")), dist_reduce_fx="min")
        self.add_state("high", torch.full((num_filters,), float("-inf")), dist_reduce_fx="max")

    def update(self, values: Tensor, start: int = 0) -> None:
        """Fold ``values [samples, filters]`` into the range of filters ``start:``."""
        if values.numel():
            stop = start + values.shape[1]
            low, high = self.low[start:stop], self.high[start:stop]
            torch.minimum(low, values.amin(0).to(low), out=low)
            torch.maximum(high, values.amax(0).to(high), out=high)

    def compute(self) -> tuple[Tensor, Tensor]:
        return self.low.clone(), self.high.clone()


class FilterHistogram(Metric):
    """Streaming joint histogram of binned per-filter values and a class label.

    Binning (the same formula the tests reproduce with NumPy in float32)::

        width_inv = num_bins / (high - low)      if high > low else 0
        bin       = clamp(trunc((value - low) * width_inv), 0, num_bins - 1)

    so values below ``low`` or above ``high`` land in the first or last bin, and a filter
    whose range is a single point has all its mass in bin 0. The edges are fixed with
    :meth:`set_edges` before the first update (they are the same on every rank).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, num_filters: int, num_bins: int, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_filters, self.num_bins, self.num_classes = num_filters, num_bins, num_classes
        cells = num_filters * num_bins * num_classes
        # int32 counts: scatter_add_ is 3x faster than int64 on CPU; a cell counts samples
        # of one class, far below 2**31.
        self.add_state("counts", torch.zeros(cells, dtype=torch.int32), dist_reduce_fx="sum")
        self.add_state("activation_sum", torch.zeros(num_filters, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.low: Tensor | None = None
        self.width_inv: Tensor | None = None
        # filter f's cells start at f * bins * classes
        self._cell_base = torch.arange(num_filters, dtype=torch.int64) * (num_bins * num_classes)
        self._ones: Tensor | None = None

    def set_edges(self, low: Tensor, high: Tensor) -> None:
        """Fix the bins: ``num_bins`` equal-width bins per filter from ``low`` to ``high``."""
        low = low.to(device=self.counts.device, dtype=torch.float32)
        high = high.to(device=self.counts.device, dtype=torch.float32)
        finite = torch.isfinite(low) & torch.isfinite(high) & (high > low)
        self.low = torch.where(torch.isfinite(low), low, torch.zeros_like(low))
        self.width_inv = torch.where(finite, self.num_bins / (high - low), torch.zeros_like(low))
        self._cell_base = self._cell_base.to(self.counts.device)

    def bin_index(self, values: Tensor, start: int = 0) -> Tensor:
        """Bins of ``values [samples, filters]`` for filters ``start:start+filters``."""
        stop = start + values.shape[1]
        scaled = values.to(torch.float32) - self.low[start:stop]
        scaled.mul_(self.width_inv[start:stop]).clamp_(0, self.num_bins - 1)
        return scaled.to(torch.int64)

    def update(self, values: Tensor, labels: Tensor, start: int = 0) -> None:
        """Count ``values [samples, filters]`` (filters ``start:``) with ``labels [samples]``."""
        if values.numel() == 0:
            return
        stop = start + values.shape[1]
        bins = self.bin_index(values, start)
        cells = self._cell_base[start:stop] + labels.to(torch.int64)[:, None]
        cells.add_(bins, alpha=self.num_classes)
        flat = cells.view(-1)
        if self._ones is None or self._ones.numel() < flat.numel():
            self._ones = torch.ones(flat.numel(), dtype=self.counts.dtype, device=flat.device)
        self.counts.scatter_add_(0, flat, self._ones[:flat.numel()])
        self.activation_sum[start:stop] += values.sum(0, dtype=torch.float64)

    def compute(self) -> dict[str, Tensor]:
        return {
            "counts": self.counts.view(self.num_filters, self.num_bins, self.num_classes).clone(),
            "activation_sum": self.activation_sum.clone(),
        }


class ZeroCount(Metric):
    """Exactly-zero elements of each filter's feature map, and the elements seen."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, num_filters: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("zeros", torch.zeros(num_filters, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("elements", torch.zeros(num_filters, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, nonzero: Tensor, elements: Tensor) -> None:
        """Fold in ``elements [filters]`` elements seen, ``nonzero [filters]`` of them not 0."""
        elements = elements.to(self.elements)
        self.elements += elements
        self.zeros += elements - nonzero.to(self.zeros)

    def compute(self) -> dict[str, Tensor]:
        return {"zeros": self.zeros.clone(), "elements": self.elements.clone()}


__all__ = ["ActivationRange", "FilterHistogram", "ZeroCount"]
