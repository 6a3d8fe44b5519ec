"""benchmarks/compare/run.py: what a run is called and which network it starts from."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # run.py imports benchmarks/parking.py
_spec = importlib.util.spec_from_file_location("compare_run", ROOT / "benchmarks" / "compare" / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def _args(method="pl_pruning", name=None, reduction=None, lr=run.FINETUNE_LR, budget=15, experiment=run.EXPERIMENT):
    import argparse

    return argparse.Namespace(method=method, name=name, reduction=reduction, lr=lr, budget=budget,
                              experiment=experiment)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, "two_phase"),
    ({"method": "torch_pruning", "reduction": 3.0}, "torch_pruning_3x"),
    ({"method": "l1_uniform", "reduction": 3.0, "lr": 0.05, "budget": 40}, "l1_uniform_3x_lr0.05_e40"),
    ({"name": "at_once_3x_e40", "budget": 40}, "at_once_3x_e40"),  # --name is taken as given
    ({"method": "torch_pruning", "reduction": 3.0, "experiment": "converged_resnet20"}, "resnet20_torch_pruning_3x"),
    ({"name": "at_once_3x", "experiment": "converged_resnet20"}, "resnet20_at_once_3x"),
])
def test_run_names_keep_settings_and_networks_apart(kwargs, expected):
    assert run.run_name(_args(**kwargs)) == expected


def test_each_experiment_starts_from_its_own_committed_network(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # main() moves to the repository root; put the test's back after
    assert run.CHECKPOINT == run.CHECKPOINTS[run.EXPERIMENT]
    for experiment, path in run.CHECKPOINTS.items():
        assert path.is_file(), f"{experiment}: {path} is not committed"
        assert (ROOT / "pl_pruning" / "conf" / "experiment" / f"{experiment}.yaml").is_file()
    with pytest.raises(SystemExit):
        run.main(["torch_pruning", "--reduction", "3", "--experiment", "converged_mine"])
    assert "no converged network is known for experiment 'converged_mine': give --checkpoint" in capsys.readouterr().err
