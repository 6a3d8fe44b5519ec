"""LightningDataModules: ``digits`` (embedded default), ``cifar10``, ``image_folder``, ``synthetic``."""

from pl_pruning.data.base import ClassificationDataModule
from pl_pruning.data.cifar10 import CIFAR10DataModule
from pl_pruning.data.digits import DigitsDataModule
from pl_pruning.data.image_folder import ImageFolderDataModule
from pl_pruning.data.synthetic import SyntheticDataModule

__all__ = [
    "ClassificationDataModule",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
]
