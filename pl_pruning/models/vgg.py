"""CIFAR-style VGG with BatchNorm (Simonyan & Zisserman 2015, as used by Li et al. 2017).

The head is a single ``Linear(512 * width, num_classes)`` after the last max-pool
(the "network slimming" / Torch-Pruning CIFAR VGG). At width 1.0, 32x32 inputs and
10 classes VGG-16 has 14.73 M parameters and 313.5 M MACs, the figures of the
CIFAR-10 pruning literature for this head.
"""

from __future__ import annotations

from torch import Tensor, nn

# "M" is a 2x2 max-pool; numbers are output channels of 3x3 convolutions.
VGG_LAYOUTS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier, never fewer than one."""
    return max(1, int(round(channels * width)))


class VGG(nn.Module):
    """VGG-BN for small images: ``features`` (conv-BN-ReLU blocks) then ``classifier``."""

    def __init__(self, layout: list[int | str], num_classes: int = 10, in_channels: int = 3,
                 width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = scaled(int(item), width)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        # Global pooling makes the head independent of the input size (a no-op at 32x32).
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))
