"""The readings of the conditional-entropy criterion: H(A|Y), 1 - H(A|Y)/H(A), and H(Y|A)
(which ranks as I(A;Y)); the motivating case, invariances, the registry, a reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pruning_helpers import layer_stats

sys.path.insert(0, str(Path(__file__).parents[1] / "statistics"))
from stats_helpers import reference_entropy, reference_mutual_information  # noqa: E402

from pl_pruning.scoring import (  # noqa: E402
    CRITERIA,
    NormalizedConditionalEntropy,
    compute_scores,
    conditional_entropy_from_counts,
    entropy_from_counts,
    get_criterion,
    mutual_information_from_counts,
    uncertainty_coefficient_from_counts,
)

BINS, CLASSES, PER_CLASS = 8, 4, 24


def motivating_layer() -> torch.Tensor:
    """Counts ``[4 filters, bins, classes]``: 0 dead (every sample in bin 0), 1 determined
    by the class (class k always in bin 2k), 2 independent of the class (uniform over the
    bins in every class), 3 in between (the class picks a pair of bins)."""
    counts = torch.zeros(4, BINS, CLASSES, dtype=torch.int64)
    counts[0, 0, :] = PER_CLASS
    for k in range(CLASSES):
        counts[1, 2 * k, k] = PER_CLASS
        counts[2, :, k] = PER_CLASS // BINS
        counts[3, 2 * k, k] = counts[3, 2 * k + 1, k] = PER_CLASS // 2
    return counts


def scores(name: str, counts: torch.Tensor) -> torch.Tensor:
    return compute_scores(get_criterion(name), ["conv"], None, {"conv": layer_stats(counts)}, "none")["conv"]


def test_todays_reading_ranks_a_class_determined_filter_with_a_dead_one():
    ce = scores("conditional_entropy", motivating_layer())
    assert ce[0] == 0 and ce[1] == 0  # dead and class-determined: tied at the minimum
    assert ce[2] > 0 and ce[3] > 0
    h = entropy_from_counts(motivating_layer().sum(-1))
    assert h[0] == 0 and h[1] == pytest.approx(np.log(CLASSES))  # yet only one of them is constant


def test_normalized_reading_keeps_the_class_determined_filter_and_removes_the_dead_one_first():
    u = scores("normalized_conditional_entropy", motivating_layer())
    torch.testing.assert_close(u[:3], torch.tensor([0.0, 1.0, 0.0]))
    assert 0 < u[3] < 1
    order = torch.argsort(u, stable=True).tolist()  # removal order: smallest first
    assert order[-1] == 1 and order[:2] == [0, 2]
    # 1 - H(A|Y)/H(A) on filter 3: H(A) = log 8, H(A|Y) = log 2
    assert float(u[3]) == pytest.approx(1 - np.log(2) / np.log(8), abs=1e-6)


def test_h_y_given_a_reading_ranks_exactly_as_mutual_information():
    """H(Y|A) = H(Y) - I(A;Y), H(Y) the same for every filter: removing the largest H(Y|A)
    first is removing the smallest I(A;Y) first."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, CLASSES, (400,), generator=gen)
    acts = (labels[None, :] * torch.randint(0, 3, (12, 1), generator=gen)
            + torch.randint(0, 4, (12, 400), generator=gen)).clamp_max(BINS - 1)
    counts = torch.zeros(12, BINS, CLASSES, dtype=torch.int64)
    for f in range(12):
        counts[f].index_put_((acts[f], labels), torch.ones(400, dtype=torch.int64), accumulate=True)
    h_y_given_a = conditional_entropy_from_counts(counts.transpose(-1, -2))
    h_y = entropy_from_counts(counts[0].sum(0))
    torch.testing.assert_close(h_y_given_a + mutual_information_from_counts(counts), h_y.expand(12))
    mi = scores("mutual_information", counts)
    assert torch.equal(torch.argsort(-h_y_given_a, stable=True), torch.argsort(mi.double(), stable=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uncertainty_coefficient_matches_scipy_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, 500)
    a = np.clip(y + rng.integers(-2, 3, 500), 0, BINS - 1)
    counts = torch.zeros(1, BINS, CLASSES, dtype=torch.int64)
    np.add.at(counts[0].numpy(), (a, y), 1)
    expected = reference_mutual_information(a, y) / reference_entropy(a)
    assert float(uncertainty_coefficient_from_counts(counts)[0]) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", ["conditional_entropy", "normalized_conditional_entropy"])
def test_readings_are_invariant_to_relabelling_bins_and_classes_and_to_the_sample_count(name):
    gen = torch.Generator().manual_seed(1)
    counts = torch.cat([motivating_layer(), torch.randint(0, 9, (6, BINS, CLASSES), generator=gen)])
    base = scores(name, counts)
    bins_perm, class_perm = torch.randperm(BINS, generator=gen), torch.randperm(CLASSES, generator=gen)
    torch.testing.assert_close(scores(name, counts[:, bins_perm, :]), base)
    torch.testing.assert_close(scores(name, counts[:, :, class_perm]), base)
    torch.testing.assert_close(scores(name, counts * 7), base)
    filters_perm = torch.randperm(counts.shape[0], generator=gen)
    torch.testing.assert_close(scores(name, counts[filters_perm]), base[filters_perm])


def test_normalized_reading_stays_in_the_unit_interval_and_finite():
    gen = torch.Generator().manual_seed(2)
    counts = torch.randint(0, 4, (64, BINS, CLASSES), generator=gen)
    counts[:8] = 0  # no samples at all
    counts[8:16, 3, :] = 5  # ... or a constant activation: dead
    counts[8:16, [0, 1, 2, 4, 5, 6, 7], :] = 0
    u = scores("normalized_conditional_entropy", counts)
    assert torch.isfinite(u).all() and (u >= 0).all() and (u <= 1).all()
    assert torch.equal(u[:16], torch.zeros(16))


def test_registered_and_reachable_by_name():
    assert CRITERIA["normalized_conditional_entropy"] is NormalizedConditionalEntropy
    criterion = get_criterion("normalized_conditional_entropy")
    assert criterion.needs_data and criterion.name == "normalized_conditional_entropy"
    stats = {"a": layer_stats(motivating_layer()), "b": layer_stats(motivating_layer()[[3, 1]])}
    per_layer = criterion(stats)  # default normalisation: over each layer's mean
    assert set(per_layer) == {"a", "b"}
    assert torch.argsort(per_layer["a"], stable=True).tolist()[-1] == 1
