"""ImageClassifier: optimisers, schedules, metrics, and rebuilding after parameters change."""

import lightning as L
import pytest
import torch
from torch import nn

from pl_pruning import ImageClassifier, PlPruningError, build_model
from pl_pruning.data import SyntheticDataModule


def _trainer(**kw):
    return L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


@pytest.mark.parametrize("optimizer, scheduler", [("sgd", "cosine"), ("adamw", "step"), ("sgd", "none")])
def test_trains_and_logs_metrics(optimizer, scheduler):
    dm = SyntheticDataModule(num_classes=4, input_shape=(1, 8, 8), num_train=64, num_val=32, num_test=32)
    model = ImageClassifier(build_model("small_cnn", num_classes=4, in_channels=1), input_shape=(1, 8, 8),
                            optimizer=optimizer, scheduler=scheduler, lr=0.01)
    trainer = _trainer()
    trainer.fit(model, datamodule=dm)
    for key in ("train_loss", "val_loss", "val_acc"):
        assert key in trainer.callback_metrics
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert 0.0 <= tested["test_acc"] <= 1.0
    assert model.example_input_array.shape == (1, 1, 8, 8)


def test_configure_optimizers_sees_replaced_parameters():
    model = ImageClassifier(build_model("small_cnn", num_classes=3, in_channels=1))
    first = model.configure_optimizers()["optimizer"]
    # Replace a layer (as filter surgery does) and ask again.
    model.net.classifier = nn.Linear(model.net.classifier.in_features, 3)
    second = model.configure_optimizers()["optimizer"]
    new_ids = {id(p) for g in second.param_groups for p in g["params"]}
    assert id(model.net.classifier.weight) in new_ids
    assert id(model.net.classifier.weight) not in {id(p) for g in first.param_groups for p in g["params"]}
    assert isinstance(second, torch.optim.SGD) and second.defaults["nesterov"]


def test_spec_goes_into_hparams_and_rebuilds():
    model = ImageClassifier(build_model("vgg11", num_classes=5, width=0.25))
    assert model.hparams["net"]["name"] == "vgg11"
    rebuilt = ImageClassifier(model.hparams["net"])
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_bad_options_are_named():
    net = build_model("small_cnn", in_channels=1)
    with pytest.raises(PlPruningError, match="unknown optimizer 'adam'; choose one of: sgd, adamw"):
        ImageClassifier(net, optimizer="adam")
    with pytest.raises(PlPruningError, match="unknown scheduler 'linear'"):
        ImageClassifier(net, scheduler="linear")
    for lr in (0, -0.1, True):  # bool is not a number
        with pytest.raises(PlPruningError, match=f"lr must be > 0, got {lr!r}"):
            ImageClassifier(net, lr=lr)
    with pytest.raises(PlPruningError, match="num_classes is required"):
        ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
