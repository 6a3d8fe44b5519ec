"""The public API of ``pl_pruning``: what ``__all__`` promises is there, and no function
shadows a submodule."""

import importlib
import types

import pl_pruning

PUBLIC = {"EntropyStatistics", "PhaseController", "MaxEntropyFreeze", "prune_filters", "pruning_groups",
          "save_pruned", "load_pruned", "measure_cost", "ImageClassifier", "build_model", "PlPruningError"}


def test_all_lists_the_public_api_and_every_name_exists():
    assert PUBLIC <= set(pl_pruning.__all__)
    for name in pl_pruning.__all__:
        assert getattr(pl_pruning, name) is not None, name


def test_no_exported_name_shadows_a_submodule():
    for module in ("measure", "export", "checkpoint", "models", "data", "callbacks", "reports", "cli"):
        assert isinstance(getattr(pl_pruning, module, None) or importlib.import_module(f"pl_pruning.{module}"),
                          types.ModuleType), module
        assert module not in pl_pruning.__all__
    assert isinstance(pl_pruning.measure, types.ModuleType)
