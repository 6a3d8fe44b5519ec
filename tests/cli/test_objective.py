"""The objective a sweeper maximises (pl_pruning.cli.objective)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from pl_pruning.cli.objective import Objective
from pl_pruning.errors import PlPruningError


def _objective(*overrides: str) -> Objective:
    with initialize_config_module(version_base="1.3", config_module="pl_pruning.conf"):
        return Objective.from_config(compose(config_name="config", overrides=list(overrides)).objective)


def test_objective_is_the_reduction_within_max_drop_else_a_penalty():
    results = {"pruned": {}, "macs_reduction": 4.0, "params_reduction": 6.0, "acc_drop": 0.015}
    assert Objective(max_drop=0.02)(results) == 4.0
    assert Objective("params_reduction", 0.02)(results) == 6.0
    worse = Objective(max_drop=0.02)({**results, "acc_drop": 0.05})
    assert worse == pytest.approx(-0.03)
    assert Objective(max_drop=0.02)({**results, "acc_drop": 0.03}) > worse  # graded
    assert Objective(max_drop=0.02, penalty=-1.0)({**results, "acc_drop": 0.05}) == pytest.approx(-1.03)
    assert Objective()({"baseline": {}}) == 1.0  # pruning=none
    assert Objective(max_drop=0.02).summary(results) == {
        "value": 4.0, "metric": "macs_reduction", "max_drop": 0.02, "within_max_drop": True}


def test_settings_come_from_the_config_and_follow_pruning_max_drop():
    assert _objective("pruning=global", "pruning.controller.max_drop=0.05") == Objective("macs_reduction", 0.05, 0.0)
    assert _objective("pruning=none").max_drop == 0.02
    assert _objective("objective.metric=params_reduction", "objective.penalty=-2").metric == "params_reduction"


@pytest.mark.parametrize("override, message", [
    ("objective.metric=acc", "unknown objective.metric 'acc'; choose one of: macs_reduction, params_reduction"),
    ("objective.max_drop=1.5", r"objective.max_drop must be in \[0, 1\), got 1.5"),
    ("objective.max_drop=true", r"objective.max_drop must be in \[0, 1\), got True"),
    ("objective.penalty=inf", "objective.penalty must be a finite number, got inf"),
])
def test_bad_settings_are_named(override, message):
    with pytest.raises(PlPruningError, match=message):
        _objective(override)
