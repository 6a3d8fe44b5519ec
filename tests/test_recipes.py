"""The two paths in Python: a preset's callbacks and fit settings, from the app's own YAML."""

from __future__ import annotations

import pytest
from hydra.errors import MissingConfigException

from pl_pruning import (
    Distillation,
    EntropyStatistics,
    MaxEntropyFreeze,
    PhaseController,
    PlPruningError,
)
from pl_pruning.recipes import recipe


def test_the_recommended_recipe_is_the_default_preset_with_overrides():
    r = recipe("at_once", "controller.target_macs=0.3333", "fit.max_epochs=8")
    assert [type(c) for c in r.callbacks] == [EntropyStatistics, PhaseController, MaxEntropyFreeze, Distillation]
    controller = r.callbacks[1]
    assert controller.criterion_name == "l1" and controller.phases == ["global", "layerwise"]
    assert r.settings["controller"]["target_macs"] == 0.3333 and r.max_epochs == 8 and r.lr == 0.01
    assert r.callbacks[2].enabled is False and r.callbacks[3].enabled is False


def test_the_paper_recipe_is_two_phase():
    r = recipe("two_phase")
    controller = r.callbacks[1]
    assert controller.criterion_name == "conditional_entropy" and controller.phases == ["global", "layerwise"]
    assert r.settings["controller"]["target_macs"] is None and r.callbacks[2].enabled is True


def test_bad_recipes_are_named():
    with pytest.raises(MissingConfigException, match="at_once"):
        recipe("atonce")
    with pytest.raises(PlPruningError, match="max_drop"):
        recipe("at_once", "controller.max_drop=1.5")
