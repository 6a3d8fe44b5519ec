"""The one score normalisation: none, per-layer, cost-aware (with given MACs per filter)."""

from __future__ import annotations

import pytest
import torch
from pruning_helpers import layer_stats

from pl_pruning import PlPruningError
from pl_pruning.scoring.criteria import compute_scores, get_criterion
from pl_pruning.scoring.normalize import normalize_scores, per_layer_normalize


def test_normalisations():
    a = layer_stats(torch.tensor([[[4, 4], [0, 0]], [[2, 2], [2, 2]], [[1, 1], [3, 3]]]))
    b = layer_stats(torch.tensor([[[8, 0], [0, 0]], [[4, 4], [0, 0]]]))
    macs = {"a": 100.0, "b": 300.0}
    crit = get_criterion("entropy")
    raw = compute_scores(crit, ["a", "b"], None, {"a": a, "b": b}, "none")
    per = compute_scores(crit, ["a", "b"], None, {"a": a, "b": b}, "per-layer")
    cost = compute_scores(crit, ["a", "b"], None, {"a": a, "b": b}, "cost-aware", macs)
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
    with pytest.raises(PlPruningError, match="cost-aware"):
        compute_scores(crit, ["a"], None, {"a": a}, "cost-aware")  # no MACs given




def test_normalize_scores_on_groups_and_bad_costs():
    scores = {"g1": torch.tensor([1.0, 2.0, 3.0]), "g2": torch.tensor([0.5, 0.5])}
    out = normalize_scores(scores, "cost-aware", {"g1": 10.0, "g2": 30.0})
    torch.testing.assert_close(out["g1"], per_layer_normalize(scores["g1"]) * 2.0)
    torch.testing.assert_close(out["g2"], per_layer_normalize(scores["g2"]) * (2.0 / 3.0))
    assert normalize_scores(scores, "none") == scores
    for bad in ({"g1": 10.0}, {"g1": 10.0, "g2": 0.0}, None):
        with pytest.raises(PlPruningError, match="'g2'|'g1'"):
            normalize_scores(scores, "cost-aware", bad)
    assert normalize_scores({}, "cost-aware", None) == {}
