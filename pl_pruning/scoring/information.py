"""Entropy, conditional entropy and mutual information from histogram counts.

Plug-in (maximum-likelihood) estimates in **nats** (natural logarithm), as
``scipy.stats.entropy`` and ``sklearn.metrics.mutual_info_score``, with ``0 log 0 = 0``:
an empty histogram has entropy 0, and a class without samples has ``p(y) = 0`` and adds
nothing, so empty bins, constant activations and empty classes all give finite numbers.

Example::

    >>> import torch
    >>> counts = torch.tensor([[[5, 0], [0, 5]]])  # one filter: 2 bins x 2 classes
    >>> round(float(entropy_from_counts(counts.sum(-1))[0]), 4)  # H(A) = log 2
    0.6931
    >>> float(conditional_entropy_from_counts(counts)[0])  # the class fixes the bin
    0.0
    >>> float(uncertainty_coefficient_from_counts(counts)[0])  # ... so it explains all of H(A)
    1.0
"""

from __future__ import annotations

import torch
from torch import Tensor


def entropy_from_counts(counts: Tensor, dim: int = -1) -> Tensor:
    """Entropy in nats of the histograms along ``dim``; 0 for an empty histogram."""
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


def uncertainty_coefficient_from_counts(counts: Tensor) -> Tensor:
    """U(A | Y) = I(A; Y) / H(A) = 1 - H(A | Y) / H(A) in [0, 1] from joint counts
    ``[..., bins, classes]`` (Theil's uncertainty coefficient): the share of the activation's
    entropy that the class explains. 0 where H(A) = 0 (a constant activation: nothing to
    explain)."""
    counts = counts.to(torch.float64)
    h = entropy_from_counts(counts.sum(-1), dim=-1)
    share = mutual_information_from_counts(counts) / h.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(h > 0, share.clamp(0.0, 1.0), torch.zeros_like(h))


__all__ = ["conditional_entropy_from_counts", "entropy_from_counts", "mutual_information_from_counts",
           "uncertainty_coefficient_from_counts"]
