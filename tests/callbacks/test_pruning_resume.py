"""A pruning run stopped mid-Phase-I resumes from its checkpoint where it stopped."""

import copy

import lightning as L
import pytest
import torch
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


class UserModule(L.LightningModule):
    """A user's own LightningModule: nothing in it knows about pruning (not even an
    example_input_array: the controller traces with the first validation batch)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def test_a_users_own_module_resumes_after_a_surgery(tmp_path):
    """The callbacks carry the pruned shapes themselves: a fresh, unpruned module of the
    user's class resumes with fit(ckpt_path=...) from a checkpoint written after a surgery.
    Crashed at every epoch in turn and resumed each time, the run ends bit-identical."""
    from pl_pruning.data import DigitsDataModule

    dm = DigitsDataModule()
    L.seed_everything(0)
    start = UserModule()
    trainer(max_epochs=4).fit(start, datamodule=dm)

    def run(folder, model, *extra, ckpt_path=None):
        controller = PhaseController(criterion="l1", phases=["global"], max_drop=0.5, max_steps=3, final_epochs=1)
        ckpt = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=1, monitor=None)
        trainer([controller, ckpt, *extra], max_epochs=10).fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return controller

    whole_model = copy.deepcopy(start)
    whole = run(tmp_path / "whole", whole_model)
    last = tmp_path / "crashed" / "last.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "crashed", copy.deepcopy(start), Crash(at_epoch=1))
    at = 2
    while True:  # crashed at the start of every epoch in turn, each time resumed into a fresh module
        fresh = UserModule()  # unpruned: 16 and 32 filters
        try:
            resumed = run(tmp_path / "crashed", fresh, Crash(at_epoch=at), ckpt_path=str(last))
            break
        except RuntimeError as crash:
            assert "simulated crash" in str(crash)
            at += 1
    assert at >= 4, f"the run ended after {at} epochs: too few to test"
    assert channels(fresh) == channels(whole_model) != {"body.0": 16, "body.3": 32}
    assert [(e["phase"], e["macs"], e["accepted"]) for e in resumed.history] == \
        [(e["phase"], e["macs"], e["accepted"]) for e in whole.history]
    for key, value in whole_model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
