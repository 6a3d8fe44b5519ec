"""The per-filter table: every data criterion's raw value of each filter, one CSV row per filter."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pl_pruning.scoring.information import (
    conditional_entropy_from_counts,
    entropy_from_counts,
    mutual_information_from_counts,
    uncertainty_coefficient_from_counts,
)
from pl_pruning.statistics.result import LayerStatistics

CSV_COLUMNS = ("layer", "filter", "entropy", "conditional_entropy", "mutual_information",
               "normalized_conditional_entropy", "apoz", "mean_activation", "l1")


def write_filter_table(statistics: Mapping[str, LayerStatistics], path: str | Path,
                       model: nn.Module | None = None) -> Path:
    """One row per filter (:data:`CSV_COLUMNS`): entropies in nats, the share of H(A) the
    class explains, APoZ, mean activation, and the filter's L1 norm from ``model`` (NaN
    without it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for name, s in statistics.items():
            columns = [
                entropy_from_counts(s.counts.to(torch.float64).sum(-1)),
                conditional_entropy_from_counts(s.counts),
                mutual_information_from_counts(s.counts), uncertainty_coefficient_from_counts(s.counts),
                s.zero_fraction, s.mean_activation,
            ]
            l1 = (model.get_submodule(name).weight.detach().abs().flatten(1).sum(1).cpu()
                  if model is not None else torch.full((s.num_filters,), float("nan")))
            for f in range(s.num_filters):
                writer.writerow([name, f, *(f"{float(c[f]):.8g}" for c in columns), f"{float(l1[f]):.8g}"])
    return path


__all__ = ["CSV_COLUMNS", "write_filter_table"]
