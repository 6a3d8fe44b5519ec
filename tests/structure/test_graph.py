"""NetworkGraph: one trace per architecture, and what it knows (MACs, BatchNorms, consumers)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pl_pruning.errors import PlPruningError
from pl_pruning.measure import channel_counts, count_macs
from pl_pruning.models import build_model
from pl_pruning.module import ImageClassifier
from pl_pruning.pruning.optimizer_state import restore_model
from pl_pruning.pruning.surgery import prune_filters
from pl_pruning.structure.graph import NetworkGraph


def example(c: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name, channels, size", [
    ("small_cnn", 1, 8), ("vgg11", 3, 32), ("vgg16", 3, 32), ("resnet20", 3, 32),
    ("torchvision.mobilenet_v2", 3, 32),
])
def test_macs_equal_count_macs(name, channels, size):
    net = build_model(name, num_classes=10, in_channels=channels)
    x = example(channels, size)
    g = NetworkGraph.of(net, x)
    assert g.macs == count_macs(net, x) > 0
    assert g.channels == channel_counts(net)


def test_small_cnn_costs_kernel_plus_consumers():
    """features.0 (1 -> 32, 3x3, 8x8): its own kernel 9 * 64 = 576, plus one input channel
    of features.3 (32 -> 64, 3x3, 8x8): 64 * 9 * 64 = 36,864."""
    net = build_model("small_cnn", num_classes=10, in_channels=1)
    g = NetworkGraph.of(net, example(1, 8))
    assert g.macs_per_filter["features.0"] == 576 + 36_864
    assert g.consumers["features.0"] == ("features.3",)
    assert g.consumers["features.7"] == ("classifier",)  # through pooling and flatten
    # the last conv (64 -> 64 at 4x4 after the pool): 64 * 9 * 16, plus 10 classifier weights
    assert g.macs_per_filter["features.7"] == 64 * 9 * 16 + 10
    assert g.output_hw == {"features.0": (8, 8), "features.3": (8, 8), "features.7": (4, 4)}
    assert g.batchnorm_of == {"features.0": "features.1", "features.3": "features.4",
                              "features.7": "features.8"}


def test_residual_network_batchnorms_and_consumers():
    net = build_model("resnet20", width=0.5)
    g = NetworkGraph.of(net, example())
    assert g.batchnorm_of["layer2.0.conv1"] == "layer2.0.bn1"
    assert g.batchnorm_of["layer2.0.shortcut.0"] == "layer2.0.shortcut.1"
    assert g.consumers["layer2.0.conv1"] == ("layer2.0.conv2",)
    # conv2 feeds a residual addition: its readers see a sum, not its channels alone
    assert g.consumers["layer2.0.conv2"] == ()
    # a BatchNorm is found by the tensor it reads, not by its name or position
    assert set(g.batchnorm_of) == {n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}


def test_names_follow_the_lightning_module():
    module = ImageClassifier(build_model("small_cnn", num_classes=10, in_channels=1), input_shape=(1, 8, 8))
    g = NetworkGraph.of(module, module.example_input_array)
    assert g.batchnorm_of["net.features.0"] == "net.features.1"
    assert [grp.root for grp in g.groups] == ["net.features.0", "net.features.3", "net.features.7"]


def test_traced_once_per_architecture():
    net = build_model("resnet20", width=0.25)
    x = example()
    before = NetworkGraph.traces
    g = NetworkGraph.of(net, x)
    assert NetworkGraph.of(net, x) is g and NetworkGraph.of(net, x[:1]).macs == g.macs
    assert NetworkGraph.traces == before + 1
    accepted = {k: v.clone() for k, v in net.state_dict().items()}
    prune_filters(net, {"layer1.0.conv1": [0, 1]}, x, graph=g)  # uses g: no trace of its own
    assert NetworkGraph.traces == before + 1
    after = NetworkGraph.of(net, x)  # a new architecture: traced once
    assert NetworkGraph.traces == before + 2 and after.macs < g.macs
    assert NetworkGraph.of(net, x) is after and NetworkGraph.traces == before + 2
    restore_model(net, accepted)  # a rollback: the key changes again
    assert NetworkGraph.of(net, x).macs == g.macs and NetworkGraph.traces == before + 3
    # a copy is another model: its own trace
    NetworkGraph.of(copy.deepcopy(net), x)
    assert NetworkGraph.traces == before + 4


def test_a_stale_graph_is_refused():
    net = build_model("vgg11", width=0.125)
    x = example()
    g = NetworkGraph.of(net, x)
    prune_filters(net, {"features.0": [0]}, x)
    with pytest.raises(PlPruningError, match="not the NetworkGraph of this model as it is now"):
        prune_filters(net, {"features.0": [0]}, x, graph=g)


def test_ignored_layers_give_their_own_view_of_one_trace():
    net = build_model("vgg11", width=0.125)
    x = example()
    before = NetworkGraph.traces
    full = NetworkGraph.of(net, x)
    some = NetworkGraph.of(net, x, ignored_layers=["features.0"])
    assert NetworkGraph.traces == before + 1
    assert "features.0" in [g.root for g in full.groups]
    assert "features.0" not in [g.root for g in some.groups]
    assert NetworkGraph.of(net, x).groups == full.groups  # the first view is unchanged
    with pytest.raises(PlPruningError, match="ignored_layers entry 'nope' matches no module"):
        NetworkGraph.of(net, x, ignored_layers=["nope"])


def test_traced_inside_inference_mode_with_flags_kept():
    net = build_model("resnet20", width=0.25).train()
    net.layer1[0].bn1.eval()  # frozen by its user: must stay frozen
    with torch.inference_mode():
        g = NetworkGraph.of(net, example())
    assert g.groups and net.training and not net.layer1[0].bn1.training
