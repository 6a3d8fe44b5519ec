"""A short two-phase run under a 2-process CPU DDP (gloo); every rank saves what it ended with.

    python tests/scripts/ddp_two_phase.py OUT_DIR [FINETUNE_EPOCHS]

With FINETUNE_EPOCHS 0 every step is judged before the first epoch, on BatchNorm statistics
re-estimated in place; each rank also saves its BatchNorm buffers as the first epoch starts.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy

from pl_pruning import (
    EntropyStatistics,
    ImageClassifier,
    MaxEntropyFreeze,
    PhaseController,
    build_model,
)
from pl_pruning.data import DigitsDataModule


class BatchNormAtFirstEpoch(L.Callback):
    """The BatchNorm running statistics as the first training epoch starts."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            self.buffers = {k: v.clone() for k, v in pl_module.state_dict().items() if "running_" in k}


def main(out: Path, finetune_epochs: int = 1) -> None:
    L.seed_everything(0)
    dm = DigitsDataModule(seed=0, batch_size=32)
    model = ImageClassifier(build_model("small_cnn", num_classes=10, in_channels=1, width=0.5),
                            input_shape=(1, 8, 8), lr=0.05, scheduler="none")
    # At once, with DDP's buffer broadcast off (else every forward copies rank 0's BatchNorm
    # statistics over the others' and hides whether the re-estimation is shared).
    at_once = {"finetune_epochs": 0, "max_drop": 0.5, "target_macs": 0.5} if finetune_epochs == 0 else {}
    controller = PhaseController(**{"global_step": 0.3, "layer_step": 0.3, "max_drop": 0.05, "max_steps": 4,
                                    "final_epochs": 1, "report_dir": str(out), **at_once})
    first_epoch = BatchNormAtFirstEpoch()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(broadcast_buffers=not at_once), max_epochs=30, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0,
                        callbacks=[EntropyStatistics(), controller, MaxEntropyFreeze(0.1), first_epoch])
    trainer.fit(model, datamodule=dm)
    torch.save({"state_dict": model.state_dict(), "history": controller.history,
                "world_size": trainer.world_size, "batchnorm_at_first_epoch": first_epoch.buffers},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:3]))
