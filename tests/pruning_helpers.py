"""Small, fast set-ups shared by the pruning and scoring tests."""

from __future__ import annotations

import tempfile

import lightning as L
import torch

from pl_pruning import ImageClassifier, build_model
from pl_pruning.data import DigitsDataModule
from pl_pruning.statistics import LayerStatistics


def trainer(callbacks=(), max_epochs: int = 100, **kw) -> L.Trainer:
    kw.setdefault("logger", False)
    kw.setdefault("default_root_dir", tempfile.mkdtemp(prefix="pl_pruning_test_"))  # reports go here
    from lightning.pytorch.callbacks import ModelCheckpoint

    kw.setdefault("enable_checkpointing", any(isinstance(c, ModelCheckpoint) for c in callbacks))
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, callbacks=list(callbacks),
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


def trained_digits_classifier(epochs: int = 6, seed: int = 0, **optim) -> tuple[ImageClassifier, DigitsDataModule]:
    """A small CNN trained on digits (>= 95% validation accuracy in a few seconds)."""
    L.seed_everything(seed)
    dm = DigitsDataModule(seed=seed)
    model = ImageClassifier(build_model("small_cnn", num_classes=10, in_channels=1), input_shape=(1, 8, 8),
                            lr=0.05)
    trainer(max_epochs=epochs).fit(model, datamodule=dm)
    model.hparams.update(lr=0.01, scheduler="none", **optim)
    return model, dm


def layer_stats(counts: torch.Tensor) -> LayerStatistics:
    """Statistics holding only the given histogram ``counts`` (filters x classes x bins)."""
    f = counts.shape[0]
    return LayerStatistics(counts=counts, activation_sum=torch.zeros(f, dtype=torch.float64),
                           zeros=torch.zeros(f, dtype=torch.float64),
                           elements=torch.ones(f, dtype=torch.float64),
                           low=torch.zeros(f), high=torch.ones(f))
