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


def test_bad_fraction_is_named():
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(PlPruningError, match=rf"fraction must be in \[0, 1\), got {bad}"):
            MaxEntropyFreeze(fraction=bad)


def test_needs_entropy_statistics(digits_model):
    model, dm = digits_model
    with pytest.raises(PlPruningError, match="needs an EntropyStatistics callback"):
        trainer([MaxEntropyFreeze()], max_epochs=1).fit(copy.deepcopy(model), datamodule=dm)
