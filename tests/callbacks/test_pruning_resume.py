"""A pruning run stopped mid-Phase-I resumes from its checkpoint where it stopped."""

import copy

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from pruning_helpers import trained_digits_classifier, trainer
from torch import nn

from pl_pruning import EntropyStatistics, ImageClassifier, MaxEntropyFreeze, PhaseController


class Crash(L.Callback):
    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at_epoch:
            raise RuntimeError("simulated crash")


def callbacks(ckpt_dir, *extra):
    controller = PhaseController(phases=["global", "layerwise"], global_step=0.3, max_drop=0.03,
                                 final_epochs=1, max_steps=4)
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=1, monitor=None)
    return controller, [EntropyStatistics(), controller, MaxEntropyFreeze(0.1), ckpt, *extra]


def channels(model):
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.slow
def test_resume_mid_phase_one_ends_like_an_uninterrupted_run(tmp_path):
    start, dm = trained_digits_classifier(epochs=6)

    whole_model = copy.deepcopy(start)
    whole, cbs = callbacks(tmp_path / "whole")
    trainer(cbs, max_epochs=60).fit(whole_model, datamodule=dm)

    crashed_model = copy.deepcopy(start)
    crashed, cbs = callbacks(tmp_path / "crashed", Crash(at_epoch=3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(cbs, max_epochs=60).fit(crashed_model, datamodule=dm)
    assert crashed.state == "global" and crashed.run.surgeries >= 2  # stopped inside Phase I
    steps_before = len(crashed.history)

    # A new process would build the ORIGINAL, unpruned module and resume from the file.
    fresh = ImageClassifier(start.hparams["net"], input_shape=(1, 8, 8), lr=0.01, scheduler="none")
    resumed, cbs = callbacks(tmp_path / "crashed")
    trainer(cbs, max_epochs=60).fit(fresh, datamodule=dm, ckpt_path=str(tmp_path / "crashed" / "last.ckpt"))

    assert resumed.history[:steps_before] == crashed.history[:steps_before]  # continued, not restarted
    assert sum(e["phase"] == "baseline" for e in resumed.history) == 1
    assert resumed.state == "done"
    assert [(e["phase"], e["layer"], e["accepted"]) for e in resumed.history] == \
        [(e["phase"], e["layer"], e["accepted"]) for e in whole.history]
    assert channels(fresh) == channels(whole_model)
