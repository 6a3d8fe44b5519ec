"""The model zoo: one ``build_model(name, ...)`` for every network the project knows.

Names: ``vgg11`` ``vgg13`` ``vgg16`` ``vgg19`` (CIFAR VGG-BN), ``resnet20`` ``resnet32``
``resnet56`` ``resnet110`` (CIFAR ResNet, option B), ``small_cnn`` (digits), and any
torchvision classification model as ``torchvision.<name>`` (e.g. ``torchvision.resnet18``).

Every network built here carries the arguments that built it in ``net.pl_pruning_spec``,
so a checkpoint can rebuild the original architecture without the caller's help.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pl_pruning.errors import PlPruningError, choice_error
from pl_pruning.models.resnet_cifar import RESNET_DEPTHS, CifarResNet
from pl_pruning.models.small_cnn import SmallCNN
from pl_pruning.models.vgg import VGG, VGG_LAYOUTS
from pl_pruning.validate import check_int, is_number

TORCHVISION_PREFIX = "torchvision."
SPEC_ATTR = "pl_pruning_spec"


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def available_models() -> list[str]:
    """Our own names, then a pattern for torchvision's."""
    return [*VGG_LAYOUTS, *RESNET_DEPTHS, "small_cnn", TORCHVISION_PREFIX + "<name>"]


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                **kwargs: Any) -> nn.Module:
    """Build a network by name.

    Args:
        name: one of :func:`available_models` (``torchvision.<name>`` for torchvision's).
        num_classes: outputs of the classifier.
        in_channels: channels of the input images (torchvision models take 3).
        width: channel multiplier for our own networks (> 0); torchvision models take 1.0.
        kwargs: passed on to torchvision's builder (for example ``weights``).

    Raises:
        PlPruningError: unknown name, ``width <= 0``, ``num_classes < 1``, or an option
            the chosen family does not support.
    """
    if not is_number(width) or width <= 0:  # bool is not a number
        raise PlPruningError(f"width must be a number > 0, got {width!r}")
    check_int("num_classes", num_classes, 1)
    if name in VGG_LAYOUTS:
        net: nn.Module = VGG(VGG_LAYOUTS[name], num_classes, in_channels, width)
    elif name in RESNET_DEPTHS:
        net = CifarResNet(RESNET_DEPTHS[name], num_classes, in_channels, width)
    elif name == "small_cnn":
        net = SmallCNN(num_classes, in_channels, width)
    elif name.startswith(TORCHVISION_PREFIX):
        net = _build_torchvision(name[len(TORCHVISION_PREFIX):], num_classes, in_channels, width,
                                 **kwargs)
    else:
        raise choice_error("model name", name, available_models())
    if kwargs and not name.startswith(TORCHVISION_PREFIX):
        raise PlPruningError(f"model {name!r} takes no extra options, got {sorted(kwargs)}")
    setattr(net, SPEC_ATTR, dict(name=name, num_classes=num_classes, in_channels=in_channels,
                                 width=width, **kwargs))
    return net


def _build_torchvision(name: str, num_classes: int, in_channels: int, width: float,
                       **kwargs: Any) -> nn.Module:
    import torchvision

    names = _torchvision_names()
    if name not in names:
        raise choice_error("torchvision model", name, names)
    if width != 1.0:
        raise PlPruningError(f"torchvision models take width=1.0 only, got width={width!r}")
    if in_channels != 3:
        raise PlPruningError(
            f"torchvision models take 3 input channels, got in_channels={in_channels}; "
            "use an RGB data set or one of our own models"
        )
    return torchvision.models.get_model(name, num_classes=num_classes, **kwargs)


def model_spec(net: nn.Module) -> dict[str, Any] | None:
    """The arguments that built ``net`` with :func:`build_model`, if it was built there."""
    spec = getattr(net, SPEC_ATTR, None)
    return dict(spec) if spec is not None else None


__all__ = ["build_model", "available_models", "model_spec", "VGG", "CifarResNet", "SmallCNN"]
