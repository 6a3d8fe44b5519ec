"""The model zoo: literature figures, forward and backward of every model, bad input."""

import pytest
import torch

from pl_pruning import PlPruningError, build_model, measure_cost
from pl_pruning.models import model_spec

# Li et al. 2017 (Pruning Filters for Efficient ConvNets), CIFAR-10 VGG-16:
# 3.13e8 FLOPs (MACs); 14.7 M parameters with the single 512-to-10 head we use.
VGG16_MACS, VGG16_PARAMS = 313e6, 14.7e6
# He et al. 2016: ResNet-56 on CIFAR-10 has 0.85 M parameters and ~125 M MACs.
RESNET56_MACS, RESNET56_PARAMS = 125e6, 0.85e6


def test_vgg16_matches_literature():
    cost = measure_cost(build_model("vgg16"), torch.zeros(2, 3, 32, 32), latency=False)
    assert abs(cost.macs - VGG16_MACS) / VGG16_MACS < 0.01
    assert abs(cost.params - VGG16_PARAMS) / VGG16_PARAMS < 0.01


def test_resnet56_matches_literature():
    cost = measure_cost(build_model("resnet56"), torch.zeros(1, 3, 32, 32), latency=False)
    assert abs(cost.macs - RESNET56_MACS) / RESNET56_MACS < 0.01
    assert abs(cost.params - RESNET56_PARAMS) / RESNET56_PARAMS < 0.01


def test_width_multiplier_scales_cost():
    full = measure_cost(build_model("vgg16"), torch.zeros(1, 3, 32, 32), latency=False)
    half = measure_cost(build_model("vgg16", width=0.5), torch.zeros(1, 3, 32, 32), latency=False)
    # Convolutions scale with width squared (the first with width); about 4x fewer MACs.
    assert 3.5 < full.macs / half.macs < 4.1


@pytest.mark.parametrize(
    "name, in_channels, size",
    [("vgg11", 3, 32), ("vgg13", 3, 32), ("vgg16", 3, 32), ("vgg19", 3, 32),
     ("resnet20", 3, 32), ("resnet32", 3, 32), ("resnet56", 3, 32), ("resnet110", 3, 32),
     ("small_cnn", 1, 8), ("torchvision.resnet18", 3, 32), ("torchvision.mobilenet_v2", 3, 32)],
)
def test_forward_backward(name, in_channels, size):
    width = 0.25 if name.startswith(("vgg", "resnet")) else 1.0
    net = build_model(name, num_classes=7, in_channels=in_channels, width=width)
    x = torch.randn(2, in_channels, size, size)
    out = net(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert model_spec(net)["name"] == name


def test_unknown_model_names_choices():
    with pytest.raises(PlPruningError, match=r"unknown model name 'vgg17'.*vgg16.*resnet56"):
        build_model("vgg17")


def test_unknown_torchvision_model():
    with pytest.raises(PlPruningError, match=r"unknown torchvision model 'resnet19'.*resnet18"):
        build_model("torchvision.resnet19")


@pytest.mark.parametrize("width", [0, -0.5, True])
def test_width_must_be_positive(width):
    with pytest.raises(PlPruningError, match=rf"width must be a number > 0, got {width}"):
        build_model("vgg16", width=width)


@pytest.mark.parametrize("num_classes", [0, True, 2.0])
def test_num_classes_must_be_a_positive_integer(num_classes):
    with pytest.raises(PlPruningError, match=rf"num_classes must be an integer >= 1, got {num_classes}"):
        build_model("small_cnn", num_classes=num_classes)


def test_torchvision_rejects_grey_input():
    with pytest.raises(PlPruningError, match="in_channels=1"):
        build_model("torchvision.resnet18", in_channels=1)
