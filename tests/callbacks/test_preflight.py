"""PhaseController.preflight: what a fit can prune, known before its first epoch; the
warnings for steps that would all be judged backwards; log lines that say what happened."""

import copy

import pytest
import torch
from grouped_net import grouped_cnn
from pruning_helpers import trained_digits_classifier, trainer

from pl_pruning import (
    EntropyStatistics,
    ImageClassifier,
    PhaseController,
    PlPruningError,
    build_model,
)
from pl_pruning.data import DigitsDataModule
from pl_pruning.pruning.run_state import StepRecord


@pytest.fixture(scope="module")
def digits_model():
    return trained_digits_classifier(epochs=2)


def small_cnn():
    return ImageClassifier(build_model("small_cnn", in_channels=1), input_shape=(1, 8, 8))


def grouped():
    return ImageClassifier(grouped_cnn(), num_classes=10, input_shape=(1, 8, 8))


def test_a_grouped_convolution_network_is_refused_before_any_training_naming_the_layer():
    model = grouped()
    fit = trainer([EntropyStatistics(), PhaseController()], max_epochs=3)
    with pytest.raises(PlPruningError, match=r"no layer can be pruned: 'net.0' .* grouped convolution 'net.3' "
                                             r"\(groups=4\).*on_unprunable='warn'"):
        fit.fit(model, datamodule=DigitsDataModule())
    assert fit.global_step == 0 and fit.current_epoch == 0


def test_with_on_unprunable_warn_the_fit_runs_and_the_report_says_why():
    model = grouped()
    controller = PhaseController(on_unprunable="warn", final_epochs=1)
    with pytest.warns(UserWarning, match=r"nothing will be pruned: .*grouped convolution 'net.3'"):
        trainer([EntropyStatistics(), controller], max_epochs=2).fit(model, datamodule=DigitsDataModule())
    report = controller.report()
    assert report["preflight"]["can_prune"] is False
    assert "grouped convolution 'net.3'" in report["preflight"]["reason"]
    assert report["preflight"]["prunable_groups"] == 0


@pytest.mark.parametrize("settings, max_epochs, message", [
    ({"min_channels": 1000}, None, r"min_channels=1000 leaves no filter to remove: the widest prunable layer, "
                                   r"'net.features.3', has 64"),
    ({"min_channels": 50, "round_to": 32}, None, r"min_channels=50 with round_to=32 leaves no filter to remove"),
    ({"target_macs": "1k"}, None, r"target_macs=1000 MACs per sample is out of reach: .* can be removed"),
    ({"min_channels": 60, "target_macs": 0.1}, None, r"target_macs=1.789e\+05 MACs per sample is out of reach"),
    ({"final_epochs": 3}, 3, r"max_epochs=3 leaves no room for a step: each needs finetune_epochs=1 and "
                             r"then the final fine-tune final_epochs=3"),
    ({"ignored_layers": ["nope"]}, None, r"ignored_layers entry 'nope' matches no module"),
])
def test_a_fit_that_cannot_prune_is_named_before_it_starts(settings, max_epochs, message):
    with pytest.raises(PlPruningError, match=message):
        PhaseController(**settings).preflight(small_cnn(), max_epochs)


def test_a_fit_that_can_prune_lists_its_groups():
    result = PhaseController(min_channels=4, round_to=4).preflight(small_cnn(), 10)
    assert result.can_prune and result.reason is None
    by_root = {g["root"]: g for g in result.groups}
    assert by_root["net.features.0"]["can_lose"] == by_root["net.features.0"]["channels"] - 4
    assert by_root["net.classifier"]["can_lose"] == 0 and "final classifier" in by_root["net.classifier"]["blocked"]
    # finetune_epochs=0 judges steps before the first epoch: any budget that holds the final fine-tune fits
    assert PhaseController(finetune_epochs=0, final_epochs=3).preflight(small_cnn(), 3).can_prune


@pytest.mark.parametrize("value", [1.5, 30, 0, -0.1, "abc", "12 apples", True])
def test_target_macs_is_a_fraction_or_an_absolute_count_with_a_unit_never_a_switch(value):
    with pytest.raises(PlPruningError, match=r"target_macs must be a fraction of the baseline's MACs in \(0, 1\], "
                                             r"or MACs per sample as a string with a unit"):
        PhaseController(target_macs=value)


def test_target_macs_absolute_forms():
    from pl_pruning.pruning.schedule import target_in_macs

    assert [target_in_macs(v, 2e6) for v in ("12M", "350k MACs", "3.5e6 MACs", "1G", 0.25, 1)] == [
        12e6, 350e3, 3.5e6, 1e9, 0.5e6, 2e6]


@pytest.mark.parametrize("monitor, mode", [("val_loss", "max"), ("val_acc", "min")])
def test_a_mode_that_does_not_fit_the_monitor_is_named(monitor, mode):
    with pytest.warns(UserWarning, match=f"mode='{mode}' with monitor='{monitor}'.*judged backwards"):
        PhaseController(monitor=monitor, mode=mode)


def test_a_metric_in_percent_against_a_fractional_max_drop_is_named(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]

    class Percent(type(model)):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_pct", (self(x).argmax(1) == y).float().mean() * 100)

    model.__class__ = Percent
    controller = PhaseController(monitor="val_pct", final_epochs=1, max_steps=1)
    with pytest.warns(UserWarning, match=r"val_pct=\d+.* is outside \[0, 1\] while max_drop=0.02 is a fraction"):
        trainer([EntropyStatistics(), controller], max_epochs=3).fit(model, datamodule=dm)


def test_a_step_line_says_how_many_filters_it_removed():
    record = StepRecord("layerwise", "net.features.3", 0.5, 100, 10, metric=0.9, drop=0.01, accepted=True,
                        removed=9)
    line = record.describe("val_acc")
    assert line.startswith("layerwise step of 9 filters (50.0% of the group) on net.features.3:")
    line = StepRecord("global", None, 0.2, 100, 10, metric=0.9, drop=0.01, accepted=False, removed=17).describe("v")
    assert "step of 17 filters (20.0% of the MACs)" in line and line.endswith("rolled back")
    # under a latency target a global step is a share of the latency
    line = StepRecord("global", None, 0.1, 100, 10, metric=0.9, drop=0.0, accepted=True, removed=3,
                      latency_ms=5.0).describe("v", "latency")
    assert "step of 3 filters (10.0% of the latency)" in line and "latency=5.00ms" in line


def test_the_final_fine_tune_line_counts_the_epochs_left(digits_model, caplog):
    import logging

    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(phases=["global"], finetune_epochs=0, max_steps=1, final_epochs=3)
    with caplog.at_level(logging.INFO):
        trainer([EntropyStatistics(), controller], max_epochs=2).fit(model, datamodule=dm)
    lines = [r.getMessage() for r in caplog.records if "final fine-tune" in r.getMessage()]
    assert lines == ["[PhaseController] final fine-tune of the accepted network: 2 epochs left, "
                     "1 cut by max_epochs=2"], lines
    assert torch.isfinite(model(torch.zeros(1, 1, 8, 8))).all()
