"""A network whose every prunable convolution is coupled with a grouped convolution: the
dependency graph cannot cut it, so a pruning fit can remove nothing (importable by the
app as ``model._target_=grouped_net.grouped_cnn``)."""

from torch import nn


def grouped_cnn(name: str = "grouped_cnn", num_classes: int = 10, in_channels: int = 1,
                width: float = 1.0) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
