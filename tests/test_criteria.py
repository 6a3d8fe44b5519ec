"""Criteria: the entropy math against SciPy / scikit-learn, the registry, normalisation,
and the Torch-Pruning adapter."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from stats_helpers import (  # noqa: E402
    reference_conditional_entropy,
    reference_entropy,
    reference_mutual_information,
)

from pl_pruning import PlPruningError, build_model  # noqa: E402
from pl_pruning.criteria import (  # noqa: E402
    CRITERIA,
    LayerStatistics,
    compute_scores,
    conditional_entropy_from_counts,
    entropy_from_counts,
    get_criterion,
    mutual_information_from_counts,
)


def counts_of(a: np.ndarray, y: np.ndarray, bins: int, classes: int) -> torch.Tensor:
    out = np.zeros((bins, classes), dtype=np.int64)
    np.add.at(out, (a, y), 1)
    return torch.from_numpy(out)


def layer_stats(counts: torch.Tensor) -> LayerStatistics:
    f = counts.shape[0]
    return LayerStatistics(counts=counts, activation_sum=torch.zeros(f, dtype=torch.float64),
                           zeros=torch.zeros(f, dtype=torch.float64),
                           elements=torch.ones(f, dtype=torch.float64),
                           low=torch.zeros(f), high=torch.ones(f))


# ------------------------------------------------------------------ the math, known values


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


# ------------------------------------------------------------------ registry and criteria


def test_registry_names():
    assert set(CRITERIA) == {"conditional_entropy", "entropy", "mutual_information", "apoz", "l1",
                             "random"}
    assert {n for n, c in CRITERIA.items() if not c.needs_data} == {"l1", "random"}
    assert get_criterion("conditional_entropy").name == "conditional_entropy"


def test_unknown_criterion_names_value_and_choices():
    with pytest.raises(PlPruningError) as err:
        get_criterion("entorpy")
    msg = str(err.value)
    assert "'entorpy'" in msg
    for name in CRITERIA:
        assert name in msg


def test_bad_criterion_option():
    with pytest.raises(PlPruningError, match="seed"):
        get_criterion("entropy", seed=3)
    with pytest.raises(PlPruningError, match="seed must be an integer"):
        get_criterion("random", seed="x")


def test_l1_and_random_are_data_free():
    net = build_model("vgg11", width=0.125)
    l1 = get_criterion("l1")(net, normalize="none")
    assert list(l1) == [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    w = net.features[0].weight.detach()
    torch.testing.assert_close(l1["features.0"], w.abs().sum((1, 2, 3)))
    r1 = get_criterion("random", seed=3)(net, normalize="none")
    r2 = get_criterion("random", seed=3)(net, normalize="none")
    r3 = get_criterion("random", seed=4)(net, normalize="none")
    for name in r1:
        assert torch.equal(r1[name], r2[name]) and not torch.equal(r1[name], r3[name])
        assert r1[name].shape == (net.get_submodule(name).out_channels,)
    assert not torch.equal(r1["features.0"][:8], r1["features.4"][:8])  # per-layer streams


def test_data_criterion_on_a_model_is_an_error():
    with pytest.raises(PlPruningError, match="needs activation statistics"):
        get_criterion("conditional_entropy")(build_model("vgg11", width=0.125))


def test_model_without_conv_is_an_error():
    with pytest.raises(PlPruningError, match="no nn.Conv2d"):
        get_criterion("l1")(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))


def test_apoz_score_is_one_minus_zero_fraction():
    s = layer_stats(torch.ones(3, 2, 2, dtype=torch.int64))
    s.zeros = torch.tensor([0.0, 5.0, 10.0], dtype=torch.float64)
    s.elements = torch.full((3,), 10.0, dtype=torch.float64)
    out = compute_scores(get_criterion("apoz"), ["a"], None, {"a": s}, "none")["a"]
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5, 0.0]))


def test_normalisations():
    a = layer_stats(torch.tensor([[[4, 4], [0, 0]], [[2, 2], [2, 2]], [[1, 1], [3, 3]]]))
    b = layer_stats(torch.tensor([[[8, 0], [0, 0]], [[4, 4], [0, 0]]]))
    a.macs_per_filter, b.macs_per_filter = 100.0, 300.0
    crit = get_criterion("entropy")
    raw = compute_scores(crit, ["a", "b"], None, {"a": a, "b": b}, "none")
    per = compute_scores(crit, ["a", "b"], None, {"a": a, "b": b}, "per-layer")
    cost = compute_scores(crit, ["a", "b"], None, {"a": a, "b": b}, "cost-aware")
    assert per["a"].mean().item() == pytest.approx(1.0)
    torch.testing.assert_close(per["a"], raw["a"] / raw["a"].mean())
    torch.testing.assert_close(per["b"], raw["b"])  # mean of [0, 0] is not positive: unchanged
    # score per MAC saved, relative to the mean cost over layers (200)
    torch.testing.assert_close(cost["a"], per["a"] * 2.0)
    torch.testing.assert_close(cost["b"], per["b"] * (2.0 / 3.0))
    for name in raw:  # same order inside each layer
        assert torch.equal(raw[name].argsort(stable=True), cost[name].argsort(stable=True))
    with pytest.raises(PlPruningError) as err:
        compute_scores(crit, ["a"], None, {"a": a}, "global")
    assert "'global'" in str(err.value) and "per-layer" in str(err.value)
    a.macs_per_filter = None
    with pytest.raises(PlPruningError, match="cost-aware"):
        compute_scores(crit, ["a"], None, {"a": a}, "cost-aware")
