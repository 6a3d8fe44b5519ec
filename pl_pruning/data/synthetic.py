"""Random tensors for tests: class-dependent patterns plus noise, fixed by ``seed``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from pl_pruning.data.base import ClassificationDataModule
from pl_pruning.errors import PlPruningError


class SyntheticDataModule(ClassificationDataModule):
    """``num_samples`` per split of shape ``input_shape``; learnable, since every class
    adds its own fixed pattern to Gaussian noise (``noise`` sets how hard).
    """

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
                 num_train: int = 256, num_val: int = 64, num_test: int = 64,
                 noise: float = 1.0, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if num_classes < 2:
            raise PlPruningError(f"num_classes must be >= 2, got {num_classes}")
        if len(input_shape) != 3:
            raise PlPruningError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        self.num_classes = num_classes
        self.input_shape = tuple(int(s) for s in input_shape)
        self.sizes = (num_train, num_val, num_test)
        self.noise = noise

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        gen = torch.Generator().manual_seed(self.seed)
        patterns = torch.randn(self.num_classes, *self.input_shape, generator=gen)
        sets = []
        for n in self.sizes:
            y = torch.randint(0, self.num_classes, (n,), generator=gen)
            x = patterns[y] + self.noise * torch.randn(n, *self.input_shape, generator=gen)
            sets.append(TensorDataset(x, y))
        self.train_set, self.val_set, self.test_set = sets
