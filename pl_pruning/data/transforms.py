"""The standard CIFAR transforms: random crop with padding 4 and horizontal flip for
training; normalisation with the CIFAR-10 channel statistics everywhere."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cifar_transforms(image_size: int = 32, augment: bool = True,
                     mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                     ) -> tuple[T.Compose, T.Compose]:
    """``(train_transform, eval_transform)``; images are resized only if not already square
    of ``image_size``."""
    resize = [T.Resize(image_size), T.CenterCrop(image_size)]
    normalise = [T.ToTensor(), T.Normalize(mean, std)]
    train = resize + ([T.RandomCrop(image_size, padding=4), T.RandomHorizontalFlip()] if augment else [])
    return T.Compose(train + normalise), T.Compose(resize + normalise)
