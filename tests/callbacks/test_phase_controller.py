"""PhaseController: the two-phase loop on real digits data, rollback, phases, bad input."""

import copy
import dataclasses
import inspect
import json

import lightning as L
import pytest
import torch
from pruning_helpers import trained_digits_classifier, trainer
from torch import nn

from pl_pruning import EntropyStatistics, MaxEntropyFreeze, PhaseController, PlPruningError
from pl_pruning.pruning.schedule import Schedule
from pl_pruning.structure.graph import NetworkGraph


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
    assert final["phase"] == "final" and final["accepted"] == (final["drop"] <= 0.02 + 1e-12)
    # the network returned is within the bound: the final one, or else the last accepted one
    assert report["baseline"]["metric"] - report["final"]["metric"] <= 0.02 + 1e-12
    assert report["final_check"]["within_max_drop"] == final["accepted"]
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
    assert step["drop"] > 0.01 and step["macs"] < baseline["macs"] / 2  # 95% of the MACs asked for
    # Rolled back: the architecture and weights are the accepted (baseline) network's.
    assert channels(model) == before
    assert final["macs"] == baseline["macs"]
    accepted = controller.run.accepted["model"]
    assert all(torch.equal(v, accepted[k]) for k, v in model.state_dict().items())
    assert controller.run.step == 0.475 and controller.state == "done"


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
    if order == "by_macs":  # the group whose filters cost the most MACs in all goes first
        module = digits_model[0]
        graph = NetworkGraph.of(module, module.example_input_array)
        cost = {g.root: g.channels * sum(graph.macs_per_filter[c] for c in g.convs) for g in graph.groups}
        assert first == max(cost, key=cost.get) == "net.features.3"
    else:
        assert first == (convs[0] if order == "front_to_back" else convs[-1])


def test_target_macs_stops_pruning(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(target_macs=0.9, max_drop=0.5, global_step=0.2, final_epochs=0, criterion="l1")
    trainer([controller], max_epochs=30).fit(model, datamodule=dm)
    steps = [e for e in controller.history if e["phase"] == "global"]
    assert len(steps) == 1 and steps[0]["accepted"]  # one step reached 90% of the MACs
    assert controller.report()["target_macs"] == 0.9  # the report names what stopped the run


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
    assert check.seen and controller.run.surgeries == 2


def test_data_criterion_needs_entropy_statistics(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    with pytest.raises(PlPruningError, match="add EntropyStatistics"):
        trainer([PhaseController(criterion="conditional_entropy")]).fit(model, datamodule=dm)


def test_monitor_never_logged_names_the_logged_keys(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    tr = L.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False,
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
    ({"finetune_epochs": True}, r"finetune_epochs must be an integer >= 0, got True"),
    ({"round_to": 0}, r"round_to must be an integer >= 1 or None, got 0"),
    ({"compensate": "yes"}, r"compensate must be true or false, got 'yes'"),
    ({"ignored_layers": "net.features.0"}, r"ignored_layers must be a list of names"),
    ({"grow": 0.5}, r"grow must be >= 1, got 0.5"),
    ({"recheck": "no"}, r"recheck must be true or false, got 'no'"),
    ({"finetune_schedule": "step"}, r"unknown finetune_schedule 'step'; choose one of: cosine, constant"),
    ({"step_lr": 0}, r"step_lr must be"),
    ({"reference": "dense"}, r"unknown reference 'dense'; choose one of: baseline, accepted"),
    ({"step_lr": 1.5}, r"step_lr must be"),
    ({"max_dorp": 0.1}, r"PhaseController takes no argument 'max_dorp'; its arguments: criterion, phases, "),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(PlPruningError, match=message):
        PhaseController(**kwargs)


OWN_ARGUMENTS = ["criterion", "screen_batches", "finetune_schedule", "step_lr", "monitor", "compensate",
                 "ignored_layers", "report_dir", "latency", "on_unprunable"]


def test_the_signature_is_the_decision_rules_settings_as_declared():
    """One declaration: Schedule's fields (default and check side by side) are the
    controller's keyword arguments, with the same defaults; its own arguments are the rest."""
    params = inspect.signature(PhaseController).parameters
    settings = dataclasses.fields(Schedule)
    assert [n for n in params if n not in OWN_ARGUMENTS] == [f.name for f in settings]
    assert [n for n in params if n in OWN_ARGUMENTS] == OWN_ARGUMENTS
    for f in settings:
        assert params[f.name].default == f.default and params[f.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert callable(f.metadata["check"]), f.name
    assert len(params) == 31  # 31 before max_step became schedule.MAX_STEP, 31 again with on_unprunable
    changed = {"phases": ["layerwise"], "global_step": 0.3, "layer_step": 0.1, "min_step": 0.01, "grow": 2.0,
               "max_drop": 0.05, "reference": "accepted", "recheck": False, "screen": True,
               "screen_drop": 0.2, "finetune_epochs": 0, "final_epochs": 5, "fill_budget": True, "mode": "min",
               "normalize": "none", "layer_order": "by_macs", "target_macs": 0.5, "max_steps": 3,
               "min_channels": 2, "round_to": 4}
    assert set(changed) == {f.name for f in settings} - {"target_latency"}  # not with target_macs
    controller = PhaseController(**changed)
    for name, value in changed.items():  # the rule reads what the controller was given
        assert getattr(controller.schedule, name) == value and getattr(controller, name) == value, name
    assert str(PhaseController(target_latency="40%").target_latency) == "40%"


def test_a_normalisation_without_the_global_phase_is_named_as_moot(recwarn):
    PhaseController(phases=["layerwise"], normalize="cost-aware")
    assert any("normalize='cost-aware' has no effect" in str(w.message) for w in recwarn)
    recwarn.clear()
    PhaseController(phases=["global", "layerwise"], normalize="cost-aware")
    PhaseController(phases=["layerwise"])
    assert not [w for w in recwarn if "no effect" in str(w.message)]


def test_a_bad_ignored_layer_fails_before_training(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    tr = trainer([PhaseController(criterion="l1", ignored_layers=["net.features.0", "net.nope"])])
    with pytest.raises(PlPruningError, match="ignored_layers entry 'net.nope' matches no module"):
        tr.fit(model, datamodule=dm)
    assert tr.global_step == 0


def test_one_trace_per_surgery_or_rollback(digits_model):
    """The dependency graph is traced once per architecture: the baseline, then once after
    each surgery and each rollback; planning, MACs and the freeze reuse it."""
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(global_step=0.5, max_drop=0.01, max_steps=4, final_epochs=1)
    before = NetworkGraph.traces
    trainer([EntropyStatistics(), controller, MaxEntropyFreeze(0.1)], max_epochs=12).fit(model, datamodule=dm)
    rollbacks = sum(e["accepted"] is False for e in controller.history)
    assert controller.run.surgeries == 4 and rollbacks >= 1
    assert NetworkGraph.traces - before <= controller.run.surgeries + rollbacks + 1


def test_one_decision_is_broadcast_per_validation(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    sent = []

    class Spy(L.Callback):
        def setup(self, trainer, pl_module, stage):
            original = trainer.strategy.broadcast

            def broadcast(obj, src=0):
                sent.append(obj)
                return original(obj, src)

            trainer.strategy.broadcast = broadcast

        def on_validation_end(self, trainer, pl_module):
            self.validations = getattr(self, "validations", 0) + 1

    spy = Spy()
    controller = PhaseController(criterion="l1", max_steps=2, final_epochs=1, max_drop=0.5)
    trainer([spy, controller], max_epochs=10).fit(model, datamodule=dm)
    decisions = [d for d in sent if type(d).__name__ == "Decision"]
    # baseline, two steps, the final epoch: one decision each, planned or not
    assert len(decisions) == spy.validations == len(controller.history) == 4
    assert [bool(d.plan) for d in decisions] == [True, True, False, False]
    assert decisions[-1].finish and len(sent) == len(decisions)  # nothing else is broadcast


def _rollback_spy(controller):
    """After each rollback (just before the next surgery): the live network and optimizer
    state, the accepted snapshot, and the snapshot's state as it was when accepted."""
    seen = []
    prune = controller._prune

    def spy(trainer, pl_module, decision):
        if decision.judged is not None and decision.judged.accepted is False:
            accepted = controller.run.accepted
            opt = trainer.optimizers[0]
            seen.append({
                "model": {k: v.clone() for k, v in pl_module.state_dict().items()},
                "optimizer": copy.deepcopy(opt.state_dict()),
                "shared": {t.untyped_storage().data_ptr() for st in opt.state.values() for t in st.values()
                           if isinstance(t, torch.Tensor) and t.numel()}
                & {t.untyped_storage().data_ptr() for st in accepted["optimizers"][0]["state"].values()
                   for t in st.values() if isinstance(t, torch.Tensor) and t.numel()},
                "accepted": accepted, "as_accepted": copy.deepcopy(accepted["optimizers"]),
            })
        prune(trainer, pl_module, decision)

    controller._prune = spy
    return seen


def _same(a, b):
    if dataclasses.is_dataclass(a):
        return dataclasses.is_dataclass(b) and _same(dataclasses.asdict(a), dataclasses.asdict(b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_a_second_rollback_returns_exactly_to_the_accepted_network(digits_model):
    """Two rollbacks in a row (issue 13): the optimizer state restored after a rollback is a
    copy of the accepted snapshot, so the epoch after it cannot rewrite the snapshot; the
    second rollback returns bit-exactly to the accepted network, weights and momentum."""
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    model.hparams.update(momentum=0.9)
    # the first step is accepted (an accepted network with momentum); then val_loss rises
    # after almost any cut: max_drop=1e-6 rolls every later step back
    controller = PhaseController(criterion="l1", phases=["global"], global_step=0.4, min_step=0.1,
                                 max_drop=0.5, monitor="val_loss", mode="min", final_epochs=0,
                                 compensate=False)

    class Tighten(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if any(e["phase"] == "global" and e["accepted"] for e in controller.history):
                controller.schedule.max_drop = 1e-6

    seen = _rollback_spy(controller)
    trainer([controller, Tighten()], max_epochs=8).fit(model, datamodule=dm)
    assert [e["accepted"] for e in controller.history[1:4]] == [True, False, False] and len(seen) >= 2
    first, second = seen[0], seen[1]
    assert second["accepted"] is first["accepted"]  # nothing accepted in between
    for after in (first, second):
        assert not after["shared"]  # no live optimizer tensor aliases the snapshot
        assert _same(after["model"], first["accepted"]["model"])
        assert _same(after["optimizer"]["state"], first["as_accepted"][0]["state"])
    assert _same(second["accepted"]["optimizers"], first["as_accepted"])  # the snapshot is intact
    assert any(st.get("momentum_buffer") is not None and st["momentum_buffer"].abs().sum() > 0
               for st in first["as_accepted"][0]["state"].values())  # there was momentum to lose


def test_a_custom_layer_order_and_criterion_registered_by_name(digits_model):
    """A user's Phase II order and a user's criterion, both registered by name, drive a
    PhaseController in a real Trainer."""
    from pl_pruning.pruning.planner import LAYER_ORDERS, register_layer_order
    from pl_pruning.scoring.criteria import _REGISTRY, Criterion, register_criterion

    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    calls, scored_layers = [], []

    def deepest_output_first(scored, graph):
        """A user's order: groups whose output map is smallest first, the last two only."""
        calls.append([g.root for g, _ in scored])
        ordered = sorted(scored, key=lambda gs: graph.output_hw[gs[0].root][0] * graph.output_hw[gs[0].root][1])
        return [g.root for g, _ in ordered][:2]

    class MeanActivation(Criterion):
        """A user's criterion: keep the filters whose pooled activation is largest."""

        def layer_scores(self, name, stats, module):
            scored_layers.append(name)
            return stats.mean_activation.float()

    register_layer_order("deepest_output_first", deepest_output_first)
    register_criterion("mean_activation_score", MeanActivation)
    try:
        controller = PhaseController(criterion="mean_activation_score", phases=["layerwise"],
                                     layer_order="deepest_output_first", layer_step=0.5, min_step=0.2,
                                     max_drop=0.05, final_epochs=0)
        trainer([EntropyStatistics(), controller], max_epochs=12).fit(model, datamodule=dm)
    finally:
        LAYER_ORDERS.pop("deepest_output_first")
        _REGISTRY.pop("mean_activation_score")
    assert controller.criterion_name == "mean_activation_score"
    assert {"net.features.0", "net.features.3", "net.features.7"} <= set(scored_layers)
    assert calls == [["net.features.0", "net.features.3", "net.features.7"]]
    layers = [e["layer"] for e in controller.history if e["phase"] == "layerwise"]
    assert layers[0] == "net.features.7" and set(layers) <= {"net.features.7", "net.features.0",
                                                             "net.features.3"}
    assert layers[:2] == ["net.features.7", "net.features.0"]  # round-robin over the two queued groups
    assert "net.features.3" not in layers or "net.features.0" not in layers  # only two groups queued
    assert any(e["accepted"] and e["removed"] > 0 for e in controller.history if e["phase"] == "layerwise")


def test_state_dict_round_trip(digits_model):
    model, dm = copy.deepcopy(digits_model[0]), digits_model[1]
    controller = PhaseController(criterion="l1", max_steps=1, final_epochs=1, max_drop=0.5)
    trainer([controller], max_epochs=4).fit(model, datamodule=dm)
    saved = controller.state_dict()
    assert saved["phase"] == "done" and isinstance(saved["history"][0], dict)
    json.dumps(saved["history"])  # plain data
    again = PhaseController(criterion="l1")
    again.load_state_dict(copy.deepcopy(saved))
    assert again.history == controller.history and again.state == "done"
    assert again.run.surgeries == 1 and _same(again.run.accepted, controller.run.accepted)
