"""The decision rule without Lightning: MAC-sized steps that grow and shrink, Phase II
round-robin, the target sizing steps, the recheck of a marginal rejection, a non-finite
metric, the epoch budget, and the fine-tuning learning-rate window."""

from __future__ import annotations

import math

import pytest
import torch

from pl_pruning.models import build_model
from pl_pruning.pruning import planner
from pl_pruning.pruning.run_state import Phase, RunState, StepRecord
from pl_pruning.pruning.schedule import Network, Schedule, cosine_factor
from pl_pruning.structure.graph import NetworkGraph


@pytest.fixture(scope="module")
def graph():
    net = build_model("small_cnn", num_classes=10, in_channels=1)
    return NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))


def schedule(**kw):
    settings = dict(phases=["global", "layerwise"], global_step=0.2, layer_step=0.25, min_step=0.05,
                    max_drop=0.02, finetune_epochs=1, final_epochs=0, mode="max", normalize="per-layer",
                    layer_order="front_to_back", target_macs=None, max_steps=None, min_channels=1,
                    round_to=None)
    settings.update(kw)
    return Schedule(**settings)


class Fake:
    """The network as the schedule sees it: fixed scores (filter i of every group scores i)
    and a surgery that changes nothing, so every decision is about the rule alone."""

    def __init__(self, graph):
        self.graph, self.restores = graph, 0
        self.scored = [(g, torch.arange(g.channels, dtype=torch.float) + 1) for g in graph.groups]

    def network(self):
        return Network(lambda: (self.graph, self.scored), lambda: (self.graph.macs, 1000), self._restore)

    def _restore(self):
        self.restores += 1


def start(rule, fake, metric=0.9):
    run = RunState(step=rule.global_step)
    d = rule.decide(run, metric, fake.network(), 0, 100)
    run.baseline_cost = {"macs": d.judged.macs, "params": d.judged.params}
    run.accepted = {"record": d.judged.to_dict()}
    return run, d


def judge(rule, run, fake, metric, d, epochs_done=1):
    """Apply a decision's plan as the controller does (a pending step), then judge it."""
    from pl_pruning.pruning.run_state import StepRecord

    phase, layer, step = d.planned
    run.pending = StepRecord(phase, layer, step, fake.graph.macs, 1000)
    run.surgeries += 1
    run.epochs_since_surgery = 0
    return rule.decide(run, metric, fake.network(), epochs_done, 100)


def plan_macs(plan, graph):
    return sum(graph.macs_per_filter[root] * len(idx) for root, idx in plan.items())


def test_phase_one_steps_are_sized_in_macs_and_grow_after_an_acceptance(graph):
    rule, fake = schedule(), Fake(graph)
    run, d = start(rule, fake)
    assert d.planned == ("global", None, 0.2)
    saved = plan_macs(d.plan, graph)
    cheapest = min(graph.macs_per_filter[g.root] for g in graph.groups)
    assert 0.2 * graph.macs <= saved < 0.2 * graph.macs + max(graph.macs_per_filter.values())
    assert saved - cheapest < 0.2 * graph.macs or len(d.plan) == 1  # no filter more than needed
    d = judge(rule, run, fake, 0.9, d)                     # no drop: accepted, the step grows 1.5x
    assert d.judged.accepted and run.step == pytest.approx(0.3) and d.planned[2] == pytest.approx(0.3)
    d = judge(rule, run, fake, 0.9, d)
    assert run.step == pytest.approx(0.45)
    d = judge(rule, run, fake, 0.9, d)
    assert run.step == pytest.approx(0.5)                  # capped at MAX_STEP
    d = judge(rule, run, fake, 0.5, d)                     # a large drop: rolled back, halved
    assert not d.judged.accepted and fake.restores == 1 and run.step == pytest.approx(0.25)


def test_phase_one_ends_when_the_halved_step_falls_below_min_step(graph):
    rule, fake = schedule(global_step=0.2, min_step=0.05), Fake(graph)
    run, d = start(rule, fake)
    for expected in (0.1, 0.05):
        d = judge(rule, run, fake, 0.5, d)
        assert run.phase is Phase.GLOBAL and run.step == pytest.approx(expected)
    d = judge(rule, run, fake, 0.5, d)                     # 0.025 < min_step: on to Phase II
    assert run.phase is Phase.LAYERWISE and d.planned[0] == "layerwise"


def test_phase_two_visits_the_groups_round_robin(graph):
    rule, fake = schedule(phases=["layerwise"]), Fake(graph)
    run, d = start(rule, fake)
    roots = [g.root for g in graph.groups]
    visited = [d.planned[1]]
    for metric in (0.9, 0.5, 0.9, 0.5, 0.9, 0.9):
        d = judge(rule, run, fake, metric, d)
        visited.append(d.planned[1])
    assert visited == [roots[i % len(roots)] for i in range(len(visited))]
    # the first group: accepted (0.25 -> 0.375), then rolled back (-> 0.1875)
    assert run.layer_steps[roots[0]] == pytest.approx(0.1875)


def test_a_group_whose_step_falls_below_min_step_leaves_the_queue(graph):
    rule, fake = schedule(phases=["layerwise"], layer_step=0.25, min_step=0.2), Fake(graph)
    run, d = start(rule, fake)
    first = d.planned[1]
    d = judge(rule, run, fake, 0.5, d)                     # 0.125 < 0.2: the group is done
    assert first not in run.layer_queue and d.planned[1] != first


def test_the_target_sizes_the_last_step(graph):
    rule, fake = schedule(target_macs=0.9), Fake(graph)
    run, d = start(rule, fake)
    saved = plan_macs(d.plan, graph)                       # 10% to go, not the 20% step
    assert 0.1 * graph.macs <= saved < 0.1 * graph.macs + max(graph.macs_per_filter.values())
    rule = schedule(phases=["layerwise"], target_macs=0.99)
    run, d = start(rule, fake)
    (root, idx), = d.plan.items()
    assert len(idx) == math.ceil(0.01 * graph.macs / planner.group_costs(
        [(g, s) for g, s in fake.scored if g.root == root], graph)[0])


def test_a_marginal_rejection_is_fine_tuned_once_more_then_judged(graph):
    rule, fake = schedule(max_drop=0.02), Fake(graph)
    run, d = start(rule, fake)
    run.noise = 0.01
    d = judge(rule, run, fake, 0.875, d)                   # drop 0.025: within the noise of the bound
    assert d.judged is None and not d.plan and run.pending.rechecks == 1 and fake.restores == 0
    assert rule.window(run) == 2
    run.epochs_since_surgery = 1
    d = rule.decide(run, 0.885, fake.network(), 2, 100)    # the extra epoch recovered: accepted
    assert d.judged.accepted and d.judged.rechecks == 1 and d.judged.finetuned_epochs == 2
    d = judge(rule, run, fake, 0.86, d)                    # drop 0.04: beyond the noise, rejected now
    assert d.judged is not None and not d.judged.accepted
    no_recheck = schedule(max_drop=0.02, recheck=False)
    run, d = start(no_recheck, fake)
    run.noise = 0.01
    d = judge(no_recheck, run, fake, 0.875, d)
    assert d.judged is not None and not d.judged.accepted


def test_with_no_fine_tuning_epochs_a_step_is_judged_at_once_and_never_rechecked(graph):
    """finetune_epochs=0: the validation right after the surgery judges the step (another
    validation of the same network would change nothing, so a marginal rejection stands)."""
    rule, fake = schedule(max_drop=0.02, finetune_epochs=0), Fake(graph)
    run, d = start(rule, fake)
    run.noise = 0.01
    d = judge(rule, run, fake, 0.89, d, epochs_done=0)      # accepted before any epoch
    assert d.judged.accepted and d.judged.finetuned_epochs == 0 and rule.window(run) == 0 and d.plan
    d = judge(rule, run, fake, 0.875, d, epochs_done=0)     # marginal (within the noise), rejected
    assert d.judged is not None and not d.judged.accepted and fake.restores == 1


@pytest.mark.parametrize("metric", [float("nan"), float("inf")])
def test_a_metric_that_is_not_finite_rolls_the_step_back(graph, metric):
    rule, fake = schedule(mode="min"), Fake(graph)
    run, d = start(rule, fake, metric=0.3)
    run.noise = 0.05
    d = judge(rule, run, fake, metric, d)
    assert d.judged is not None and not d.judged.accepted and d.judged.drop == math.inf
    assert fake.restores == 1 and run.step == pytest.approx(0.1)


def test_the_epoch_budget_keeps_room_for_fine_tuning_and_the_final_fine_tune(graph):
    rule, fake = schedule(finetune_epochs=2, final_epochs=3), Fake(graph)
    run = RunState(step=rule.global_step)
    d = rule.decide(run, 0.9, fake.network(), 0, 5)       # before training: 0 + 2 + 3 <= 5
    assert d.plan
    run = RunState(step=rule.global_step)
    d = rule.decide(run, 0.9, fake.network(), 0, 4)       # 2 + 3 > 4: straight to the final fine-tune
    assert not d.plan and run.phase is Phase.FINAL


def test_with_fill_budget_a_target_reached_early_leaves_the_rest_to_the_final_fine_tune(graph):
    for fill, window in ((True, 15 - 1), (False, 3)):
        rule, fake = schedule(target_macs=0.85, final_epochs=3, fill_budget=fill), Fake(graph)
        run = RunState(step=rule.global_step)
        d = rule.decide(run, 0.9, fake.network(), 0, 15)
        run.baseline_cost = {"macs": d.judged.macs, "params": d.judged.params}
        run.pending = StepRecord("global", None, 0.15, int(0.8 * graph.macs), 1000)
        run.surgeries, run.epochs_since_surgery = 1, 0
        d = rule.decide(run, 0.9, fake.network(), 1, 15)   # accepted at the target: pruning ends
        assert run.phase is Phase.FINAL and not d.plan and d.machine["final_window"] == window
        assert rule.window(run) == window and not d.finish
    rule = schedule(final_epochs=2, fill_budget=True)
    assert rule._final_window(4, None) == 2 and rule._final_window(14, 15) == 2  # no budget; at least 2


def test_with_reference_accepted_a_step_is_judged_against_the_network_it_was_cut_from(graph):
    rule, fake = schedule(reference="accepted", max_drop=0.02), Fake(graph)
    run, d = start(rule, fake, metric=0.90)
    d = judge(rule, run, fake, 0.885, d)              # 1.5 points from the baseline: accepted
    assert d.judged.accepted and d.judged.drop == pytest.approx(0.015) and d.judged.reference is None
    run.accepted = {"record": d.judged.to_dict()}
    d = judge(rule, run, fake, 0.87, d)               # 3 points from the baseline, 1.5 from 0.885
    assert d.judged.accepted and d.judged.drop == pytest.approx(0.015) and d.judged.reference == 0.885
    run.accepted = {"record": d.judged.to_dict()}
    d = judge(rule, run, fake, 0.845, d)              # 2.5 from the accepted network: rolled back
    assert not d.judged.accepted
    baseline_rule = schedule(max_drop=0.02)
    run, d = start(baseline_rule, fake, metric=0.90)
    run.accepted = {"record": {**run.accepted["record"], "metric": 0.885}}
    d = judge(baseline_rule, run, fake, 0.87, d)      # the default: 3 points from the baseline
    assert not d.judged.accepted and d.judged.drop == pytest.approx(0.03)


def test_a_final_network_missing_the_bound_stands_when_the_last_accepted_one_is_no_better(graph):
    rule, fake = schedule(reference="accepted"), Fake(graph)
    run, _ = start(rule, fake, metric=0.90)
    run.accepted = {"record": {"metric": 0.85}}
    assert rule.final_check(run, 0.87) and not run.final_check["within_max_drop"] and run.final_check["final_kept"]
    assert run.final_check["returned"].startswith("final network (it misses max_drop")
    run.accepted = {"record": {"metric": 0.89}}
    assert not rule.final_check(run, 0.87) and not run.final_check["final_kept"]
    assert run.final_check["returned"].startswith("last accepted network")
    assert rule.final_check(run, 0.885) and run.final_check["returned"] == "final network"


def test_the_fine_tuning_learning_rate_follows_a_cosine_over_the_window():
    assert cosine_factor(0, 0, 10, 1) == 1.0
    assert cosine_factor(0, 5, 10, 1) == pytest.approx(0.5)
    assert cosine_factor(0, 9, 10, 1) < 0.03
    assert cosine_factor(1, 0, 10, 2) == pytest.approx(0.5)    # halfway through a 2-epoch window
    assert cosine_factor(3, 0, 10, 2) == 0.0                   # past the window
    assert cosine_factor(1, 0, float("inf"), 2) == pytest.approx(0.5)  # batches per epoch unknown


def test_the_screen_halves_a_step_that_loses_too_much_before_any_epoch(graph):
    """A plan whose cut loses more than screen_drop (unfine-tuned) is halved and planned
    again in the same decision; no epoch is spent on it, and the step taken says so."""
    screened = []

    def screen(plan):  # a loss equal to the share of MACs cut
        screened.append(plan_macs(plan, graph) / graph.macs)
        return screened[-1]

    fake = Fake(graph)
    network = fake.network
    fake.network = lambda: Network(*list(vars(network()).values())[:3], screen=screen)
    rule = schedule(global_step=0.4, screen=True, screen_drop=0.11)
    run, d = start(rule, fake)
    assert len(screened) == 3 and screened[0] >= 0.4 and screened[-1] <= 0.11  # 0.4, 0.2, then 0.1
    assert d.planned == ("global", None, pytest.approx(0.1)) and d.screened_out == 2
    assert run.step == pytest.approx(0.1)
    # off (the default), the same network takes the planned step as it is
    run, d = start(schedule(global_step=0.4), fake)
    assert d.planned == ("global", None, 0.4) and d.screened_out == 0 and len(screened) == 3
    # in Phase II it is the group's own step that halves, until the group leaves the queue
    screened.clear()
    rule = schedule(phases=["layerwise"], screen=True, screen_drop=1e-9)
    run, d = start(rule, fake)
    assert not d.plan and run.phase is Phase.FINAL and screened  # every group screened out
    assert all(step < rule.min_step for step in run.layer_steps.values())


def test_phase_one_with_round_to_cuts_instead_of_ending_empty(graph):
    """A global step of a few filters per group with round_to: each group's width rounds to
    the nearest multiple, so Phase I plans a cut of whole multiples instead of an empty plan
    that would pass on to Phase II without a global step."""
    rule, fake = schedule(global_step=0.1, round_to=8), Fake(graph)
    run, d = start(rule, fake)
    assert d.planned == ("global", None, 0.1)
    assert d.plan and all((g.channels - len(d.plan.get(g.root, []))) % 8 == 0
                          for g in graph.groups if g.root in d.plan)


@pytest.mark.parametrize("phases", [["global"], ["layerwise"]])
def test_a_halved_step_that_plans_the_cut_just_rolled_back_is_halved_again(graph, phases):
    """With round_to a step is whole blocks: halving it can leave the very cut rolled back,
    which would be judged again for nothing (a whole fine-tuning window). The step halves
    until its plan differs; Phase I ends, or a group leaves the queue, where none does."""
    # a quarter of a 64-wide group at round_to 16 leaves 48; an eighth leaves 56, nearest 48 too
    rule = schedule(phases=phases, global_step=0.1, layer_step=0.25, min_step=0.01, round_to=16,
                    layer_order="back_to_front")
    fake = Fake(graph)
    run, d = start(rule, fake)
    tried, (_, layer, step) = d.plan, d.planned
    assert layer is None or fake.graph.channels[layer] == 64
    d = judge(rule, run, fake, 0.5, d)                     # a large drop: rolled back
    assert not d.judged.accepted
    halved = run.step if layer is None else run.layer_steps[layer]
    assert halved < step / 2                               # halved more than once
    again = d.plan if d.planned is not None and d.planned[1] == layer else None
    assert again != tried
    # without round_to a halved step is a smaller cut: halved once, as before
    rule, fake = schedule(phases=phases, global_step=0.4, layer_step=0.5, min_step=0.01), Fake(graph)
    run, d = start(rule, fake)
    _, layer, step = d.planned
    judge(rule, run, fake, 0.5, d)
    assert (run.step if layer is None else run.layer_steps[layer]) == pytest.approx(step / 2)
