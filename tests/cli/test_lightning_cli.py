"""The callbacks from a LightningCLI YAML, for Lightning users who do not use Hydra: each
class's arguments are the keys of its preset node (``class_path`` + ``init_args``)."""

from __future__ import annotations

import pytest

from pl_pruning import EntropyStatistics, ImageClassifier, MaxEntropyFreeze, PhaseController
from pl_pruning.data import DigitsDataModule

pytest.importorskip("jsonargparse")

CONFIG = """
trainer:
  max_epochs: 3
  logger: false
  enable_progress_bar: false
  enable_checkpointing: false
  default_root_dir: {root}
  callbacks:
    - class_path: pl_pruning.EntropyStatistics
      init_args:
        num_bins: 16
    - class_path: pl_pruning.PhaseController
      init_args:
        criterion: l1
        phases: [global, layerwise]
        target_macs: 0.5
        max_drop: 0.5
        reference: accepted
        finetune_epochs: 0
        fill_budget: true
    - class_path: pl_pruning.MaxEntropyFreeze
      init_args:
        enabled: false
model:
  net: {{name: small_cnn, in_channels: 1}}
  input_shape: [1, 8, 8]
  lr: 0.01
data:
  batch_size: 64
"""


@pytest.mark.slow
def test_the_callbacks_come_from_a_lightning_cli_yaml_and_prune(tmp_path):
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    cli = LightningCLI(ImageClassifier, DigitsDataModule, args=["fit", "--config", str(config)],
                       save_config_kwargs={"overwrite": True})
    callbacks = cli.trainer.callbacks
    stats = next(c for c in callbacks if isinstance(c, EntropyStatistics))
    controller = next(c for c in callbacks if isinstance(c, PhaseController))
    freeze = next(c for c in callbacks if isinstance(c, MaxEntropyFreeze))
    assert stats.num_bins == 16 and controller.criterion_name == "l1" and freeze.enabled is False
    assert controller.phases == ["global", "layerwise"]
    report = controller.report()
    assert report["history"][-1]["phase"] == "final"  # the fit pruned and fine-tuned to its end
    assert report["history"][-1]["macs"] <= 0.5 * report["history"][0]["macs"] + 1
    assert (tmp_path / "pruning_report.json").is_file()
