"""A short two-phase run under a 2-process CPU DDP (gloo); every rank saves what it ended with.

    python tests/scripts/ddp_two_phase.py OUT_DIR
"""

import sys
from pathlib import Path

import lightning as L
import torch

from pl_pruning import (
    EntropyStatistics,
    ImageClassifier,
    MaxEntropyFreeze,
    PhaseController,
    build_model,
)
from pl_pruning.data import DigitsDataModule


def main(out: Path) -> None:
    L.seed_everything(0)
    dm = DigitsDataModule(seed=0, batch_size=32)
    model = ImageClassifier(build_model("small_cnn", num_classes=10, in_channels=1, width=0.5),
                            input_shape=(1, 8, 8), lr=0.05, scheduler="none")
    controller = PhaseController(global_step=0.3, layer_step=0.3, max_drop=0.05, max_steps=4, final_epochs=1,
                                 report_dir=str(out))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=30, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0,
                        callbacks=[EntropyStatistics(), controller, MaxEntropyFreeze(0.1)])
    trainer.fit(model, datamodule=dm)
    torch.save({"state_dict": model.state_dict(), "history": controller.history,
                "world_size": trainer.world_size},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
