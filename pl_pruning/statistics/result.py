"""What the collector hands over: finished, synchronised statistics (CPU tensors)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class LayerStatistics:
    """The statistics of one convolution's filters.

    Attributes:
        counts: ``[filters, bins, classes]`` joint histogram of the binned pooled activation
            and the class.
        activation_sum: ``[filters]`` sum of the pooled activation over the samples.
        zeros: ``[filters]`` number of exactly-zero elements of the tapped feature map.
        elements: ``[filters]`` number of elements of the tapped feature map seen.
        low, high: ``[filters]`` the range the bins span (see the collector for the rule).
    """

    counts: Tensor
    activation_sum: Tensor
    zeros: Tensor
    elements: Tensor
    low: Tensor
    high: Tensor

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


@dataclass
class CollectedStatistics(Mapping[str, LayerStatistics]):
    """One epoch's statistics of every tapped layer, ``{layer: LayerStatistics}`` as a mapping.

    All layers' filters lie side by side in flat tensors (layer ``names[i]`` owns filters
    ``offsets[i]:offsets[i+1]``), as the collector counted them.
    """

    names: list[str]
    channels: list[int]
    offsets: list[int]
    counts: Tensor  # [filters, bins, classes]
    activation_sum: Tensor
    zeros: Tensor
    elements: Tensor
    low: Tensor
    high: Tensor

    def __getitem__(self, name: str) -> LayerStatistics:
        i = self.names.index(name) if name in self.names else None
        if i is None:
            raise KeyError(name)
        sl = slice(self.offsets[i], self.offsets[i + 1])
        return LayerStatistics(counts=self.counts[sl], activation_sum=self.activation_sum[sl],
                               zeros=self.zeros[sl], elements=self.elements[sl],
                               low=self.low[sl], high=self.high[sl])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def fits(self, model: nn.Module) -> bool:
        """True when every layer of ``model`` still has the channel count counted here."""
        for name, n in zip(self.names, self.channels, strict=True):
            try:
                module = model.get_submodule(name)
            except AttributeError:
                return False
            if getattr(module, "out_channels", None) != n:
                return False
        return True

    def to_state(self) -> dict[str, Any]:
        """Plain values for a checkpoint."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CollectedStatistics:
        """The inverse of :meth:`to_state` (extra keys of older checkpoints are ignored)."""
        return cls(**{f.name: state[f.name] for f in fields(cls)})


__all__ = ["CollectedStatistics", "LayerStatistics"]
