"""PhaseController: the two-phase loop on real digits data, rollback, phases, bad input."""

import copy
import json

import lightning as L
import pytest
import torch
from pruning_helpers import trained_digits_classifier, trainer
from torch import nn

from pl_pruning import EntropyStatistics, MaxEntropyFreeze, PhaseController, PlPruningError


@pytest.fixture(scope="module")
def digits_model():
    return trained_digits_classifier(epochs=6)


def channels(model):
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.slow
def test_two_phase_run_cuts_macs_within_max_drop(digits_model, tmp_path):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    before = channels(model)
    controller = PhaseController(max_drop=0.02, global_step=0.3, finetune_epochs=1, final_epochs=1,
                                 report_dir=str(tmp_path))
    trainer([EntropyStatistics(), controller, MaxEntropyFreeze(0.1)], max_epochs=150).fit(model, datamodule=dm)
    report = controller.report()
    assert controller.state == "done"
    assert report["macs_reduction"] >= 2.0
    phases = {e["phase"] for e in controller.history}
    assert {"baseline", "global", "layerwise", "final"} <= phases
    for e in controller.history:
        if e["phase"] in ("global", "layerwise"):
            assert e["accepted"] == (e["drop"] <= 0.02 + 1e-12)
    final = controller.history[-1]
    assert final["phase"] == "final" and final["drop"] <= 0.02
    after = channels(model)
    assert all(after[n] <= before[n] for n in before) and after != before
    # The model still works and really is smaller.
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    for name in ("pruning_report.json", "pruning_report.md", "pruning_path.png", "pruning_channels.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "pruning_report.json").read_text())
    assert saved["channels"]["after"] == after


def test_a_step_too_large_is_rolled_back(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    before = channels(model)
    controller = PhaseController(phases=["global"], global_step=0.95, min_step=0.6, max_drop=0.01,
                                 final_epochs=0)
    trainer([EntropyStatistics(), controller], max_epochs=20).fit(model, datamodule=dm)
    baseline, step, final = controller.history
    assert step["phase"] == "global" and step["step"] == 0.95 and not step["accepted"]
    assert step["drop"] > 0.01 and step["macs"] < baseline["macs"] / 10
    # Rolled back: the architecture and weights are the accepted (baseline) network's.
    assert channels(model) == before
    assert final["macs"] == baseline["macs"]
    accepted = controller._accepted["model"]
    assert all(torch.equal(v, accepted[k]) for k, v in model.state_dict().items())
    assert controller.step == 0.475 and controller.state == "done"


@pytest.mark.parametrize("phases", [["global"], ["layerwise"]])
def test_single_phase_runs(digits_model, phases):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(phases=phases, max_steps=3, final_epochs=0, criterion="l1")
    trainer([controller], max_epochs=30).fit(model, datamodule=dm)
    steps = [e for e in controller.history if e["phase"] not in ("baseline", "final")]
    assert len(steps) == 3 and {e["phase"] for e in steps} == set(phases)
    assert controller.history[-1]["macs"] < controller.history[0]["macs"] or not any(e["accepted"] for e in steps)
    if phases == ["layerwise"]:
        assert all(e["layer"] for e in steps)


@pytest.mark.parametrize("order", ["by_macs", "front_to_back", "back_to_front"])
def test_layer_order_sets_the_phase_two_queue(digits_model, order):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(phases=["layerwise"], layer_order=order, max_steps=1, final_epochs=0,
                                 criterion="l1")
    trainer([controller], max_epochs=5).fit(model, datamodule=dm)
    first = controller.history[1]["layer"]
    convs = list(channels(digits_model[0]))
    if order == "by_macs":  # the layer whose filters cost the most MACs in all goes first
        macs = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: macs.__setitem__(n, o.numel() * mod.weight[0].numel()))
                 for n, m in digits_model[0].named_modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            digits_model[0](torch.zeros(1, 1, 8, 8))
        for h in hooks:
            h.remove()
        assert first == max(macs, key=macs.get)
    else:
        assert first == (convs[0] if order == "front_to_back" else convs[-1])


def test_target_macs_stops_pruning(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(target_macs=0.9, max_drop=0.5, global_step=0.2, final_epochs=0, criterion="l1")
    trainer([controller], max_epochs=30).fit(model, datamodule=dm)
    steps = [e for e in controller.history if e["phase"] == "global"]
    assert len(steps) == 1 and steps[0]["accepted"]  # one step reached 90% of the MACs


def test_optimizer_is_rebuilt_and_momentum_carried_over(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]

    class Check(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            opt = trainer.optimizers[0]
            params = {id(p) for g in opt.param_groups for p in g["params"]}
            assert params == {id(p) for p in pl_module.parameters()}
            if trainer.current_epoch > 1:  # after a surgery: surviving channels kept momentum
                bufs = [opt.state[p].get("momentum_buffer") for p in pl_module.parameters()]
                assert all(b is not None and b.shape == p.shape for b, p in zip(bufs, pl_module.parameters()))
            self.seen = True

    check = Check()
    controller = PhaseController(criterion="l1", max_steps=2, final_epochs=0, max_drop=0.5)
    trainer([controller, check], max_epochs=10).fit(model, datamodule=dm)
    assert check.seen and controller.surgeries == 2


def test_data_criterion_needs_entropy_statistics(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    with pytest.raises(PlPruningError, match="add EntropyStatistics"):
        trainer([PhaseController(criterion="conditional_entropy")]).fit(model, datamodule=dm)


def test_monitor_never_logged_names_the_logged_keys(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    tr = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, num_sanity_val_steps=1,
                   callbacks=[PhaseController(criterion="l1", monitor="val_accuracy")])
    with pytest.raises(PlPruningError, match=r"monitor='val_accuracy' is not logged; the logged keys are: .*val_acc"):
        tr.fit(model, datamodule=dm)
    assert tr.global_step == 0  # failed before any training


def test_no_validation_loop_is_refused(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    with pytest.raises(PlPruningError, match="needs a validation loop, but limit_val_batches=0"):
        trainer([PhaseController(criterion="l1")], limit_val_batches=0).fit(model, datamodule=dm)

    class NoValidation(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Conv2d(1, 2, 3)

        def training_step(self, batch, idx):
            return self.net(batch[0]).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(PlPruningError, match="NoValidation defines no validation_step"):
        trainer([PhaseController(criterion="l1")]).fit(NoValidation(), datamodule=dm)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_drop": 0}, r"max_drop must be in \(0, 1\), got 0"),
    ({"max_drop": 1.0}, r"max_drop must be in \(0, 1\), got 1.0"),
    ({"max_drop": -0.1}, r"max_drop must be in \(0, 1\), got -0.1"),
    ({"criterion": "entropyy"}, "unknown criterion 'entropyy'; choose one of: conditional_entropy"),
    ({"phases": ["global", "local"]}, "phases must be a non-empty list of distinct names from"),
    ({"mode": "maximum"}, "unknown mode 'maximum'; choose one of: max, min"),
    ({"layer_order": "random"}, "unknown layer_order 'random'"),
    ({"global_step": 1.5}, r"global_step must be in \(0, 1\)"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(PlPruningError, match=message):
        PhaseController(**kwargs)
