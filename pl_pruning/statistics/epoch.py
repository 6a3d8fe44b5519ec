"""One collection's buffers and the per-batch kernel of :mod:`pl_pruning.statistics.collector`.

A batch's activations arrive from forward hooks as per-layer float32 sums over H x W and
per-sample non-zero counts; :meth:`Epoch.take_batch` turns them, once per batch for all
layers together, into pooled values side by side (one division, one concatenation) and
folds the zero counts into the epoch totals, so that the torchmetrics states see one
update per batch for the whole network.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from pl_pruning.errors import PlPruningError
from pl_pruning.statistics.states import ActivationRange, FilterHistogram, ZeroCount

# zero counting goes through a scratch buffer of at most this many elements (16 MiB of
# float32), reused for every layer and batch: no large temporaries
SCRATCH_ELEMENTS = 1 << 22
# Epoch.take_batch's key for every layer's pooled values side by side (not a module name)
FUSED = "\0all layers"


def check_labels(labels: Tensor, num_classes: int) -> None:
    """Bad input: a label outside ``0..num_classes-1``."""
    if labels.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(labels))
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise PlPruningError(
            f"class label {bad} is outside the allowed range 0..{num_classes - 1} "
            f"(num_classes={num_classes})")


def segments(ep: Epoch, values: dict[str, Tensor], labels: Tensor) -> list[tuple[int, Tensor, Tensor]]:
    """(first filter, values [M, filters], labels [M]) pieces: one piece for the whole
    network when every layer saw the same samples (the common case), else one per layer."""
    def repeat(m: int, name: str) -> Tensor:
        if m == labels.shape[0]:
            return labels
        if labels.shape[0] == 0 or m % labels.shape[0]:
            raise PlPruningError(
                f"layer {name!r} saw {m} samples in a batch with {labels.shape[0]} labels")
        return labels.repeat(m // labels.shape[0])
    if FUSED in values:  # fused by take_batch: every layer saw the same samples
        fused = values[FUSED]
        return [(0, fused, repeat(fused.shape[0], ep.names[0]))]
    return [(ep.offsets[i], values[name], repeat(values[name].shape[0], name))
            for i, name in enumerate(ep.names)]


class Epoch:
    """Everything one collection needs; dropped at its end."""

    def __init__(self, names: list[str], channels: list[int], device: torch.device,
                 num_classes: int | None) -> None:
        self.names, self.channels, self.device = names, channels, device
        self.num_classes = int(num_classes) if num_classes is not None else None
        self.offsets = [0]
        for c in channels:
            self.offsets.append(self.offsets[-1] + c)
        total = self.offsets[-1]
        self.handles: list[RemovableHandle] = []
        self.recording = self.calibrated = False
        self.batches_seen = 0
        self.pooled: dict[str, list[tuple[Tensor, int]]] = {}
        self.nonzero: dict[str, list[Tensor]] = {}
        self.outputs: list[Tensor] = []
        self.labels: Tensor | None = None
        self.buffer: list[tuple[int, Tensor, Tensor]] = []  # calibration batches held back
        self.class_counts: Tensor | None = None  # samples per class in them (all ranks)
        self.nonzero_acc = torch.zeros(total, dtype=torch.float64, device=device)
        self.elements = dict.fromkeys(names, 0)  # elements of the tapped map per filter
        self.range = ActivationRange(total).to(device)
        self.zero_count = ZeroCount(total).to(device)
        self.histogram: FilterHistogram | None = None
        self.low: Tensor | None = None
        self.high: Tensor | None = None
        self._scratch: Tensor | None = None
        self._areas: tuple[tuple[int, ...], Tensor] | None = None

    def allocate(self, num_classes: int, num_bins: int) -> None:
        self.num_classes = num_classes
        self.histogram = FilterHistogram(self.offsets[-1], num_bins, num_classes).to(self.device)

    def take_batch(self) -> dict[str, Tensor]:
        """This batch's pooled activations per layer ``[M, filters]``; folds the zero
        counts into the epoch totals."""
        sums, areas, nonzero = {}, [], []
        for name in self.names:
            calls = self.pooled[name]
            area = calls[0][1]
            if all(a == area for _, a in calls):
                sums[name] = calls[0][0] if len(calls) == 1 else torch.cat([v for v, _ in calls])
            else:  # calls with different spatial sizes: divide each by its own area
                sums[name], area = torch.cat([v / a for v, a in calls]), 1
            areas.append(area)
            self.elements[name] += sum(v.shape[0] * a for v, a in calls)
            parts = self.nonzero[name]
            nonzero.append(parts[0] if len(parts) == 1 else torch.cat(parts))
        if len({v.shape[0] for v in nonzero}) == 1:
            self.nonzero_acc += torch.cat(nonzero, dim=1).sum(0, dtype=torch.float64)
        else:
            for i, part in enumerate(nonzero):
                self.nonzero_acc[self.offsets[i]:self.offsets[i + 1]] += part.sum(0, dtype=torch.float64)
        if len({v.shape[0] for v in sums.values()}) == 1:  # one division for all layers
            key = tuple(areas)
            if self._areas is None or self._areas[0] != key:
                per_filter = torch.tensor(areas, dtype=torch.float32).repeat_interleave(
                    torch.tensor(self.channels))
                self._areas = (key, per_filter.to(self.device))
            fused = torch.cat(list(sums.values()), dim=1).div_(self._areas[1])
            return {FUSED: fused}
        return {name: v.div_(a) if v.dtype == torch.float32 else v / a
                for (name, v), a in zip(sums.items(), areas, strict=True)}

    def count_nonzero(self, x: Tensor, nonnegative: bool) -> Tensor:
        """Non-zero elements per sample and channel of ``x [N, C, H, W]``: float32 [N, C].

        ``sign`` into a reused scratch buffer, then a sum: several times faster on CPU than
        ``count_nonzero`` or a boolean mask, and no large temporary. Chunks over N keep
        the buffer small.
        """
        n, c, h, w = x.shape
        per_sample = c * h * w
        chunk = max(1, min(n, SCRATCH_ELEMENTS // max(1, per_sample)))
        need = chunk * per_sample
        if (self._scratch is None or self._scratch.numel() < need
                or self._scratch.dtype != x.dtype or self._scratch.device != x.device):
            self._scratch = torch.empty(max(need, 1), dtype=x.dtype, device=x.device)
        parts = []
        for i in range(0, n, chunk):
            part = x[i:i + chunk]
            buf = self._scratch[:part.numel()].view(part.shape)
            torch.sign(part, out=buf)
            if not nonnegative:
                buf.abs_()
            parts.append(buf.sum((2, 3), dtype=torch.float32))  # exact: < 2**24 per entry
        return parts[0] if len(parts) == 1 else torch.cat(parts)


__all__ = ["FUSED", "SCRATCH_ELEMENTS", "Epoch", "check_labels", "segments"]
