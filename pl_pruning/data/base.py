"""What every data module here shares: split sizes fixed by a seed, loaders, input shape."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pl_pruning.validate import check_int


def split_indices(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Stratified split of ``range(len(labels))`` into parts of the given fractions.

    Every class is shuffled with ``seed`` and cut in the same proportions, so each
    split keeps the class balance; the last part takes the remainder. Each part is
    shuffled too (with the same generator), so a data set stored class by class (an
    image folder) does not give class-sorted validation batches. The result depends only
    on the labels, the fractions and the seed.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        start = 0
        for i, stop in enumerate(bounds):
            stop = len(idx) if i == len(bounds) - 1 else stop
            parts[i].append(idx[start:stop])
            start = stop
    return [rng.permutation(np.concatenate(p)) for p in parts]


def balanced_subset(labels: Sequence[int], per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` samples of every class (all of a class that has fewer)."""
    check_int("samples_per_class", per_class, 1)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


class EpochSeededSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on ``seed`` and the epoch.

    Lightning calls ``set_epoch`` before every training epoch, so a run resumed from a
    checkpoint sees the same batches as one that was never interrupted (a plain
    ``shuffle=True`` draws from the global generator, whose state is not checkpointed).
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=gen).tolist())

    def __len__(self) -> int:
        return self.size


class ClassificationDataModule(L.LightningDataModule):
    """Train / validation / test loaders over datasets that subclasses set in ``setup``.

    Subclasses fill ``self.train_set``, ``self.val_set`` and ``self.test_set`` and
    provide ``num_classes`` and ``input_shape`` (``(C, H, W)``).
    """

    num_classes: int
    input_shape: tuple[int, int, int]

    def __init__(self, batch_size: int = 64, eval_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        sampler = EpochSeededSampler(len(dataset), self.seed) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)
