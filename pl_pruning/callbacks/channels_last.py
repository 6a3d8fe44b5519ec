"""ChannelsLast: keep the module's 4-D weights in ``channels_last`` memory format."""

from __future__ import annotations

import lightning as L
import torch


class ChannelsLast(L.Callback):
    """Store every 4-D parameter and buffer of the module in ``torch.channels_last`` format.

    oneDNN's convolutions run faster on CPU when their weights are channels-last: the inputs
    need not be converted, a convolution follows its weight's format
    (``benchmarks/train_speed/``: 1.3x on VGG-16-BN x0.25's training step at batch 128, 2.3x
    together with ``Trainer(precision="bf16-mixed")``). Surgery and rollback create new
    weights in the default format, so the module is converted again at the start of every
    epoch of every loop (a no-op for tensors already in that format). Values are unchanged:
    only the strides are; checkpoints and ``state_dict`` are the same tensors.

    Example::

        trainer = L.Trainer(precision="bf16-mixed", callbacks=[ChannelsLast(), PhaseController(...)])
    """

    @staticmethod
    def _convert(pl_module: L.LightningModule) -> None:
        # Validation and test run under inference mode: tensors made there could never be
        # trained again (surgery's tracing and the next fit need them in autograd).
        with torch.inference_mode(False), torch.no_grad():
            pl_module.to(memory_format=torch.channels_last)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)
