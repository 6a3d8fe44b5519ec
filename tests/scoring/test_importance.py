"""The Torch-Pruning adapter (pl_pruning.importance.CriterionImportance)."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from pl_pruning import PlPruningError, build_model
from pl_pruning.importance import CriterionImportance


def conv_scores(net):
    gen = torch.Generator().manual_seed(0)
    return {n: torch.rand(m.out_channels, generator=gen) for n, m in net.named_modules()
            if isinstance(m, nn.Conv2d)}


def test_adapter_uncoupled_layer_gives_its_own_scores():
    net = build_model("vgg11", width=0.125)
    scores = conv_scores(net)
    imp = CriterionImportance(scores, model=net)
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 3, 32, 32))
    conv = net.features[4]
    group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, list(range(conv.out_channels)))
    torch.testing.assert_close(imp(group), scores["features.4"])


@pytest.mark.parametrize("reduction", ["mean", "sum", "max", "min"])
def test_adapter_reduces_coupled_residual_layers(reduction):
    net = build_model("resnet20", width=0.25)
    scores = conv_scores(net)
    imp = CriterionImportance(scores, model=net, reduction=reduction)
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 3, 32, 32))
    conv = net.layer2[0].conv2
    group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, list(range(conv.out_channels)))
    coupled = sorted(dg._module2name[it.dep.target.module] for it in group
                     if it.dep.pruning_fn == tp.prune_conv_out_channels)
    assert coupled == ["layer2.0.conv2", "layer2.0.shortcut.0", "layer2.1.conv2", "layer2.2.conv2"]
    stacked = torch.stack([scores[n] for n in coupled])
    expected = {"mean": stacked.mean(0), "sum": stacked.sum(0), "max": stacked.amax(0),
                "min": stacked.amin(0)}[reduction]
    torch.testing.assert_close(imp(group), expected)


def test_adapter_drives_a_torch_pruning_pruner():
    net = build_model("vgg11", width=0.125)
    scores = conv_scores(net)
    before = net.features[0].weight.detach().clone()
    imp = CriterionImportance(scores, model=net)
    pruner = tp.pruner.BasePruner(net, torch.randn(1, 3, 32, 32), importance=imp, pruning_ratio=0.5,
                                  ignored_layers=[net.classifier])
    pruner.step()
    kept = scores["features.0"].argsort(descending=True)[:net.features[0].out_channels].sort().values
    torch.testing.assert_close(net.features[0].weight.detach(), before[kept])


def test_adapter_errors():
    net = build_model("vgg11", width=0.125)
    with pytest.raises(PlPruningError, match="'median'"):
        CriterionImportance({}, model=net, reduction="median")
    with pytest.raises(PlPruningError, match="'features.99'"):
        CriterionImportance({"features.99": torch.ones(3)}, model=net)
    imp = CriterionImportance({net.features[0]: torch.ones(3)})
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 3, 32, 32))
    group = dg.get_pruning_group(net.features[0], tp.prune_conv_out_channels, list(range(8)))
    with pytest.raises(PlPruningError, match="stale"):
        imp(group)
    # a group whose layers have no scores: None, which pruners read as "leave it"
    assert CriterionImportance({}, model=net)(group) is None


def test_adapter_from_data_free_criterion():
    net = build_model("resnet20", width=0.25)
    imp = CriterionImportance.from_criterion("l1", net)
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 3, 32, 32))
    conv = net.layer1[0].conv1
    group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, list(range(conv.out_channels)))
    torch.testing.assert_close(imp(group), conv.weight.detach().abs().sum((1, 2, 3)))
