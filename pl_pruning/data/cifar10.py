"""torchvision's CIFAR-10, with the standard augmentation; validation split from train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Subset
from torchvision.datasets import CIFAR10

from pl_pruning.data.base import ClassificationDataModule, split_indices
from pl_pruning.data.transforms import cifar_transforms
from pl_pruning.errors import PlPruningError
from pl_pruning.validate import check_fraction


class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10 through ``torchvision.datasets.CIFAR10``.

    Args:
        root: folder holding (or to receive) ``cifar-10-batches-py``.
        download: fetch the archive when missing (needs the internet).
        val_fraction: share of the 50 000 training images held out for validation
            (stratified, fixed by ``seed``; evaluated without augmentation).
        augment: random crop (padding 4) and horizontal flip on the training split.
    """

    num_classes = 10
    input_shape = (3, 32, 32)

    def __init__(self, root: str = "data/cifar10", download: bool = False,
                 val_fraction: float = 0.1, augment: bool = True, batch_size: int = 128,
                 eval_batch_size: int | None = None, num_workers: int = 2, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        check_fraction("val_fraction", val_fraction)
        self.root = Path(root).expanduser()
        self.download = download
        self.val_fraction = val_fraction
        self.train_tf, self.eval_tf = cifar_transforms(32, augment)

    def _check_root(self) -> None:
        if not self.download and not (self.root / "cifar-10-batches-py").is_dir():
            raise PlPruningError(
                f"CIFAR-10 not found under data.root={str(self.root)!r} (no cifar-10-batches-py "
                "folder); set data.download=true, or use data=image_folder for a folder or .tar.gz")

    def prepare_data(self) -> None:
        self._check_root()
        if self.download:
            CIFAR10(self.root, train=True, download=True)
            CIFAR10(self.root, train=False, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self._check_root()
        train_aug = CIFAR10(self.root, train=True, transform=self.train_tf)
        train_eval = CIFAR10(self.root, train=True, transform=self.eval_tf)
        train_idx, val_idx = split_indices(
            np.asarray(train_aug.targets), [1 - self.val_fraction, self.val_fraction], self.seed)
        self.train_set = Subset(train_aug, train_idx.tolist())
        self.val_set = Subset(train_eval, val_idx.tolist())
        self.test_set = CIFAR10(self.root, train=False, transform=self.eval_tf)
