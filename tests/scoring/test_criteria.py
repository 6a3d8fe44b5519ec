"""Criteria: the registry (a user's own criterion included) and each criterion's scores."""

from __future__ import annotations

import pytest
import torch
from pruning_helpers import layer_stats
from torch import nn

from pl_pruning import PlPruningError, build_model
from pl_pruning.scoring.criteria import (
    _REGISTRY,
    CRITERIA,
    Criterion,
    Entropy,
    compute_scores,
    get_criterion,
    register_criterion,
)


def test_registry_names():
    assert set(CRITERIA) == {"conditional_entropy", "normalized_conditional_entropy", "entropy",
                             "mutual_information", "apoz", "l1", "random"}
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




class Constant(Criterion):
    needs_data = False

    def layer_scores(self, name, stats, module):
        return torch.full((module.out_channels,), 2.0)


def test_register_criterion_makes_a_users_class_a_criterion():
    try:
        assert register_criterion("constant", Constant) is Constant
        assert Constant.name == "constant" and list(CRITERIA)[-1] == "constant"
        scores = get_criterion("constant")(build_model("vgg11", width=0.125), normalize="none")
        assert all(torch.equal(s, torch.full_like(s, 2.0)) for s in scores.values())
        register_criterion("constant", Constant)  # the same class again: fine
        with pytest.raises(PlPruningError, match="already registered"):
            register_criterion("constant", type("Other", (Constant,), {}))
        with pytest.raises(PlPruningError, match="unknown criterion 'constnt'.*constant"):
            get_criterion("constnt")
    finally:
        _REGISTRY.pop("constant", None)
    assert "constant" not in CRITERIA


def test_register_criterion_refuses_what_is_not_a_criterion():
    class NoScores(Criterion):  # layer_scores missing: abstract
        pass

    for name, cls, needle in [("", Constant, "non-empty string"), (3, Constant, "non-empty"),
                              ("x", dict, "Criterion subclass"), ("x", NoScores, "layer_scores"),
                              ("x", Entropy, "names itself 'entropy'")]:
        with pytest.raises(PlPruningError, match=needle):
            register_criterion(name, cls)
    with pytest.raises(TypeError):
        CRITERIA["x"] = Constant  # read-only: register_criterion is the way in
    assert "x" not in CRITERIA
