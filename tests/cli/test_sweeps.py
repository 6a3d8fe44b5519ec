"""Sweeps through the real command line: objectives returned to the sweeper, criteria
checked before the first job, submitit's local launcher, DDP ranks inside sweep jobs,
and the sweep report over what they wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pl_pruning.cli import app
from pl_pruning.cli.objective import Objective
from pl_pruning.errors import PlPruningError

ROOT = Path(__file__).resolve().parents[2]
# A pruning job of ~20 s on digits: 1 baseline epoch, one pruning step, no latency timing.
QUICK = ["trainer.max_epochs=1", "pruning.fit.max_epochs=3", "pruning.controller.final_epochs=0", "pruning.controller.max_steps=1",
         "measure.latency=false", "callbacks=none", "logger=none"]


def console_script(name: str) -> list[str]:
    """The command of a ``[project.scripts]`` entry, as pip installs it (read from
    pyproject.toml, so an installed copy of an older version does not stand in)."""
    entry = re.search(rf'^{name} = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    module, function = entry.split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


def _run(args, cwd, env=None, timeout=500):
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


# Hydra loads sweepers only from the hydra_plugins namespace package: a basic sweeper
# that also saves what every job returned, as Optuna's sweeper reads it.
RECORDING_SWEEPER = """
import json
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class RecordingSweeper(BasicSweeper):
    def sweep(self, arguments):
        returns = super().sweep(arguments)
        values = [r.return_value for batch in returns for r in batch]
        Path(str(self.config.hydra.sweep.dir), "returned.json").write_text(json.dumps(values))
        return returns
"""


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("args", [["pruning.controller.criterion=l1,entropyy"], ["-m", "pruning.controller.criterion=choice(apoz,foo)"],
                                  ["+pruning.controller.criterion=foo"]])
def test_unknown_criterion_anywhere_on_the_command_line_lists_the_criteria(args):
    with pytest.raises(PlPruningError, match=r"unknown pruning\.controller\.criterion '\w+'; choose one of: conditional_entropy, "
                                             r"entropy, mutual_information, apoz, l1, random"):
        app.check_overrides(args)
    app.check_overrides(["-m", "pruning.controller.criterion=l1,apoz", "seed=0,1", "pruning=global"])  # fine


@pytest.mark.slow
def test_bad_sweep_fails_before_any_job(cli, tmp_path):
    proc = subprocess.run([*cli, "-m", "pruning.controller.criterion=l1,entropyy", "seed=0,1",
                           f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "pl-prune: error: unknown pruning.controller.criterion 'entropyy'; choose one of: conditional_entropy" in proc.stderr
    assert "Traceback" not in proc.stderr and "Launching" not in proc.stdout + proc.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- real sweeps

@pytest.mark.slow
def test_two_job_multirun_with_the_basic_launcher_returns_objectives_and_reports(cli, tmp_path):
    plugins = tmp_path / "plugins" / "hydra_plugins"
    plugins.mkdir(parents=True)
    (plugins / "recording_sweeper.py").write_text(RECORDING_SWEEPER)
    sweep = tmp_path / "sweep"
    _run([*cli, "-m", "seed=0,1", f"hydra.sweep.dir={sweep}",
          "hydra.sweeper._target_=hydra_plugins.recording_sweeper.RecordingSweeper", *QUICK], cwd=tmp_path,
         env={"PYTHONPATH": os.pathsep.join([str(plugins.parent), os.environ.get("PYTHONPATH", "")])})
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in (0, 1)]
    returned = json.loads((sweep / "returned.json").read_text())
    # what the sweeper got is the objective in results.json, computed as documented
    assert returned == [r["objective"]["value"] for r in results]
    for r in results:
        assert r["objective"]["value"] == Objective("macs_reduction", 0.02)(r)
    assert [r["config"]["seed"] for r in results] == [0, 1]
    proc = _run([sys.executable, "-m", "pl_pruning.reports.sweep", str(sweep)], cwd=tmp_path)
    assert "2 jobs in 1 settings" in proc.stdout and "| (all jobs) | 2 |" in proc.stdout
    for name in ("sweep_report.md", "sweep_report.csv", "sweep_jobs.csv", "sweep_report.png"):
        assert (sweep / name).is_file(), name


@pytest.mark.slow
def test_two_job_multirun_with_submitit_local_and_the_report_script(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _run([*cli, "-m", "hydra/launcher=local", "pruning.controller.criterion=l1,conditional_entropy",
          f"hydra.sweep.dir={tmp_path}", *QUICK], cwd=tmp_path)
    assert list((tmp_path / ".submitit").iterdir())  # the jobs really went through submitit
    for i, crit in enumerate(["l1", "conditional_entropy"]):
        r = json.loads((tmp_path / str(i) / "results.json").read_text())
        assert r["pruning"]["criterion"] == crit and "objective" in r
    proc = _run([*console_script("pl-prune-report"), str(tmp_path), "--out", str(tmp_path / "report")],
                cwd=tmp_path)
    assert "2 jobs in 2 settings" in proc.stdout
    md = (tmp_path / "report" / "sweep_report.md").read_text()
    assert "| pruning.controller.criterion=l1 | 1 |" in md and "| pruning.controller.criterion=conditional_entropy | 1 |" in md
    assert (tmp_path / "report" / "sweep_report.png").is_file()


@pytest.mark.slow
def test_ddp_ranks_of_every_sweep_job_share_its_folder_and_rank0_alone_reports(cli, tmp_path):
    # Default sweep folder (multirun/<date>/<time>), cwd = tmp_path: a rank that replayed
    # the sweep (Lightning's own relaunch command) would start a second sweep folder.
    proc = _run([*cli, "-m", "seed=0,1", "trainer=ddp", *QUICK], cwd=tmp_path)
    sweeps = list((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    assert not (tmp_path / "outputs").exists()
    for job in ("0", "1"):
        folder = sweeps[0] / job
        assert (folder / "results.json").is_file() and (folder / "pruning_report.json").is_file()
        assert (folder / "train_ddp_process_1.log").is_file()  # rank 1 ran in this job's folder
        assert json.loads((folder / "results.json").read_text())["config"]["trainer"]["strategy"] == "ddp"
    out = proc.stdout + proc.stderr
    assert out.count("Launching 2 jobs locally") == 1  # no rank started a sweep of its own
    assert out.count("results: ") == 2  # one summary per job: rank 0 only
    assert out.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") >= 2
