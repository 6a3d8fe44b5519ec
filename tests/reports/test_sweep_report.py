"""The sweep report (pl_pruning.reports.sweep, `pl-prune-report`) on hand-made job folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pl_pruning.reports import sweep as report


def _fake_job(folder: Path, overrides: list[str] | None, seed: int, drop: float, macs_red: float,
              pruned: bool = True, criterion: str = "l1") -> None:
    folder.mkdir(parents=True)
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    crit = next((o.split("=")[1] for o in overrides or [] if o.startswith("pruning.controller.criterion")), criterion)
    results = {"baseline": {"test_acc": 0.98, "latency_ms": 2.0},
               "config": {"seed": seed, "pruning": {"controller": {"criterion": crit}},
                          "trainer": {"default_root_dir": str(folder)}}}
    if pruned:
        results.update(pruned={"test_acc": 0.98 - drop, "latency_ms": 1.0}, acc_drop=drop,
                       macs_reduction=macs_red, params_reduction=2 * macs_red,
                       objective={"value": macs_red, "metric": "macs_reduction", "max_drop": 0.02})
    (folder / "results.json").write_text(json.dumps(results))


def test_report_groups_by_overrides_minus_seed(tmp_path):
    common = ["trainer.max_epochs=3"]
    for i, (crit, seed, drop, red) in enumerate([("l1", 0, 0.01, 2.0), ("l1", 1, 0.03, 4.0),
                                                  ("apoz", 0, 0.00, 3.0), ("apoz", 1, 0.02, 3.0)]):
        _fake_job(tmp_path / str(i), [f"pruning.controller.criterion={crit}", f"seed={seed}", *common], seed, drop, red)
    (tmp_path / "4" / ".hydra").mkdir(parents=True)  # a job that failed
    (tmp_path / "4" / ".hydra" / "overrides.yaml").write_text("- pruning.controller.criterion=random\n")
    paths = report.write_report(tmp_path, tmp_path / "out")
    md = paths["md"].read_text()
    assert "4 jobs in 2 settings" in md and "`trainer.max_epochs=3`" in md
    assert "| pruning.controller.criterion=l1 | 2 | 98.00 ± 0.00 | 96.00 ± 1.41 | 2.00 ± 1.41 | 3.00 ± 1.41 |" in md
    assert "| pruning.controller.criterion=apoz | 2 |" in md
    assert "1 job folders have no results.json" in md and "`4`" in md
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["setting"] for r in rows] == ["pruning.controller.criterion=l1", "pruning.controller.criterion=apoz"]
    assert float(rows[0]["macs_reduction_mean"]) == 3.0
    assert float(rows[0]["macs_reduction_std"]) == pytest.approx(2 ** 0.5)
    assert float(rows[1]["latency_speedup_mean"]) == 2.0
    jobs = list(csv.DictReader(paths["jobs_csv"].open()))
    assert [j["seed"] for j in jobs] == ["0", "1", "0", "1"]
    assert paths["png"].stat().st_size > 10_000


def test_overrides_with_interpolations_are_read_as_written(tmp_path):
    """An array task's seed from its environment and a path inside its own folder: neither
    can be resolved after the job, and both label the jobs as they were typed."""
    for task in (0, 1):
        _fake_job(tmp_path / str(task), ["seed=${oc.env:SLURM_ARRAY_TASK_ID}", "pruning.criterion=l1",
                                         "+callbacks.x.path=${hydra:runtime.output_dir}/x"], task, 0.01, 2.0)
    settings, common = report.group_settings(report.load_jobs(tmp_path)[0])
    assert [(s.label, len(s.jobs)) for s in settings] == [("(all jobs)", 2)]
    assert common == ["pruning.criterion=l1", "+callbacks.x.path=${hydra:runtime.output_dir}/x"]


def test_report_without_hydra_folders_groups_by_differing_config(tmp_path):
    for i, (crit, seed) in enumerate([("l1", 0), ("l1", 1), ("apoz", 0)]):
        _fake_job(tmp_path / str(i), None, seed, 0.01, 2.0, criterion=crit)
    settings, _ = report.group_settings(report.load_jobs(tmp_path)[0])
    assert [(s.label, len(s.jobs)) for s in settings] == [("pruning.controller.criterion=l1", 2),
                                                          ("pruning.controller.criterion=apoz", 1)]


def test_report_of_unpruned_jobs_has_no_picture_but_a_table(tmp_path):
    _fake_job(tmp_path / "0", ["pruning=none"], 0, 0, 1, pruned=False)
    paths = report.write_report(tmp_path)
    assert "png" not in paths and "| (all jobs) | 1 | 98.00 | - |" in paths["md"].read_text()


def test_report_errors_are_one_clear_line(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    assert f"pl-prune-report: error: MULTIRUN_DIR '{tmp_path / 'nope'}' does not exist" in capsys.readouterr().err
    (tmp_path / "0").mkdir()
    assert report.main([str(tmp_path)]) == 2
    assert f"pl-prune-report: error: no results.json under '{tmp_path}'" in capsys.readouterr().err
    (tmp_path / "0" / "results.json").write_text("{not json")
    assert report.main([str(tmp_path)]) == 2
    assert "is not a readable results.json" in capsys.readouterr().err
