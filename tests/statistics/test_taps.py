"""Tap points: where each convolution's filters are read (statistics/taps.py), with the
BatchNorm taken from the network graph."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from stats_helpers import hand_made_data  # noqa: E402

from pl_pruning import build_model  # noqa: E402
from pl_pruning.statistics import StatisticsCollector, plan_taps  # noqa: E402
from pl_pruning.structure.graph import NetworkGraph  # noqa: E402


def taps_of(model: nn.Module, shape=(1, 3, 32, 32)):
    return StatisticsCollector(model, example_inputs=torch.randn(*shape)).plan()


def test_resnet_taps_are_after_bn_and_relu_and_before_the_residual_add():
    taps = taps_of(build_model("resnet20", width=0.25))
    assert taps["layer1.0.conv1"].module == "layer1.0.relu1"
    assert (taps["layer1.0.conv2"].module, taps["layer1.0.conv2"].kind) == ("layer1.0.bn2", "batchnorm")
    assert taps["layer2.0.shortcut.0"].module == "layer2.0.shortcut.1"
    assert all(t.how == "fx" for t in taps.values())


def test_a_shared_activation_module_is_applied_by_the_hook():
    # torchvision reuses one ReLU module three times per block: hook bn1, apply the ReLU
    tap = taps_of(build_model("torchvision.resnet18"))["layer1.0.conv1"]
    assert (tap.module, tap.kind, tap.activation) == ("layer1.0.bn1", "activation", "layer1.0.relu")
    assert tap.nonnegative


def test_the_batchnorm_is_the_graphs():
    """A BatchNorm right after the conv in the trace is used only when the graph says it
    consumes the conv's output; a map without it leaves the tap at the activation only."""
    net = build_model("small_cnn", in_channels=1, width=0.5)
    graph = NetworkGraph.of(net, torch.randn(1, 1, 8, 8))
    assert graph.batchnorm_of["features.0"] == "features.1"
    taps = plan_taps(net, ["features.0"], graph.batchnorm_of)
    assert (taps["features.0"].module, taps["features.0"].kind) == ("features.2", "activation")
    taps = plan_taps(net, ["features.0"], {})  # the conv feeds no BatchNorm: stop there
    assert (taps["features.0"].module, taps["features.0"].kind) == ("features.0", "conv")


class Gate(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        return x if x.sum() > -1e9 else -x


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), Gate())
        self.bypass = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.lonely = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 4)

    def forward(self, x):
        x = self.block(x)
        x = self.bypass[2](self.bypass[0](x))  # the Sequential's BatchNorm is never called
        x = self.lonely(x)
        return self.head(Gate()(x).mean((2, 3)))


def test_untraceable_model_falls_back_to_sequential_siblings_and_the_graphs_batchnorm():
    model = Untraceable().eval()
    x, y = hand_made_data().tensors
    collector = StatisticsCollector(model, example_inputs=x[:1], num_classes=4)
    taps = collector.plan()
    assert (taps["block.0"].module, taps["block.0"].how) == ("block.2", "sequential")
    # the sibling BatchNorm takes no input from bypass.0: not a tap (it would never fire)
    assert (taps["bypass.0"].module, taps["bypass.0"].kind) == ("bypass.0", "conv")
    assert (taps["lonely"].module, taps["lonely"].how) == ("lonely", "none")
    collector.start()
    with torch.no_grad(), collector.batch(y):
        model(x)
    stats = collector.finish()
    assert list(stats) == ["block.0", "bypass.0", "lonely"]
    assert all(int(s.counts[0].sum()) == len(y) for s in stats.values())
