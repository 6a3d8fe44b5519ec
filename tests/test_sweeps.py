"""Presets, experiments, launchers, sweeps, the objective and the sweep report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from pl_pruning import app, report
from pl_pruning.criteria import CRITERIA
from pl_pruning.errors import PlPruningError

CONF = Path(__file__).resolve().parents[1] / "pl_pruning" / "conf"
PRESETS = sorted(p.stem for p in (CONF / "pruning").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# A pruning job of ~20 s on digits: 1 baseline epoch, one pruning step, no latency timing.
QUICK = ["trainer.max_epochs=1", "pruning.max_epochs=3", "pruning.final_epochs=0", "pruning.max_steps=1",
         "measure.latency=false", "callbacks=none", "logger=none"]


def _compose(*overrides: str):
    with initialize_config_module(version_base="1.3", config_module="pl_pruning.conf"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


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


# --------------------------------------------------------------------------- composition

def test_presets_and_experiments_are_all_there():
    assert PRESETS == ["global", "layerwise", "none", "two_phase"]
    assert {"vgg16_cifar10", "resnet56_cifar10", "digits_quick", "cifar10_local"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_pruning_preset_composes_the_three_callbacks(preset):
    cfg = _compose(f"pruning={preset}")
    if preset == "none":
        assert not (cfg.pruning or {}).get("callbacks")
        return
    callbacks = cfg.pruning.callbacks
    assert {c._target_ for c in callbacks.values()} == {
        "pl_pruning.EntropyStatistics", "pl_pruning.PhaseController", "pl_pruning.MaxEntropyFreeze"}
    controller = callbacks.phase_controller
    assert list(controller.phases) == {"two_phase": ["global", "layerwise"], "global": ["global"],
                                       "layerwise": ["layerwise"]}[preset]
    assert controller.criterion == "conditional_entropy"
    # the criterion is one override away, for every preset
    cfg = _compose(f"pruning={preset}", "pruning.criterion=apoz")
    assert cfg.pruning.callbacks.phase_controller.criterion == "apoz"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_composes_with_every_preset(experiment, preset):
    cfg = _compose(f"experiment={experiment}", f"pruning={preset}")
    assert cfg.model._target_ == "pl_pruning.models.build_model"
    assert cfg.data._target_.startswith("pl_pruning.data.")
    assert bool((cfg.pruning or {}).get("callbacks")) == (preset != "none")
    assert 0 <= cfg.objective.max_drop < 1


def test_paper_experiments_are_the_paper_setting():
    vgg = _compose("experiment=vgg16_cifar10")
    assert (vgg.model.name, vgg.model.width) == ("vgg16", 1.0)
    assert vgg.data._target_ == "pl_pruning.data.CIFAR10DataModule"
    assert vgg.trainer.accelerator == "gpu" and vgg.trainer.max_epochs >= 160
    assert vgg.pruning.max_drop == 0.02 and vgg.pruning.criterion == "conditional_entropy"
    assert vgg.pruning.phases == ["global", "layerwise"]
    resnet = _compose("experiment=resnet56_cifar10")
    assert resnet.model.name == "resnet56" and resnet.trainer.accelerator == "gpu"


# --------------------------------------------------------------------------- launchers

def test_slurm_launcher_renders_an_sbatch_script_without_a_cluster(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = _compose("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                   "hydra.launcher.partition=gpu_a100", "hydra.launcher.timeout_min=720",
                   f"hydra.sweep.dir={tmp_path}")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher.pop("_target_") == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["partition"], launcher["timeout_min"]) == ("gpu_a100", 720)
    # one SLURM task per device, as Lightning's SLURMEnvironment requires
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    # Hand the fields to submitit exactly as the launcher does; submitit checks every name.
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun here
    executor = submitit.AutoExecutor(cluster="slurm", folder=launcher.pop("submitit_folder"),
                                     slurm_max_num_timeout=launcher.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    sbatch = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --partition=gpu_a100", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --time=720", "#SBATCH --job-name=pl-prune"):
        assert line in sbatch, sbatch


def test_local_launcher_is_submitit_local():
    cfg = _compose("hydra/launcher=local")
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 1


def test_optuna_example_tunes_real_keys_and_maximises_the_objective():
    cfg = _compose("hydra/sweeper=optuna_pruning")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize"
    parser = OverridesParser.create()
    for key, value in sweeper.params.items():
        assert "max_drop" not in key  # a trial must not loosen its own constraint
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
        override = parser.parse_override(f"{key}={value}")
        if key == "pruning.criterion":
            assert set(override.sweep_string_iterator()) <= set(CRITERIA)


# --------------------------------------------------------------------------- objective

def test_objective_is_the_reduction_within_max_drop_else_a_penalty():
    results = {"pruned": {}, "macs_reduction": 4.0, "params_reduction": 6.0, "acc_drop": 0.015}
    assert app.objective(results, max_drop=0.02) == 4.0
    assert app.objective(results, "params_reduction", 0.02) == 6.0
    worse = app.objective({**results, "acc_drop": 0.05}, max_drop=0.02)
    assert worse == pytest.approx(-0.03)
    assert app.objective({**results, "acc_drop": 0.03}, max_drop=0.02) > worse  # graded
    assert app.objective({"baseline": {}}) == 1.0  # pruning=none
    assert app._objective_settings(_compose("pruning=global", "pruning.max_drop=0.05")) == (
        "macs_reduction", 0.05, 0.0)
    assert app._objective_settings(_compose("pruning=none"))[1] == 0.02
    with pytest.raises(PlPruningError, match="unknown objective.metric 'acc'; choose one of: macs_reduction"):
        app._objective_settings(_compose("objective.metric=acc"))


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("args", [["pruning.criterion=l1,entropyy"], ["-m", "pruning.criterion=choice(apoz,foo)"],
                                  ["+pruning.criterion=foo"]])
def test_unknown_criterion_anywhere_on_the_command_line_lists_the_criteria(args):
    with pytest.raises(PlPruningError, match=r"unknown criterion '\w+'; choose one of: conditional_entropy, "
                                             r"entropy, mutual_information, apoz, l1, random"):
        app.check_overrides(args)
    app.check_overrides(["-m", "pruning.criterion=l1,apoz", "seed=0,1", "pruning=global"])  # fine


@pytest.mark.parametrize("group, bad", [("pruning", "twophase"), ("experiment", "vgg16"),
                                        ("hydra/launcher", "slurmm")])
def test_unknown_preset_lists_the_options(group, bad):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    with pytest.raises(MissingConfigException) as err:
        _compose(f"{group}={bad}")
    message = str(err.value)
    assert f"Could not find '{group}/{bad}'" in message and f"Available options in '{group}':" in message
    assert all(f"\t{o}\n" in message for o in options), message


@pytest.mark.slow
def test_bad_sweep_fails_before_any_job(cli, tmp_path):
    proc = subprocess.run([*cli, "-m", "pruning.criterion=l1,entropyy", "seed=0,1",
                           f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "pl-prune: error: unknown criterion 'entropyy'; choose one of: conditional_entropy" in proc.stderr
    assert "Traceback" not in proc.stderr and "Launching" not in proc.stdout + proc.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- report (unit)

def _fake_job(folder: Path, overrides: list[str] | None, seed: int, drop: float, macs_red: float,
              pruned: bool = True, criterion: str = "l1") -> None:
    folder.mkdir(parents=True)
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    crit = next((o.split("=")[1] for o in overrides or [] if o.startswith("pruning.criterion")), criterion)
    results = {"baseline": {"test_acc": 0.98, "latency_ms": 2.0},
               "config": {"seed": seed, "pruning": {"criterion": crit},
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
        _fake_job(tmp_path / str(i), [f"pruning.criterion={crit}", f"seed={seed}", *common], seed, drop, red)
    (tmp_path / "4" / ".hydra").mkdir(parents=True)  # a job that failed
    (tmp_path / "4" / ".hydra" / "overrides.yaml").write_text("- pruning.criterion=random\n")
    paths = report.write_report(tmp_path, tmp_path / "out")
    md = paths["md"].read_text()
    assert "4 jobs in 2 settings" in md and "`trainer.max_epochs=3`" in md
    assert "| pruning.criterion=l1 | 2 | 98.00 ± 0.00 | 96.00 ± 1.41 | 2.00 ± 1.41 | 3.00 ± 1.41 |" in md
    assert "| pruning.criterion=apoz | 2 |" in md
    assert "1 job folders have no results.json" in md and "`4`" in md
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["setting"] for r in rows] == ["pruning.criterion=l1", "pruning.criterion=apoz"]
    assert float(rows[0]["macs_reduction_mean"]) == 3.0
    assert float(rows[0]["macs_reduction_std"]) == pytest.approx(2 ** 0.5)
    assert float(rows[1]["latency_speedup_mean"]) == 2.0
    jobs = list(csv.DictReader(paths["jobs_csv"].open()))
    assert [j["seed"] for j in jobs] == ["0", "1", "0", "1"]
    assert paths["png"].stat().st_size > 10_000


def test_report_without_hydra_folders_groups_by_differing_config(tmp_path):
    for i, (crit, seed) in enumerate([("l1", 0), ("l1", 1), ("apoz", 0)]):
        _fake_job(tmp_path / str(i), None, seed, 0.01, 2.0, criterion=crit)
    settings, _ = report.group_settings(report.load_jobs(tmp_path)[0])
    assert [(s.label, len(s.jobs)) for s in settings] == [("pruning.criterion=l1", 2),
                                                          ("pruning.criterion=apoz", 1)]


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
        assert r["objective"]["value"] == app.objective(r, "macs_reduction", 0.02)
    assert [r["config"]["seed"] for r in results] == [0, 1]
    proc = _run([sys.executable, "-m", "pl_pruning.report", str(sweep)], cwd=tmp_path)
    assert "2 jobs in 1 settings" in proc.stdout and "| (all jobs) | 2 |" in proc.stdout
    for name in ("sweep_report.md", "sweep_report.csv", "sweep_jobs.csv", "sweep_report.png"):
        assert (sweep / name).is_file(), name


@pytest.mark.slow
def test_two_job_multirun_with_submitit_local_and_the_report_script(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _run([*cli, "-m", "hydra/launcher=local", "pruning.criterion=l1,conditional_entropy",
          f"hydra.sweep.dir={tmp_path}", *QUICK], cwd=tmp_path)
    assert list((tmp_path / ".submitit").iterdir())  # the jobs really went through submitit
    for i, crit in enumerate(["l1", "conditional_entropy"]):
        r = json.loads((tmp_path / str(i) / "results.json").read_text())
        assert r["pruning"]["criterion"] == crit and "objective" in r
    script = Path(sys.executable).with_name("pl-prune-report")
    proc = _run([str(script) if script.exists() else "pl-prune-report", str(tmp_path), "--out",
                 str(tmp_path / "report")], cwd=tmp_path)
    assert "2 jobs in 2 settings" in proc.stdout
    md = (tmp_path / "report" / "sweep_report.md").read_text()
    assert "| pruning.criterion=l1 | 1 |" in md and "| pruning.criterion=conditional_entropy | 1 |" in md
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
