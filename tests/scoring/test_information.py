"""Entropy, conditional entropy and mutual information from counts, against SciPy and
scikit-learn and known values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "statistics"))
from stats_helpers import (  # noqa: E402
    reference_conditional_entropy,
    reference_entropy,
    reference_mutual_information,
)

from pl_pruning.scoring.information import (  # noqa: E402
    conditional_entropy_from_counts,
    entropy_from_counts,
    mutual_information_from_counts,
)


def counts_of(a: np.ndarray, y: np.ndarray, bins: int, classes: int) -> torch.Tensor:
    out = np.zeros((bins, classes), dtype=np.int64)
    np.add.at(out, (a, y), 1)
    return torch.from_numpy(out)


def test_uniform_histogram_has_entropy_log_bins():
    counts = torch.full((1, 8, 1), 5)
    assert entropy_from_counts(counts.sum(-1))[0].item() == pytest.approx(math.log(8), abs=1e-12)
    assert conditional_entropy_from_counts(counts)[0].item() == pytest.approx(math.log(8), abs=1e-12)


def test_independent_activation_has_zero_mutual_information():
    p_a = torch.tensor([1, 2, 3, 4], dtype=torch.float64)
    p_y = torch.tensor([2, 1, 1], dtype=torch.float64)
    counts = (p_a[:, None] * p_y[None, :] * 10).round()[None]  # exact product of marginals
    h_a = float(scipy_h(p_a.numpy()))
    assert entropy_from_counts(counts.sum(-1))[0].item() == pytest.approx(h_a, abs=1e-12)
    assert conditional_entropy_from_counts(counts)[0].item() == pytest.approx(h_a, abs=1e-12)
    assert mutual_information_from_counts(counts)[0].item() == pytest.approx(0.0, abs=1e-12)


def test_deterministic_activation_has_mutual_information_entropy_of_class():
    # class k always in bin 2k: H(A|Y) = 0, I(A;Y) = H(Y)
    class_counts = np.array([5, 10, 20, 1])
    counts = torch.zeros(1, 8, 4, dtype=torch.int64)
    for k, n in enumerate(class_counts):
        counts[0, 2 * k, k] = int(n)
    assert conditional_entropy_from_counts(counts)[0].item() == pytest.approx(0.0, abs=1e-12)
    assert mutual_information_from_counts(counts)[0].item() == pytest.approx(
        float(scipy_h(class_counts)), abs=1e-12)


def test_guards_give_finite_numbers():
    cases = torch.zeros(4, 5, 3, dtype=torch.int64)
    cases[1, 2, 0] = 7  # constant activation, one class
    cases[2, :, 1] = 3  # a class with samples, two empty classes and no empty bins
    # case 0: no samples at all; case 3: empty bins and classes mixed
    cases[3, 0, 0], cases[3, 4, 2] = 2, 5
    for fn in (conditional_entropy_from_counts, mutual_information_from_counts):
        v = fn(cases)
        assert torch.isfinite(v).all(), fn
    assert torch.isfinite(entropy_from_counts(cases.sum(-1))).all()
    assert conditional_entropy_from_counts(cases)[0] == 0
    assert entropy_from_counts(cases[1].sum(-1)) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_and_sklearn_on_random_discrete_data(seed):
    rng = np.random.default_rng(seed)
    bins, classes, n = 12, 5, 700
    y = rng.integers(0, classes, n)
    a = np.clip(y * 2 + rng.integers(-3, 4, n), 0, bins - 1)  # dependent on y
    noisy = rng.random(n) < 0.2
    a[noisy] = rng.integers(0, bins, noisy.sum())
    a[a == 5] = 6  # an empty bin inside the range
    counts = counts_of(a, y, bins, classes)[None]
    assert entropy_from_counts(counts.sum(-1))[0].item() == pytest.approx(reference_entropy(a), rel=1e-10)
    assert conditional_entropy_from_counts(counts)[0].item() == pytest.approx(
        reference_conditional_entropy(a, y), rel=1e-10)
    assert mutual_information_from_counts(counts)[0].item() == pytest.approx(
        reference_mutual_information(a, y), rel=1e-9, abs=1e-12)


def scipy_h(p):
    from scipy.stats import entropy

    return entropy(np.asarray(p, dtype=float))


