"""Filter surgery through Torch-Pruning's dependency graph: shapes, coupling, atomicity."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from pl_pruning.errors import PlPruningError
from pl_pruning.measure import count_macs
from pl_pruning.models import build_model
from pl_pruning.module import ImageClassifier
from pl_pruning.pruning.surgery import prunable_layers, prune_filters, pruning_groups

MUST_SHOW = ["vgg16", "resnet56", "torchvision.resnet18", "torchvision.mobilenet_v2"]


def inputs(n: int = 2, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def state_of(model: nn.Module) -> dict:
    """Everything a failed surgery must leave as it was: tensors, their objects, shapes."""
    return {"tensors": {k: v.clone() for k, v in model.state_dict().items()},
            "objects": {k: id(p) for k, p in model.named_parameters()},
            "attrs": {n: (getattr(m, "in_channels", None), getattr(m, "out_channels", None),
                          getattr(m, "groups", None), getattr(m, "num_features", None),
                          getattr(m, "in_features", None), getattr(m, "out_features", None))
                      for n, m in model.named_modules()}}


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = state_of(model)
    assert after["objects"] == before["objects"]
    assert after["attrs"] == before["attrs"]
    assert before["tensors"].keys() == after["tensors"].keys()
    for k, v in before["tensors"].items():
        assert torch.equal(v, after["tensors"][k]), k


def spatial_sizes(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Output H*W (or 1 for Linear) of every Conv/Linear, recorded by hooks."""
    sizes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: sizes.__setitem__(name, o[0, 0].numel())))
    with torch.no_grad():
        model.eval()(x[:1])
    for h in hooks:
        h.remove()
    return sizes


def analytic_macs(model: nn.Module, sizes: dict[str, int]) -> int:
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += m.out_channels * (m.in_channels // m.groups) * k * sizes[name]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    return total


@pytest.mark.parametrize("name", MUST_SHOW)
def test_remove_30_percent_of_filters(name):
    torch.manual_seed(0)
    model = build_model(name)
    x = inputs()
    groups = pruning_groups(model, x)
    gen = torch.Generator().manual_seed(1)
    plan, expected_out = {}, {}
    for g in groups:
        k = int(0.3 * g.channels)
        if k == 0:
            continue
        idxs = torch.randperm(g.channels, generator=gen)[:k].tolist()
        plan[g.convs[-1]] = idxs  # through any conv of the group: coupling does the rest
        for conv in g.convs:
            expected_out[conv] = g.channels - k
    assert plan
    sizes = spatial_sizes(model, x)
    macs_before = count_macs(model, x)
    assert macs_before == analytic_macs(model, sizes)
    in_before = {n: (m.in_features if isinstance(m, nn.Linear) else m.in_channels)
                 for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    model.train()

    result = prune_filters(model, plan, x)

    assert model.training  # train/eval flags are put back after tracing
    for conv, n in expected_out.items():
        assert dict(model.named_modules())[conv].out_channels == n, conv
    # the final classifier keeps its outputs
    assert model(x).shape == (2, 10)
    macs_after = count_macs(model, x)
    assert macs_after == analytic_macs(model, sizes)
    # the report matches the shapes: the consumers lost exactly the reported inputs
    assert result.removed_inputs
    for layer, removed in result.removed_inputs.items():
        m = dict(model.named_modules())[layer]
        in_now = m.in_features if isinstance(m, nn.Linear) else m.in_channels
        assert in_now == in_before[layer] - len(removed), layer
    assert result.filters_removed == sum(result.channels_before[n] - result.channels_after[n]
                                         for n in result.channels_before)
    # 30% fewer filters everywhere: roughly 0.7^2 of the MACs (depthwise convs scale by 0.7)
    ratio = macs_after / macs_before
    assert 0.44 < ratio < 0.60, ratio
    # one training step with the new (smaller) parameters
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snapshot = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss = F.cross_entropy(model(x), torch.tensor([1, 3]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, snapshot[k])]
    assert len(changed) > len(snapshot) // 2
    assert model.eval()(x).shape == (2, 10)


def test_lightning_module_names_and_reported_coupling():
    module = ImageClassifier({"name": "resnet20", "width": 0.5}, input_shape=(3, 32, 32))
    x = inputs()
    names = prunable_layers(module, x)
    assert "net.layer1.0.conv1" in names and "net.fc" not in names
    group = next(g for g in pruning_groups(module, x) if "net.layer1.1.conv2" in g.convs)
    # the stem and every block's second conv of stage 1 feed one residual stream
    assert {"net.conv1", "net.layer1.0.conv2", "net.layer1.2.conv2"} <= set(group.convs)
    # two plan entries in that group, overlapping: merged into one removal
    result = prune_filters(module, {"net.layer1.0.conv2": [0, 1], "net.layer1.2.conv2": [1, 2]}, x)
    assert [sorted(idx) for _, idx in result.groups] == [[0, 1, 2]]
    for conv in group.convs:
        assert result.removed[conv] == [0, 1, 2]
        assert module.net.get_submodule(conv[4:]).out_channels == group.channels - 3
    assert result.removed["net.bn1"] == [0, 1, 2]
    assert result.removed_inputs["net.layer1.1.conv1"] == [0, 1, 2]
    assert result.removed_inputs["net.layer2.0.shortcut.0"] == [0, 1, 2]
    assert module(x).shape == (2, 10)


def test_parameter_changes_map_new_to_old():
    torch.manual_seed(0)
    net = build_model("vgg11", width=0.25)
    x = inputs()
    old_w = net.features[4].weight.detach().clone()  # second conv: loses inputs and outputs
    result = prune_filters(net, {"features.0": [0, 3], "features.4": [5]}, x)
    change = result.parameter_changes["features.4.weight"]
    assert change.old is not net.features[4].weight and change.new is net.features[4].weight
    expected = old_w.index_select(0, change.kept[0]).index_select(1, change.kept[1])
    assert torch.equal(change.new.detach(), expected)
    assert 5 not in change.kept[0].tolist() and 3 not in change.kept[1].tolist()
    assert result.filters_removed == 3


def test_graph_is_built_once_per_surgery(monkeypatch):
    calls = []
    original = tp.DependencyGraph.build_dependency

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", counting)
    net = build_model("vgg11", width=0.25)
    prune_filters(net, {f"features.{i}": [0, 1] for i in (0, 4, 8, 11, 15)}, inputs())
    assert len(calls) == 1


def test_round_to_and_min_channels():
    x = inputs()
    net = build_model("vgg11", width=1.0)  # features.0 has 64 filters
    order = list(range(40, 53))  # 13 planned: 51 left -> rounded up to 56, so 8 removed
    result = prune_filters(net, {"features.0": order}, x, round_to=8)
    assert net.features[0].out_channels == 56
    assert result.removed["features.0"] == sorted(order[:8])  # the first listed go first

    net = build_model("vgg11", width=1.0)
    result = prune_filters(net, {"features.0": [1, 2, 3]}, x, round_to=8)  # 61 -> 64: nothing
    assert net.features[0].out_channels == 64 and "features.0" in result.skipped
    net = build_model("vgg11", width=1.0)
    prune_filters(net, {"features.0": list(range(59))}, x, round_to=8)  # 5 left: at most 8, allowed
    assert net.features[0].out_channels == 5

    net = build_model("vgg11", width=0.25)  # features.0 has 16 filters
    before = state_of(net)
    with pytest.raises(PlPruningError, match=r"min_channels=4"):
        prune_filters(net, {"features.0": list(range(13))}, x, min_channels=4)
    assert_untouched(net, before)


def test_inside_inference_mode():
    """Lightning runs validation hooks under inference_mode; surgery must still trace."""
    net = build_model("resnet20", width=0.5)
    x = inputs()
    with torch.inference_mode():
        x_inf = x.clone()
        prune_filters(net, {"layer2.0.conv1": [0, 1, 2]}, x_inf)
    assert net.layer2[0].conv1.out_channels == 13
    loss = net(x).sum()
    loss.backward()  # parameters are ordinary tensors, not inference tensors


# ----------------------------------------------------------------------- bad input


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    return build_model("resnet20", width=0.5).eval()


@pytest.mark.parametrize("plan, kwargs, message", [
    ({"layer1.0.conv1": [8]}, {}, r"filter index 8, out of range: 'layer1.0.conv1' has 8 filters"),
    ({"layer1.0.conv1": [-1]}, {}, r"filter index -1, out of range"),
    ({"layer1.0.conv1": [0.5]}, {}, r"filter indices are integers"),
    ({"layer1.0.conv1": list(range(8))}, {}, r"removes 8 of the 8 filters .*min_channels=1"),
    ({"conv1": list(range(8))}, {}, r"removes 8 of the 8 filters of 'conv1'.*coupled layers"),
    ({"layer1.0.conv9": [0]}, {}, r"'layer1.0.conv9', which is not in the model.*did you mean"),
    ({"layer1.0.bn1": [0]}, {}, r"'layer1.0.bn1', a BatchNorm2d"),
    ({"fc": [0]}, {}, r"'fc'.*final classifier is never pruned"),
    ({"layer1.2.conv2": [0]}, {"ignored_layers": ["layer1.0.conv2"]},
     r"coupled with 'layer1.0.conv2', which ignored_layers entry 'layer1.0.conv2' protects"),
    ({"layer2.1.conv1": [0]}, {"ignored_layers": [r"layer2\..*conv1"]},
     r"'layer2.1.conv1', which is protected by ignored_layers entry"),
    ({"layer1.0.conv1": [0]}, {"ignored_layers": ["nothing.like.this"]}, r"matches no module"),
    ({"layer1.0.conv1": [0]}, {"min_channels": 0}, r"min_channels must be an integer >= 1"),
    ({"layer1.0.conv1": [0]}, {"round_to": 0}, r"round_to must be"),
    ({"layer1.0.conv1": [0]}, {"channel_means": {"layer1.0.conv1": torch.zeros(3)}},
     r"channel_means\['layer1.0.conv1'\] has 3 values; the layer has 8 filters"),
    ({"layer1.0.conv1": [0]}, {"channel_means": {"features.0": torch.zeros(3)}},
     r"channel_means has an entry for 'features.0'"),
])
def test_bad_input_is_a_clear_error_and_leaves_the_model_untouched(resnet, plan, kwargs, message):
    x = inputs()
    before = state_of(resnet)
    y = resnet(x)
    with pytest.raises(PlPruningError, match=message):
        prune_filters(resnet, plan, x, **kwargs)
    assert_untouched(resnet, before)
    assert torch.equal(resnet(x), y)


def test_failure_during_the_cut_restores_the_model(resnet, monkeypatch):
    """Any error after Torch-Pruning started cutting puts every tensor and size back."""
    import pl_pruning.pruning.surgery as surgery

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure after the cut")

    monkeypatch.setattr(surgery, "apply_compensation", broken)
    x = inputs()
    before = state_of(resnet)
    y = resnet(x)
    with pytest.raises(RuntimeError, match="simulated failure"):
        prune_filters(resnet, {"layer1.0.conv1": [0, 1], "layer2.1.conv2": [3]}, x)
    assert_untouched(resnet, before)
    assert torch.equal(resnet(x), y)
    # and it still prunes afterwards
    monkeypatch.undo()
    prune_filters(resnet, {"layer1.0.conv1": [0, 1]}, x)
    assert resnet.layer1[0].conv1.out_channels == 6


def test_copy_is_independent():
    net = build_model("vgg11", width=0.25)
    twin = copy.deepcopy(net)
    prune_filters(twin, {"features.0": [0]}, inputs())
    assert net.features[0].out_channels == 16 and twin.features[0].out_channels == 15


def test_a_cut_that_breaks_the_network_is_undone(resnet, monkeypatch):
    """The pruned network must still run on the traced input; if not, nothing changed."""
    import pl_pruning.pruning.surgery as surgery

    def corrupt(*args, **kwargs):  # as a faulty coupling rule would leave it
        resnet.layer3[0].conv2.weight = nn.Parameter(torch.zeros(5, 5, 3, 3))

    monkeypatch.setattr(surgery, "apply_compensation", corrupt)
    x = inputs()
    before = state_of(resnet)
    with pytest.raises(RuntimeError, match="no longer runs.*undone"):
        prune_filters(resnet, {"layer1.0.conv1": [0, 1]}, x)
    assert_untouched(resnet, before)


class GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)  # grouped
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.relu(self.conv3(x)).mean((2, 3)))


def test_grouped_convolutions_are_left_whole():
    net = GroupedNet().eval()
    x = inputs()
    assert [g.convs for g in pruning_groups(net, x)] == [("conv3",)]
    before = state_of(net)
    with pytest.raises(PlPruningError, match=r"grouped convolution 'conv2' \(groups=4\)"):
        prune_filters(net, {"conv1": [0]}, x)
    assert_untouched(net, before)
    prune_filters(net, {"conv3": [0, 5]}, x)
    assert net.conv3.out_channels == 10 and net(x).shape == (2, 10)
