"""scikit-learn's bundled 8x8 digits: the embedded default, no download needed."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from pl_pruning.data.base import ClassificationDataModule, split_indices
from pl_pruning.validate import check_fraction

# Mean and standard deviation of the raw pixel values (0..16) over the whole set.
DIGITS_MEAN, DIGITS_STD = 4.884, 6.017


class DigitsDataModule(ClassificationDataModule):
    """1797 grey 8x8 images of 10 digits, split stratified by ``seed``.

    Args:
        val_fraction, test_fraction: shares of the whole set (default 15% each).
        batch_size, eval_batch_size, num_workers, seed: see ``ClassificationDataModule``.
    """

    num_classes = 10
    input_shape = (1, 8, 8)

    def __init__(self, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 batch_size: int = 64, eval_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        check_fraction("val_fraction", val_fraction)
        check_fraction("test_fraction", test_fraction)
        check_fraction("val_fraction + test_fraction", val_fraction + test_fraction)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        digits = load_digits()
        x = (torch.tensor(digits.images, dtype=torch.float32) - DIGITS_MEAN) / DIGITS_STD
        x = x.unsqueeze(1)
        y = torch.tensor(digits.target, dtype=torch.long)
        train_frac = 1.0 - self.val_fraction - self.test_fraction
        train, val, test = split_indices(
            digits.target, [train_frac, self.val_fraction, self.test_fraction], self.seed)
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])
        self.test_set = TensorDataset(x[test], y[test])
