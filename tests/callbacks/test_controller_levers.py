"""PhaseController's levers in a real Trainer on digits: the baseline validated before
any training, the accepted network's own scores after a rollback, the cosine learning
rate of each fine-tuning window, a non-finite metric rolled back, the final network
checked against max_drop, and the warning for a validation set too small for max_drop."""

import copy

import lightning as L
import pytest
import torch
from pruning_helpers import trained_digits_classifier, trainer

from pl_pruning import EntropyStatistics, PhaseController


@pytest.fixture(scope="module")
def digits_model():
    return trained_digits_classifier(epochs=6)


def test_the_baseline_is_the_given_network_validated_before_any_training(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    expected = trainer().validate(copy.deepcopy(model), datamodule=dm, verbose=False)[0]["val_acc"]
    controller = PhaseController(criterion="l1", max_steps=1, final_epochs=0, max_drop=0.5)
    fit = trainer([controller], max_epochs=5)
    fit.fit(model, datamodule=dm)
    baseline, step, _ = controller.history
    assert baseline["metric"] == pytest.approx(expected)
    assert step["epoch"] == 0 and fit.current_epoch == 1  # pruned before epoch 0, judged after it


def test_after_a_rollback_the_plan_uses_the_accepted_networks_own_scores(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(phases=["global"], global_step=0.3, max_drop=0.5, min_step=0.1, final_epochs=0)

    class Tighten(L.Callback):  # accept the first step, roll back every later one
        def on_train_epoch_start(self, trainer, pl_module):
            if any(e["phase"] == "global" and e["accepted"] for e in controller.history):
                controller.schedule.max_drop = 1e-6

    refreshed, planned = [], []
    refresh, prune = controller.pruner.refresh, controller._prune

    def spy_refresh(scores, pl_module, criteria, statistics=None):
        refresh(scores, pl_module, criteria, statistics)
        refreshed.append(controller.run.scores.copy())

    def spy_prune(trainer, pl_module, d):
        if d.judged is not None and d.judged.accepted is False:
            planned.append((controller.run.scores.copy(), controller.run.accepted["scores"]))
        prune(trainer, pl_module, d)

    controller.pruner.refresh, controller._prune = spy_refresh, spy_prune
    trainer([EntropyStatistics(), controller, Tighten()], max_epochs=4).fit(model, datamodule=dm)
    assert planned, "no rollback happened"
    used, accepted = planned[0]
    key = controller.criterion_name
    assert all(torch.equal(used.cache[key][k], accepted.cache[key][k]) for k in accepted.cache[key])
    # the rejected network's statistics had rewritten the cache before the rollback
    rejected = refreshed[2].cache[key]
    assert any(not torch.equal(rejected[k][used.ids[k]], accepted.cache[key][k][used.ids[k]]) for k in rejected)


def test_each_fine_tuning_window_anneals_the_learning_rate(digits_model):
    class Lrs(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]))

    for schedule in ("cosine", "constant"):
        model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
        lrs = Lrs()
        controller = PhaseController(criterion="l1", max_steps=2, final_epochs=1, max_drop=0.5,
                                     finetune_schedule=schedule)
        trainer([controller, lrs], max_epochs=6).fit(model, datamodule=dm)
        for epoch in {e for e, _ in lrs.seen}:
            values = [lr for e, lr in lrs.seen if e == epoch]
            if schedule == "constant":
                assert values == [0.01] * len(values)
            else:  # from the base rate down to (almost) zero within every one-epoch window
                assert values[0] == pytest.approx(0.01) and values[-1] < 0.001
                assert values == sorted(values, reverse=True)


def test_step_lr_scales_the_step_windows_and_leaves_the_final_fine_tune_whole(digits_model):
    seen = []

    class Lrs(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 0:
                seen.append((controller.state, trainer.optimizers[0].param_groups[0]["lr"]))

    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(criterion="l1", max_steps=2, final_epochs=1, max_drop=0.5,
                                 finetune_schedule="constant", step_lr=0.2)
    trainer([controller, Lrs()], max_epochs=6).fit(model, datamodule=dm)
    assert [s for s, _ in seen] == ["global", "global", "final"]
    assert [lr for _, lr in seen] == pytest.approx([0.002, 0.002, 0.01])


def test_fill_budget_gives_the_final_fine_tune_every_epoch_pruning_left(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(criterion="l1", phases=["global"], target_macs=0.85, max_drop=0.5,
                                 final_epochs=1, fill_budget=True)
    fit = trainer([controller], max_epochs=5)
    fit.fit(model, datamodule=dm)
    steps = [e for e in controller.history if e["phase"] == "global"]
    assert steps and controller.state == "done" and controller.run.final_window == 5 - len(steps)
    assert fit.current_epoch == 5  # the whole budget trained


def test_with_no_fine_tuning_epochs_every_step_is_judged_before_the_first_epoch(digits_model, monkeypatch):
    """finetune_epochs=0: each cut network's BatchNorm is re-estimated on training batches and
    validated at once; the target is reached before epoch 0, which starts the final fine-tune."""
    from pl_pruning.callbacks import loops

    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(phases=["global"], global_step=0.2, grow=1.0, target_macs=0.5, max_drop=0.5,
                                 finetune_epochs=0, final_epochs=1, fill_budget=True, recheck=True)
    estimated, validated, phase_at_training = [], [], []

    def running(module):
        return {k: v.clone() for k, v in module.state_dict().items() if k.endswith("running_mean")}

    def spy(module, batches, estimate=loops.reestimate_batchnorm):
        estimate(module, batches)
        estimated.append((len(batches), running(module)))

    class Watch(L.Callback):
        def on_validation_start(self, trainer, pl_module):
            validated.append(running(pl_module))

        def on_train_epoch_start(self, trainer, pl_module):
            phase_at_training.append(controller.state)

    monkeypatch.setattr(loops, "reestimate_batchnorm", spy)
    fit = trainer([EntropyStatistics(), controller, Watch()], max_epochs=3)
    fit.fit(model, datamodule=dm)
    steps = [e for e in controller.history if e["phase"] == "global"]
    assert len(steps) >= 3 and all(e["epoch"] == 0 for e in steps)  # 0.8^3 > 0.5: three cuts at least
    assert steps[-1]["macs"] <= 0.5 * controller.history[0]["macs"] + 1
    assert phase_at_training[0] == "final" and controller.run.final_window == 3 and fit.current_epoch == 3
    # one re-estimation per step, on screen_batches training batches, and the validation
    # judging the step sees exactly those statistics
    assert [n for n, _ in estimated] == [controller.screen_batches] * len(steps)
    for (_, stats), seen in zip(estimated, validated[1:], strict=False):
        assert stats.keys() == seen.keys() and all(torch.equal(stats[k], seen[k]) for k in stats)


@pytest.mark.parametrize("screen", [False, True])
def test_batches_read_before_an_epoch_leave_the_fits_loaders_whole(digits_model, screen):
    """With persistent loader workers, reading the first batches (BatchNorm re-estimation with
    finetune_epochs=0, the screen) through the fit's own loaders took them from its next
    epoch: epoch 0 came up short of batches and its validation never ran."""
    from pl_pruning.data import DigitsDataModule

    model, dm = copy.deepcopy(digits_model[0]), DigitsDataModule(seed=0, num_workers=1)
    controller = PhaseController(phases=["global"], global_step=0.2, target_macs=0.7, max_drop=0.5,
                                 finetune_epochs=0, final_epochs=2, screen=screen, screen_drop=0.99)
    seen = {"batches": {}, "validations": []}

    class Count(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            seen["batches"][trainer.current_epoch] = seen["batches"].get(trainer.current_epoch, 0) + 1

        def on_validation_end(self, trainer, pl_module):
            seen["validations"].append(trainer.current_epoch)

    fit = trainer([EntropyStatistics(), controller, Count()], max_epochs=2)
    fit.fit(model, datamodule=dm)
    assert seen["batches"] == {0: fit.num_training_batches, 1: fit.num_training_batches}
    assert seen["validations"][-2:] == [0, 1]  # every epoch validated (the steps' validations came first)
    assert controller.state == "done" and controller.report()["final_check"] is not None


def test_a_metric_that_is_not_finite_rolls_the_step_back_with_a_warning(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(criterion="l1", max_steps=3, final_epochs=0, max_drop=0.5,
                                 monitor="val_loss", mode="min")

    class Diverge(L.Callback):  # the second step's fine-tune "diverges"
        def on_validation_start(self, trainer, pl_module):
            if controller.run.surgeries == 2 and controller.run.pending is not None:
                with torch.no_grad():
                    next(pl_module.parameters()).fill_(float("nan"))

    with pytest.warns(UserWarning, match="val_loss=nan: the step is rolled back"):
        trainer([EntropyStatistics(), controller, Diverge()], max_epochs=6).fit(model, datamodule=dm)
    steps = [e for e in controller.history if e["phase"] == "global"]
    assert steps[0]["accepted"] and not steps[1]["accepted"] and steps[1]["drop"] == float("inf")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert controller.state == "done"


def test_a_final_network_that_misses_max_drop_gives_way_to_the_last_accepted_one(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(criterion="l1", max_steps=1, final_epochs=1, max_drop=0.05)

    class Spoil(L.Callback):  # the final fine-tune ruins the network
        def on_validation_start(self, trainer, pl_module):
            if controller.state == "final":
                with torch.no_grad():
                    for p in pl_module.parameters():
                        p.mul_(-1.0)

    with pytest.warns(UserWarning, match="misses max_drop; returning the last accepted network"):
        trainer([controller, Spoil()], max_epochs=5).fit(model, datamodule=dm)
    report = controller.report()
    final = controller.history[-1]
    assert final["phase"] == "final" and not final["accepted"] and final["drop"] > 0.05
    assert report["final_check"]["within_max_drop"] is False
    assert "last accepted" in report["final_check"]["returned"]
    accepted = controller.run.accepted
    assert report["final"]["metric"] == accepted["record"]["metric"]
    assert all(torch.equal(v, accepted["model"][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("max_drop, warns", [(0.01, True), (0.1, False)])
def test_a_validation_set_too_small_for_max_drop_is_named(digits_model, max_drop, warns, recwarn):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(criterion="l1", max_steps=1, final_epochs=0, max_drop=max_drop)
    trainer([controller], max_epochs=2).fit(model, datamodule=dm)
    messages = [str(w.message) for w in recwarn if "standard error" in str(w.message)]
    assert bool(messages) == warns
    at_bound = controller.history[0]["metric"] - max_drop  # the accuracy where decisions are taken
    assert controller.run.noise == pytest.approx((at_bound * (1 - at_bound) / len(dm.val_set)) ** 0.5)


def test_the_screen_halves_a_step_that_breaks_the_network_before_its_epoch(digits_model):
    """screen=True: the controller cuts a copy, re-estimates its BatchNorm on training
    batches and measures it on validation batches; a 50% cut that loses more than
    screen_drop unfine-tuned is halved before any epoch is spent on it."""
    results = {}
    for screen in (False, True):
        model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
        before = copy.deepcopy(model.state_dict())
        controller = PhaseController(phases=["global"], global_step=0.5, max_drop=0.5,
                                     screen=screen, screen_drop=0.02, final_epochs=0, max_steps=1)
        seen = []

        def spy(module, plan, scores, cut=controller.pruner.cut, seen=seen):  # the real surgery only
            seen.append({k: v.clone() for k, v in module.state_dict().items()})
            return cut(module, plan, scores)

        controller.pruner.cut = spy
        trainer([EntropyStatistics(), controller], max_epochs=3).fit(model, datamodule=dm)
        results[screen] = [e for e in controller.history if e["phase"] == "global"][0]
        # the real surgery happened on the trained network: the screen's copies did not touch it
        assert all(torch.equal(v, seen[0][k]) for k, v in before.items())
    assert "screened_out" not in results[False] and results[False]["step"] == 0.5
    assert results[True]["screened_out"] >= 1 and results[True]["step"] <= 0.25
    assert results[True]["macs"] > results[False]["macs"]  # a smaller cut
