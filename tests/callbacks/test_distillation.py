"""Distillation: the dense network's soft targets join the loss while the controller fine-tunes."""

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from pruning_helpers import trained_digits_classifier, trainer
from torch import nn

from pl_pruning import Distillation, PhaseController, PlPruningError
from pl_pruning.callbacks.distillation import distillation_loss


@pytest.fixture(scope="module")
def digits_model():
    return trained_digits_classifier(epochs=4)


def test_the_loss_is_zero_on_the_teachers_logits_and_pulls_towards_them():
    teacher = torch.randn(8, 10)
    assert distillation_loss(teacher, teacher, 4.0).abs() < 1e-6
    student = torch.randn(8, 10, requires_grad=True)
    loss = distillation_loss(student, teacher, 4.0)
    loss.backward()
    assert loss > 0
    moved = (student - 0.5 * student.grad).detach()
    assert distillation_loss(moved, teacher, 4.0) < loss


def test_bad_settings_are_named():
    for kwargs, name in (({"weight": 0}, "weight"), ({"temperature": -1}, "temperature"),
                         ({"enabled": "yes"}, "enabled")):
        with pytest.raises(PlPruningError, match=name):
            Distillation(**kwargs)


class Losses(L.Callback):
    """The loss each backward pass receives, and the training step's own loss."""

    def __init__(self, controller):
        self.controller, self.rows = controller, []

    def on_before_backward(self, trainer, pl_module, loss):
        self.backward = float(loss.detach())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((self.controller.is_finetuning, self.backward, float(outputs["loss"])))


def test_while_fine_tuning_the_dense_teacher_adds_its_loss(digits_model, tmp_path):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    dense = copy.deepcopy(model.state_dict())
    controller = PhaseController(criterion="l1", phases=["global"], max_steps=2, final_epochs=1, max_drop=0.5)
    distill, losses = Distillation(weight=2.0), Losses(controller)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, monitor=None)
    trainer([controller, distill, losses, ckpt], max_epochs=4).fit(model, datamodule=dm)

    assert controller.run.surgeries >= 1
    tuned = [(b, own) for finetuning, b, own in losses.rows if finetuning]
    assert tuned and all(b > own for b, own in tuned)  # the soft-target term, positive after a surgery
    # the teacher is the dense network, untouched by surgery and training, and saved for a resume
    assert all(torch.equal(distill.teacher.state_dict()[k], v) for k, v in dense.items())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    teacher = next(v["teacher"] for k, v in saved.items() if k.startswith("Distillation"))
    assert all(torch.equal(teacher[k], v) for k, v in dense.items())
    assert teacher["net.features.0.weight"].shape != model.state_dict()["net.features.0.weight"].shape


def test_off_it_changes_nothing(digits_model):
    results = []
    for distill in (Distillation(enabled=False), None):
        model = copy.deepcopy(digits_model[0])
        L.seed_everything(0)
        controller = PhaseController(criterion="l1", phases=["global"], max_steps=1, final_epochs=1, max_drop=0.5)
        trainer([c for c in (controller, distill) if c], max_epochs=2).fit(model, datamodule=digits_model[1])
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


class CallsItsBody(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, 10))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, _):
        return nn.functional.cross_entropy(self.body(batch[0]), batch[1])  # not self(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_training_step_that_bypasses_forward_is_named(digits_model):
    with pytest.raises(PlPruningError, match="CallsItsBody.training_step"):
        trainer([Distillation()], max_epochs=1, limit_train_batches=1).fit(
            CallsItsBody(), train_dataloaders=digits_model[1].train_dataloader())
