"""Helpers for the statistics, scoring and EntropyStatistics tests: hand-made networks, an
independent recorder of tap activations, NumPy/SciPy/scikit-learn references, and the
set-up the DDP script (``tests/scripts/stats_ddp.py``) and its test share.

Tests in other folders import it with ``sys.path.insert(0, str(STATS_TESTS))``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import mutual_info_score
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pl_pruning import ImageClassifier, build_model  # noqa: E402
from pl_pruning.callbacks import EntropyStatistics  # noqa: E402

DDP_SAMPLES = 128
DDP_BATCH_PER_RANK = 16
DDP_CALIBRATION = 2


# ---------------------------------------------------------------- hand-made network


class HandMadeNet(nn.Module):
    """A 1x1 convolution with fixed filters, then ReLU, global pool and a linear head.

    Input channel 0 holds ``class + 1`` everywhere, channel 1 Gaussian noise, channel 2 a
    mix. Filters: 0 = channel 0 (a deterministic function of the class), 1 = channel 1
    (noise, independent of the class), 2 = nothing (dead: always 0), 3 = channel 0 + noise.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes)
        w = torch.zeros(4, 3, 1, 1)
        w[0, 0] = 1.0
        w[1, 1] = 1.0
        w[3, 0], w[3, 1] = 1.0, 1.0
        with torch.no_grad():
            self.conv.weight.copy_(w)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def hand_made_data(num_classes: int = 4, per_class: int = 64, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    n = y.numel()
    x = torch.zeros(n, 3, 4, 4)
    x[:, 0] = (y + 1).float()[:, None, None]
    x[:, 1] = 3.0 + torch.randn(n, generator=gen)[:, None, None]  # positive: ReLU keeps it
    x[:, 2] = torch.randn(n, 4, 4, generator=gen)
    return TensorDataset(x, y)


def loader(dataset, batch_size: int = 32, shuffle: bool = False, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen)


def trainer(callbacks, **kwargs) -> L.Trainer:
    opts = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False)
    opts.update(kwargs)
    return L.Trainer(callbacks=callbacks, **opts)


def validate(model, data, callbacks, **kwargs) -> L.Trainer:
    t = trainer(callbacks, **kwargs)
    t.validate(model, data, verbose=False)
    return t


# ---------------------------------------------------------------- independent recorder


class Recorder(L.Callback):
    """Records, at given modules, every validation sample's pooled output, the zero and
    element counts of the full map, and the batch labels, with its own hooks."""

    def __init__(self, modules: dict[str, str], transform: dict[str, object] | None = None) -> None:
        self.modules = modules  # layer -> module name to hook
        self.transform = transform or {}
        self.pooled: dict[str, list[np.ndarray]] = {k: [] for k in modules}
        self.zeros: dict[str, np.ndarray] = {}
        self.elements: dict[str, int] = {}
        self.labels: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []
        self._handles = []
        self._on = self._in_step = False

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self._on = True
        for layer, name in self.modules.items():
            self._handles.append(pl_module.get_submodule(name).register_forward_hook(
                self._hook(layer)))
        self._handles.append(pl_module.register_forward_hook(self._out_hook))

    def _hook(self, layer):
        def hook(module, inputs, output):
            if not self._in_step:
                return
            x = output.detach()
            fn = self.transform.get(layer)
            if fn is not None:
                x = fn(x)
            # the documented pooling: float32 sum over H x W divided by H * W
            self.pooled[layer].append((x.sum((2, 3), dtype=torch.float32) / (x.shape[2] * x.shape[3]))
                                      .numpy().copy())
            arr = x.numpy()
            z = (arr == 0).sum(axis=(0, 2, 3))
            self.zeros[layer] = self.zeros.get(layer, 0) + z
            self.elements[layer] = self.elements.get(layer, 0) + arr.shape[0] * arr.shape[2] * arr.shape[3]
        return hook

    def _out_hook(self, module, inputs, output):
        if self._in_step:
            self.outputs.append(output.detach().numpy().copy())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._in_step = self._on  # only the validation steps' forward passes
        if self._on and isinstance(batch, (list, tuple)) and len(batch) > 1:
            self.labels.append(batch[1].numpy().copy())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._in_step = False

    def on_validation_epoch_end(self, trainer, pl_module):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._on = False

    def values(self, layer: str) -> np.ndarray:
        return np.concatenate(self.pooled[layer])

    def batches(self, layer: str) -> list[np.ndarray]:
        return self.pooled[layer]

    def all_labels(self) -> np.ndarray:
        return np.concatenate(self.labels)


# ---------------------------------------------------------------- references


def reference_bins(values: np.ndarray, low: np.ndarray, high: np.ndarray, num_bins: int) -> np.ndarray:
    """The documented binning rule in NumPy float32: equal-width bins from low to high,
    values outside go to the end bins."""
    values = values.astype(np.float32)
    low = np.asarray(low, dtype=np.float32)
    high = np.asarray(high, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(high > low, np.float32(num_bins) / (high - low), np.float32(0)).astype(np.float32)
    scaled = ((values - low) * inv).astype(np.float32)
    return np.clip(scaled, 0, num_bins - 1).astype(np.int64)


def reference_counts(bins: np.ndarray, labels: np.ndarray, num_bins: int, num_classes: int) -> np.ndarray:
    """[filters, bins, classes] counts by plain loops over filters (np.add.at)."""
    out = np.zeros((bins.shape[1], num_bins, num_classes), dtype=np.int64)
    for f in range(bins.shape[1]):
        np.add.at(out[f], (bins[:, f], labels), 1)
    return out


def reference_entropy(a: np.ndarray) -> float:
    """H(A) of discrete samples with scipy (nats)."""
    _, counts = np.unique(a, return_counts=True)
    return float(scipy_entropy(counts))


def reference_conditional_entropy(a: np.ndarray, y: np.ndarray) -> float:
    """sum_y p(y) H(A | Y=y), each H with scipy (nats)."""
    total = 0.0
    for cls in np.unique(y):
        mask = y == cls
        total += mask.mean() * reference_entropy(a[mask])
    return total


def reference_mutual_information(a: np.ndarray, y: np.ndarray) -> float:
    return float(mutual_info_score(y, a))


# ---------------------------------------------------------------- DDP script


def ddp_model() -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(build_model("small_cnn", num_classes=4, in_channels=1, width=0.25))


def ddp_data(batch_size: int) -> DataLoader:
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(DDP_SAMPLES) % 4
    x = torch.randn(DDP_SAMPLES, 1, 8, 8, generator=gen) + y[:, None, None, None].float() * 0.5
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def ddp_collectors() -> list[EntropyStatistics]:
    return [EntropyStatistics(num_bins=16, calibration_batches=DDP_CALIBRATION),
            EntropyStatistics(num_bins=8, condition_on="prediction", calibration_batches=100)]


def collected(stats: EntropyStatistics) -> dict:
    return {name: {"counts": s.counts.clone(), "activation_sum": s.activation_sum.clone(),
                   "zeros": s.zeros.clone(), "elements": s.elements.clone(),
                   "low": s.low.clone(), "high": s.high.clone()}
            for name, s in stats.statistics().items()}
