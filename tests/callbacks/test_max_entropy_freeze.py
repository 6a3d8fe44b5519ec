"""MaxEntropyFreeze keeps the top-entropy filters bit-identical, whatever the optimizer."""

import copy

import lightning as L
import pytest
import torch
from pruning_helpers import trained_digits_classifier, trainer

from pl_pruning import EntropyStatistics, MaxEntropyFreeze, PlPruningError


class Recorder(L.Callback):
    """Weights at the start and end of every training epoch, and what was frozen."""

    def __init__(self, freeze, stats=None):
        self.freeze, self.stats, self.epochs = freeze, stats, []

    def on_train_epoch_start(self, trainer, pl_module):
        ready = self.stats is not None and self.stats.has_statistics
        self.epochs.append({"frozen": copy.deepcopy(self.freeze.frozen),
                            "start": copy.deepcopy(pl_module.state_dict()),
                            "entropy": self.stats.scores("entropy", normalize="none") if ready else None})

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs[-1]["end"] = copy.deepcopy(pl_module.state_dict())


@pytest.fixture(scope="module")
def digits_model():
    return trained_digits_classifier(epochs=3)


@pytest.mark.parametrize("optim", [
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False},
    {"optimizer": "adamw", "lr": 0.01, "weight_decay": 1e-2},
])
def test_frozen_filters_are_bit_identical(digits_model, optim):
    model, dm = digits_model
    model = copy.deepcopy(model)
    model.hparams.update(optim)
    freeze = MaxEntropyFreeze(fraction=0.25)
    recorder = Recorder(freeze)
    trainer([EntropyStatistics(), freeze, recorder], max_epochs=3).fit(model, datamodule=dm)
    first, *frozen_epochs = recorder.epochs
    assert first["frozen"] == {}  # no statistics yet: nothing frozen in the first epoch
    bn_of = {"net.features.0": "net.features.1", "net.features.3": "net.features.4",
             "net.features.7": "net.features.8"}
    for epoch in frozen_epochs:
        assert set(epoch["frozen"]) == set(bn_of)
        for conv, idx in epoch["frozen"].items():
            n = epoch["start"][f"{conv}.weight"].shape[0]
            assert len(idx) == -(-n // 4)  # ceil(25%)
            rest = torch.ones(n, dtype=torch.bool)
            rest[idx] = False
            for key in (f"{conv}.weight", f"{bn_of[conv]}.weight", f"{bn_of[conv]}.bias"):
                before, after = epoch["start"][key], epoch["end"][key]
                assert torch.equal(before[idx], after[idx]), key  # bit-identical
                assert not torch.equal(before[rest], after[rest]), key  # the others trained


def test_frozen_filters_have_the_highest_entropy(digits_model):
    model, dm = digits_model
    model = copy.deepcopy(model)
    stats, freeze = EntropyStatistics(), MaxEntropyFreeze(fraction=0.1)
    recorder = Recorder(freeze, stats)
    trainer([stats, freeze, recorder], max_epochs=2).fit(model, datamodule=dm)
    epoch = recorder.epochs[1]  # frozen from the statistics of the first validation
    for layer, idx in epoch["frozen"].items():
        scores = epoch["entropy"][layer]
        rest = torch.ones(len(scores), dtype=torch.bool)
        rest[idx] = False
        assert scores[idx].min() >= scores[rest].max()


def test_bad_arguments_are_named():
    for bad in (-0.1, 1.0, 2, True):
        with pytest.raises(PlPruningError, match=rf"fraction must be in \[0, 1\), got {bad}"):
            MaxEntropyFreeze(fraction=bad)
    with pytest.raises(PlPruningError, match="unknown criterion 'entorpy'"):
        MaxEntropyFreeze(criterion="entorpy")
    with pytest.raises(PlPruningError, match="enabled must be true or false, got 1"):
        MaxEntropyFreeze(enabled=1)


def test_without_example_input_array_the_first_batch_finds_the_batchnorms(digits_model):
    model, dm = digits_model
    model = copy.deepcopy(model)
    model.example_input_array = None
    model.hparams.update(optimizer="sgd", lr=0.05, momentum=0.9)
    freeze = MaxEntropyFreeze(fraction=0.25)
    recorder = Recorder(freeze)
    trainer([EntropyStatistics(), freeze, recorder], max_epochs=2).fit(model, datamodule=dm)
    assert freeze._bn_of == {"net.features.0": "net.features.1", "net.features.3": "net.features.4",
                             "net.features.7": "net.features.8"}
    epoch = recorder.epochs[1]
    assert set(epoch["frozen"]) == set(freeze._bn_of)
    for conv, idx in epoch["frozen"].items():
        bn = freeze._bn_of[conv]
        for key in (f"{conv}.weight", f"{bn}.weight", f"{bn}.bias"):
            assert torch.equal(epoch["start"][key][idx], epoch["end"][key][idx]), key


def test_needs_entropy_statistics(digits_model):
    model, dm = digits_model
    with pytest.raises(PlPruningError, match="needs an EntropyStatistics callback"):
        trainer([MaxEntropyFreeze()], max_epochs=1).fit(copy.deepcopy(model), datamodule=dm)


class StateRecorder(Recorder):
    """Also the controller's state and the channel counts at every epoch start."""

    def __init__(self, freeze, controller):
        super().__init__(freeze)
        self.controller = controller

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        self.epochs[-1].update(
            finetuning=self.controller.is_finetuning, state=self.controller.state,
            channels={n: m.out_channels for n, m in pl_module.named_modules() if isinstance(m, torch.nn.Conv2d)})

    def on_validation_epoch_start(self, trainer, pl_module):
        # the end of training in this epoch: the validation that follows may prune (the
        # controller's baseline validation comes before the first epoch)
        if self.epochs:
            self.epochs[-1]["trained"] = copy.deepcopy(pl_module.state_dict())


def test_with_a_controller_it_freezes_in_fine_tuning_only_and_follows_every_surgery(digits_model):
    from pl_pruning import PhaseController

    model, dm = digits_model
    model = copy.deepcopy(model)
    model.hparams.update(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4)
    controller = PhaseController(phases=["global"], global_step=0.2, max_drop=0.5, max_steps=2,
                                 final_epochs=1)
    freeze = MaxEntropyFreeze(fraction=0.1)
    recorder = StateRecorder(freeze, controller)
    trainer([EntropyStatistics(), controller, freeze, recorder], max_epochs=10).fit(model, datamodule=dm)
    rest = recorder.epochs  # the baseline is validated before training: every epoch fine-tunes
    assert all(e["finetuning"] for e in rest)  # two pruning steps (accepted), then the final epoch
    shapes = [tuple(e["channels"].values()) for e in rest]
    assert len(rest) == 3 and shapes[0] != shapes[1] == shapes[2]  # step 1, step 2, the final epoch
    for epoch in rest:
        assert set(epoch["frozen"]) == set(epoch["channels"])
        for conv, idx in epoch["frozen"].items():
            n = epoch["channels"][conv]
            assert len(idx) == -(-n // 10) and int(idx.max()) < n  # recomputed for the pruned layer
            assert epoch["start"][f"{conv}.weight"].shape[0] == n
            before, after = epoch["start"][f"{conv}.weight"], epoch["trained"][f"{conv}.weight"]
            rest = torch.ones(n, dtype=torch.bool)
            rest[idx] = False
            assert torch.equal(before[idx], after[idx]) and not torch.equal(before[rest], after[rest])


def test_a_rolled_back_surgery_leaves_nothing_behind_in_frozen_filters():
    """Convolutions with a bias and no BatchNorm: compensation rewrites the consumer's bias,
    which holds frozen filters; after the rollback the network is exactly the accepted one."""
    from torch import nn

    from pl_pruning import ImageClassifier, PhaseController
    from pl_pruning.data import DigitsDataModule

    L.seed_everything(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    model = ImageClassifier(net, num_classes=10, input_shape=(1, 8, 8), lr=0.05, scheduler="none")
    dm = DigitsDataModule()
    trainer(max_epochs=4).fit(model, datamodule=dm)  # a trained network, the baseline
    # Phase II on the first convolution alone: the second keeps its filters (and its bias
    # object), and receives the compensation of the removed channels in that bias.
    controller = PhaseController(phases=["layerwise"], layer_order="front_to_back", layer_step=0.9,
                                 min_step=0.6, max_drop=0.001, max_steps=1, final_epochs=0, compensate=True)
    trainer([EntropyStatistics(), controller, MaxEntropyFreeze(fraction=0.5)], max_epochs=5).fit(model, datamodule=dm)
    baseline, step, _ = controller.history
    assert step["layer"] == "net.0" and not step["accepted"]
    accepted = controller.run.accepted["model"]
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in accepted.items()}
    for key, value in model.state_dict().items():
        assert torch.equal(value, accepted[key]), key
