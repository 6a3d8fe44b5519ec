"""Bias compensation: removed channels' mean contributions folded into the consumers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pl_pruning.models import build_model
from pl_pruning.pruning.surgery import prune_filters, pruning_groups

ACTIVATIONS = (nn.ReLU, nn.ReLU6)


def batch(n: int = 4, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def randomise_batchnorms(model: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    """Trained-looking BatchNorms: random affine parameters, running statistics measured
    on ``x`` (so activations stay of order one through deep networks)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(n, generator=gen))
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(x)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


def tapped_means(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our own collector: for every conv followed (in its container) by a BatchNorm and an
    activation module, the activation's output averaged over samples and H x W. An
    activation module called twice (torchvision's BasicBlock reuses ``relu``) is read at
    its first call, the one right after that BatchNorm."""
    taps, hooks, means = {}, [], {}
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (name, child) in enumerate(children[:-2]):
            if (isinstance(child, nn.Conv2d) and isinstance(children[i + 1][1], nn.BatchNorm2d)
                    and isinstance(children[i + 2][1], ACTIVATIONS)):
                taps[children[i + 2][1]] = f"{parent_name}.{name}".lstrip(".")
    def record(conv: str, out: torch.Tensor) -> None:
        if conv not in means:
            means[conv] = out.mean(dim=(0, 2, 3)).detach()

    for act, conv in taps.items():
        hooks.append(act.register_forward_hook(lambda m, i, o, conv=conv: record(conv, o)))
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return means


def scale_outputs_to_one(model: nn.Module, x: torch.Tensor) -> None:
    """Deep random networks give logits in the hundreds; float32 then cannot show 1e-5.
    Scale the classifier so that the logits are of order one."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        scale = model(x).abs().max()
        head.weight /= scale
        head.bias /= scale


def make_constant(model: nn.Module, group, idxs: list[int], value: float) -> None:
    """Filters ``idxs`` of every layer of ``group`` give a constant: zero weights, and the
    BatchNorm after them outputs ``value`` (0.0: a dead filter, exactly zero)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in group.layers:
            m = modules[name]
            if isinstance(m, nn.Conv2d):
                m.weight[idxs] = 0.0
                if m.bias is not None:
                    m.bias[idxs] = 0.0
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean[idxs] = 0.0
                m.bias[idxs] = value


@pytest.mark.parametrize("name", ["vgg16", "resnet56", "torchvision.resnet18",
                                  "torchvision.mobilenet_v2"])
def test_dead_filters_removed_leave_outputs_unchanged(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = batch()
    randomise_batchnorms(model, x)
    groups = pruning_groups(model, x)
    plan = {}
    gen = torch.Generator().manual_seed(3)
    for g in groups[::2]:  # every other group: a quarter of its filters dead
        idxs = torch.randperm(g.channels, generator=gen)[: max(1, g.channels // 4)].tolist()
        make_constant(model, g, idxs, 0.0)
        plan[g.root] = idxs
    scale_outputs_to_one(model, x)
    y = model(x)
    assert y.std(dim=0).max() > 1e-2  # the outputs depend on the input: a live network
    means = tapped_means(model, x)
    assert means
    # the test can fail: removing a live filter of the same layers changes the outputs
    live = copy.deepcopy(model)
    root, dead = next(iter(plan.items()))
    prune_filters(live, {root: [next(i for i in range(64) if i not in dead)]}, x)
    assert (live(x) - y).abs().max() > 1e-4

    result = prune_filters(model, plan, x, channel_means=means)
    assert result.filters_removed > 0
    torch.testing.assert_close(model(x), y, rtol=0, atol=1e-5)


def _last_conv_constant_vgg():
    torch.manual_seed(0)
    model = build_model("vgg16").eval()
    x = batch()
    randomise_batchnorms(model, x)
    last = next(g for g in pruning_groups(model, x) if g.root == "features.40")
    make_constant(model, last, [3, 7, 100], 0.8)  # ReLU(0.8) = 0.8: alive, but constant
    return model, x


def test_constant_filters_are_compensated_exactly_where_the_consumer_sees_every_position():
    """features.40's outputs reach the Linear through global average pooling: exact."""
    model, x = _last_conv_constant_vgg()
    y = model(x)
    means = tapped_means(model, x)
    torch.testing.assert_close(means["features.40"][[3, 7, 100]], torch.full((3,), 0.8))
    plain, compensated = copy.deepcopy(model), copy.deepcopy(model)
    prune_filters(plain, {"features.40": [3, 7, 100]}, x)
    result = prune_filters(compensated, {"features.40": [3, 7, 100]}, x, channel_means=means)
    assert result.compensated == ["classifier"]
    assert (plain(x) - y).abs().max() > 1e-2  # removing them without compensation hurts
    torch.testing.assert_close(compensated(x), y, rtol=0, atol=1e-5)


def test_compensate_false_and_missing_means_do_nothing():
    model, x = _last_conv_constant_vgg()
    means = tapped_means(model, x)
    off = copy.deepcopy(model)
    result = prune_filters(off, {"features.40": [3]}, x, channel_means=means, compensate=False)
    assert result.compensated == [] and torch.equal(off.classifier.bias, model.classifier.bias)
    partial = copy.deepcopy(model)
    result = prune_filters(partial, {"features.40": [3]}, x,
                           channel_means={"features.37": means["features.37"]})
    assert result.compensated == []
    assert "no channel_means entry for 'features.40'" in result.uncompensated["classifier"]


def test_depthwise_channel_compensated_through_batchnorm_running_mean():
    """MobileNetV2: a depthwise filter's channel reaches a 1x1 projection without bias,
    followed by a BatchNorm: the running mean absorbs it, exactly."""
    torch.manual_seed(0)
    model = build_model("torchvision.mobilenet_v2").eval()
    x = batch()
    randomise_batchnorms(model, x)
    group = next(g for g in pruning_groups(model, x) if "features.5.conv.1.0" in g.convs)
    assert group.convs == ("features.5.conv.0.0", "features.5.conv.1.0")
    make_constant(model, group, [2, 11], 0.0)
    with torch.no_grad():  # the depthwise BN gives a constant 0.5; ReLU6 keeps it
        model.features[5].conv[1][1].bias[[2, 11]] = 0.5
    # compared on the features (at 32x32 a random MobileNetV2's logits barely depend on them)
    features = lambda net: net.features[:8](x)  # noqa: E731
    y = features(model)
    means = tapped_means(model, x)
    torch.testing.assert_close(means["features.5.conv.1.0"][[2, 11]], torch.full((2,), 0.5))
    bn = model.features[5].conv[3]
    rm_before = bn.running_mean.clone()
    plain = copy.deepcopy(model)
    prune_filters(plain, {"features.5.conv.1.0": [2, 11]}, x)
    result = prune_filters(model, {"features.5.conv.1.0": [2, 11]}, x, channel_means=means)
    assert result.removed["features.5.conv.0.0"] == [2, 11]  # the expansion goes too
    assert result.compensated == ["features.5.conv.2"]
    assert not torch.equal(bn.running_mean, rm_before)
    assert (features(plain) - y).abs().max() > 1e-2
    torch.testing.assert_close(features(model), y, rtol=0, atol=1e-5)


class FlattenNet(nn.Module):
    """A 1x1 consumer without bias or BatchNorm, and a Linear after a flatten of 4x4 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 6, 1, bias=False)
        self.conv3 = nn.Conv2d(6, 5, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(5)
        self.act3 = nn.ReLU()
        self.fc1 = nn.Linear(5 * 4 * 4, 7)
        self.fc = nn.Linear(7, 3)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act3(self.bn3(self.conv3(torch.relu(self.conv2(x)))))
        return self.fc(torch.relu(self.fc1(x.flatten(1))))


def test_new_bias_and_flatten_columns():
    torch.manual_seed(0)
    net = FlattenNet().eval()
    x = batch(c=3, size=4)
    randomise_batchnorms(net, x)
    with torch.no_grad():
        net.conv1.weight[[2, 5]] = 0.0  # constant after BN + ReLU, non-zero
        net.bn1.bias[[2, 5]] = 0.4
        net.conv3.weight[1] = 0.0
        net.conv3.bias[1] = 0.3
        net.bn3.bias[1] = 0.6
    y = net(x)
    means = tapped_means(net, x)
    assert set(means) == {"conv1", "conv3"}
    result = prune_filters(net, {"conv1": [2, 5], "conv3": [1]}, x, channel_means=means)
    assert sorted(result.compensated) == ["conv2", "fc1"]
    assert result.removed_inputs["fc1"] == list(range(16, 32))  # channel 1's 4x4 block
    assert net.conv2.bias is not None and net.conv2.bias.shape == (6,)  # created
    assert result.parameter_changes["conv2.bias"].old is None
    torch.testing.assert_close(net(x), y, rtol=0, atol=1e-5)


def test_residual_stream_consumers_are_left_alone_and_padding_borders_are_approximate():
    """ResNet-56's first residual stream made constant (0.5) in two channels. The first
    block's conv1 reads the stem's ReLU directly: compensated (through its BatchNorm's
    running mean), exactly inside the image and approximately at the zero-padded border.
    Later blocks read the stream after additions: not compensated, and reported so."""
    torch.manual_seed(0)
    model = build_model("resnet56").eval()
    x = batch()
    randomise_batchnorms(model, x)
    stream = next(g for g in pruning_groups(model, x) if g.root == "conv1")
    make_constant(model, stream, [4, 9], 0.0)
    with torch.no_grad():
        model.bn1.bias[[4, 9]] = 0.5  # the stem gives 0.5; the identities carry it on

    def first_block_bn1(net: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            stem = net.relu(net.bn1(net.conv1(x)))
            return net.layer1[0].bn1(net.layer1[0].conv1(stem))

    reference = first_block_bn1(model)
    means = tapped_means(model, x)
    torch.testing.assert_close(means["conv1"][[4, 9]], torch.full((2,), 0.5))
    plain = copy.deepcopy(model)
    prune_filters(plain, {"conv1": [4, 9]}, x)
    result = prune_filters(model, {"conv1": [4, 9]}, x, channel_means=means)
    assert "layer1.0.conv1" in result.compensated
    for consumer in ("layer1.1.conv1", "layer1.8.conv1", "layer2.0.conv1", "layer2.0.shortcut.0"):
        assert "residual stream" in result.uncompensated[consumer]
    got, without = first_block_bn1(model), first_block_bn1(plain)
    inside = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(got[inside], reference[inside], rtol=0, atol=1e-5)
    assert (without[inside] - reference[inside]).abs().max() > 1e-2
    assert (got - reference).abs().max() > 1e-3  # the border: approximate, as documented
