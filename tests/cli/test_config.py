"""The app's config (conf/, the package pl_pruning.conf): every option composes and instantiates; the pruning
arguments' YAML files hold their constructors' defaults; presets set only what differs;
every setting has one name; launchers and the Optuna example."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from pl_pruning import Distillation, EntropyStatistics, MaxEntropyFreeze, PhaseController
from pl_pruning.cli.pruning_node import PRUNING_CALLBACKS, pruning_callbacks, pruning_on
from pl_pruning.errors import PlPruningError
from pl_pruning.scoring import CRITERIA

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ["model", "data", "optim", "trainer", "callbacks", "logger", "experiment"]
PRESETS = sorted(p.stem for p in (CONF / "pruning").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(*overrides: str, run_dir: Path | None = None):
    with initialize_config_module(version_base="1.3", config_module="pl_pruning.conf"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)  # what a real run sets
        HydraConfig.instance().set_config(cfg)
    return cfg


# --------------------------------------------------------------------------- groups

@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option, tmp_path):
    overrides = [f"{group}={option}", f"hydra.run.dir={tmp_path}"]
    if group == "data" and option == "image_folder":
        overrides.append("data.root=/tmp")
    cfg = _compose(*overrides, run_dir=tmp_path)
    section = cfg[group] if group != "experiment" else cfg
    assert section is not None
    if group in ("callbacks", "logger"):
        for node in (section or {}).values():
            instantiate(node)
    elif group == "trainer":
        assert cfg.trainer._target_ == "lightning.Trainer"
    elif group == "model":
        assert cfg.model._target_ == "pl_pruning.models.build_model"
        assert cfg.model.name


def test_every_group_has_options():
    for group in GROUPS:
        assert _options(group), group


def test_ddp_trainer_is_two_processes():
    cfg = _compose("trainer=ddp")
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2


# --------------------------------------------------------------------------- pruning callbacks

def _defaults(cls: type) -> dict:
    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self"}


@pytest.mark.parametrize("node, cls", sorted(PRUNING_CALLBACKS.items()))
def test_each_argument_file_holds_its_constructors_real_defaults(node, cls):
    arguments = OmegaConf.to_container(OmegaConf.load(CONF / "pruning" / "arguments" / f"{node}.yaml"))
    defaults = _defaults(cls)
    assert list(arguments) == list(defaults)  # every argument, one line each, in signature order
    for arg, default in defaults.items():
        expected = list(default) if isinstance(default, tuple) else default
        assert arguments[arg] == expected, arg


def _own(preset: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "pruning" / f"{preset}.yaml"))


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_each_preset_node_goes_to_its_class_as_it_is(preset, tmp_path):
    """The round trip a user makes by hand: every callback node of a composed preset is its
    class's keyword arguments, nothing else (``PhaseController(**cfg.pruning.controller)``)."""
    pruning = _compose(f"pruning={preset}", run_dir=tmp_path).pruning
    assert set(pruning) == {*PRUNING_CALLBACKS, "fit"}
    for node, cls in PRUNING_CALLBACKS.items():
        built = cls(**pruning[node])
        assert type(built) is cls
    controller = PhaseController(**pruning.controller)
    assert controller.criterion_name == pruning.controller.criterion
    assert list(controller.phases) == list(pruning.controller.phases)
    assert set(pruning.fit) == {"max_epochs", "lr", "scheduler"}


def test_a_preset_inherits_only_what_its_defaults_list_names():
    """Every preset's defaults list is written out in the file: the argument files, or for
    ``global`` and ``layerwise`` the paper's preset, each with its comment."""
    nodes = [f"arguments/{n}@{n}" for n in ("statistics", "controller", "freeze", "distill", "fit")]
    for preset in ("two_phase", "at_once"):
        assert _own(preset)["defaults"] == [*nodes, "_self_"], preset
    for preset in ("global", "layerwise"):
        assert _own(preset) == {"defaults": ["two_phase", "_self_"], "controller": {"phases": [preset]}}
    for preset in PRESETS:  # settings and short comments; measurements live with their benchmark
        comments = [line for line in (CONF / "pruning" / f"{preset}.yaml").read_text().splitlines()
                    if line.lstrip().startswith("#")]
        assert len(comments) <= 6, preset


def test_presets_set_only_what_differs_from_the_constructors():
    controller = _defaults(PhaseController)
    two_phase = {"final_epochs": 3}
    for preset, differs in [("two_phase", two_phase), ("global", {**two_phase, "phases": ["global"]}),
                            ("layerwise", {**two_phase, "phases": ["layerwise"]})]:
        pruning = OmegaConf.to_container(_compose(f"pruning={preset}").pruning)
        changed = {k: v for k, v in pruning["controller"].items()
                   if v != (list(controller[k]) if isinstance(controller[k], tuple) else controller[k])}
        assert changed == differs, preset
        arguments = {node: OmegaConf.to_container(OmegaConf.load(CONF / "pruning" / "arguments" / f"{node}.yaml"))
                     for node in ("statistics", "freeze", "distill")}
        assert pruning | {"distill": {**pruning["distill"], "enabled": True}} == pruning | arguments
        assert pruning["distill"]["enabled"] is False  # the paper has no distillation


def test_the_at_once_preset_is_the_setting_rederived_on_validation():
    """``pruning=at_once`` holds the recommended setting of benchmarks/compare/PROTOCOL.md (the
    harness's steps judged at once, L1 scores, both phases, freeze and distillation off) with a
    10x target, nothing more."""
    at_once = OmegaConf.to_container(_compose("pruning=at_once").pruning)
    two_phase = OmegaConf.to_container(_compose("pruning=two_phase").pruning)
    changed = {k: v for k, v in at_once["controller"].items() if v != two_phase["controller"][k]}
    assert changed == {"finetune_epochs": 0, "target_macs": 0.1, "reference": "accepted", "max_drop": 0.05,
                       "global_step": 0.1, "grow": 1.0, "min_step": 0.025, "fill_budget": True, "criterion": "l1"}
    assert at_once["fit"] == {**two_phase["fit"], "max_epochs": 40}
    assert at_once["freeze"] == {**two_phase["freeze"], "enabled": False}
    assert at_once["distill"] == two_phase["distill"] == {"weight": 1.0, "temperature": 4.0, "enabled": False}


def test_the_default_is_the_recommended_path():
    assert OmegaConf.to_container(_compose().pruning) == OmegaConf.to_container(_compose("pruning=at_once").pruning)


def test_presets_and_experiments_are_all_there():
    assert PRESETS == ["at_once", "global", "layerwise", "none", "two_phase"]
    assert {"vgg16_cifar10", "resnet56_cifar10", "digits_quick", "cifar10_local"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_pruning_preset_builds_the_three_callbacks(preset, tmp_path):
    cfg = _compose(f"pruning={preset}", run_dir=tmp_path)
    callbacks = pruning_callbacks(cfg.pruning)
    if preset == "none":
        assert callbacks == []
        return
    stats, controller, freeze, distill = callbacks  # the order the hooks run in
    assert (type(stats), type(controller), type(freeze), type(distill)) == (
        EntropyStatistics, PhaseController, MaxEntropyFreeze, Distillation)
    assert distill.enabled is False and freeze.enabled is (preset != "at_once")
    cfg = _compose(f"pruning={preset}", "pruning.distill=false", run_dir=tmp_path)
    assert [type(c) for c in pruning_callbacks(cfg.pruning)][-1] is MaxEntropyFreeze  # off: left out
    assert controller.phases == {"two_phase": ["global", "layerwise"], "global": ["global"],
                                 "layerwise": ["layerwise"], "at_once": ["global", "layerwise"]}[preset]
    assert controller.criterion_name == ("l1" if preset == "at_once" else "conditional_entropy")
    assert controller.final_epochs == 3
    # the criterion is one override away, for every preset
    cfg = _compose(f"pruning={preset}", "pruning.controller.criterion=apoz", run_dir=tmp_path)
    assert pruning_callbacks(cfg.pruning)[1].criterion_name == "apoz"


def test_every_setting_has_one_short_name(tmp_path):
    cfg = _compose("pruning.controller.monitor=val_loss", "pruning.controller.mode=min", "pruning.controller.min_channels=2",
                   "pruning.controller.ignored_layers=[net.features.0]", "pruning.controller.layer_order=by_macs",
                   "pruning.statistics.num_bins=16", "pruning.statistics.calibration_batches=2",
                   "pruning.freeze.fraction=0.2", "pruning.freeze.enabled=false",
                   "pruning.distill.enabled=false", "pruning.distill.temperature=2", run_dir=tmp_path)
    stats, controller, freeze, distill = pruning_callbacks(cfg.pruning)
    assert (controller.monitor, controller.mode, controller.min_channels) == ("val_loss", "min", 2)
    assert controller.layer_order == "by_macs"
    assert stats.num_bins == 16
    assert (freeze.fraction, freeze.enabled) == (0.2, False)
    assert (distill.enabled, distill.temperature, distill.weight) == (False, 2.0, 1.0)
    # a callback node set to null (or distill=false) is left out
    cfg = _compose("pruning.freeze=null", "pruning.distill=false", run_dir=tmp_path)
    assert [type(c) for c in pruning_callbacks(cfg.pruning)] == [EntropyStatistics, PhaseController]


@pytest.mark.parametrize("override, message", [
    ("pruning.controller.min_channels=0", "^pruning.controller.min_channels must be an integer >= 1, got 0"),
    ("pruning.statistics.num_bins=1", "^pruning.statistics.num_bins must be an integer >= 2, got 1"),
    ("pruning.freeze.fraction=1.5", r"^pruning.freeze.fraction must be in \[0, 1\), got 1.5"),
    ("pruning.controller.criterion=entropyy", r"^unknown pruning.controller.criterion 'entropyy'"),
    ("pruning.distill.temperature=0", r"^pruning.distill.temperature must be"),
])
def test_bad_values_under_every_name_are_bad_input(override, message):
    """Each is named by the user's full key (the app prints it as one line, exit 2)."""
    with pytest.raises(PlPruningError, match=message):
        pruning_callbacks(_compose(override).pruning)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_composes_with_every_preset(experiment, preset):
    cfg = _compose(f"experiment={experiment}", f"pruning={preset}")
    assert cfg.model._target_ == "pl_pruning.models.build_model"
    assert cfg.data._target_.startswith("pl_pruning.data.")
    assert pruning_on(cfg.pruning) == (preset != "none")
    assert 0 <= cfg.objective.max_drop < 1


def test_cifar_experiments_take_the_recommended_path_and_the_paper_is_one_override_away():
    for experiment, model in (("vgg16_cifar10", "vgg16"), ("resnet56_cifar10", "resnet56")):
        recommended = _compose(f"experiment={experiment}")
        assert (recommended.model.name, recommended.model.width) == (model, 1.0)
        assert recommended.data._target_ == "pl_pruning.data.CIFAR10DataModule"
        assert recommended.trainer.accelerator == "gpu" and recommended.trainer.max_epochs >= 160
        assert recommended.pruning == _compose("pruning=at_once").pruning
        paper = _compose(f"experiment={experiment}", "pruning=two_phase")
        assert paper.pruning == _compose("pruning=two_phase").pruning
        assert paper.pruning.controller.criterion == "conditional_entropy"
        assert paper.pruning.controller.phases == ["global", "layerwise"]
        # the paper prunes as far as its 2-point bound allows, with no target
        assert paper.pruning.controller.max_drop == 0.02 and paper.pruning.controller.target_macs is None


@pytest.mark.parametrize("group, bad", [("pruning", "twophase"), ("experiment", "vgg16"),
                                        ("hydra/launcher", "slurmm")])
def test_unknown_preset_lists_the_options(group, bad):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    with pytest.raises(MissingConfigException) as err:
        _compose(f"{group}={bad}")
    message = str(err.value)
    assert f"Could not find '{group}/{bad}'" in message and f"Available options in '{group}':" in message
    assert all(f"\t{o}\n" in message for o in options), message


# --------------------------------------------------------------------------- launchers, sweeper

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
        if key == "pruning.controller.criterion":
            assert set(override.sweep_string_iterator()) <= set(CRITERIA)
        # each value the sampler may pick composes and builds the callbacks
        choices = (list(override.sweep_string_iterator()) if override.is_discrete_sweep()
                   else [override.value().start if hasattr(override.value(), "start") else None])
        for choice in [c for c in choices if c is not None][:2]:
            pruning_callbacks(_compose(f"{key}={choice}").pruning)


@pytest.mark.parametrize("overrides, message", [
    (["trainer.max_epochs=0"], "trainer.max_epochs must be an integer >= 1 to train the baseline, got 0"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs must be an integer >= 1 to train the baseline, got -1"),
    (["pruning.fit.max_epochs=0"], "pruning.fit.max_epochs must be an integer >= 1, got 0"),
    (["measure.batch_size=0"], "measure.batch_size must be an integer >= 1, got 0"),
    (["seed=abc"], "seed must be an integer, got 'abc'"),
    (["data=image_folder"], r"data.root must be given \(the folder or .tar.gz of the images\)"),
    (["trainer=gpu"], "trainer=gpu needs a CUDA GPU"),
])
def test_values_that_would_fail_late_or_fake_a_result_are_refused_first(overrides, message, tmp_path):
    import torch

    from pl_pruning.cli.checks import check_run_config

    if overrides == ["trainer=gpu"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(PlPruningError, match=message):
        check_run_config(_compose(*overrides, run_dir=tmp_path))


def test_a_checkpoint_given_allows_a_baseline_fit_of_no_epochs(tmp_path):
    from pl_pruning.cli.checks import check_run_config

    check_run_config(_compose("trainer.max_epochs=0", "model.checkpoint=weights.pt", run_dir=tmp_path))
    check_run_config(_compose(run_dir=tmp_path))  # the default is fine


def test_a_latency_target_from_the_command_line_takes_the_measure_settings():
    cfg = _compose("pruning.controller.target_latency=40%", "pruning.controller.target_macs=null",
                   "pruning.controller.latency={runtime:onnxruntime}",
                   "measure.batch_size=32")
    controller = pruning_callbacks(cfg.pruning, cfg.measure)[1]
    assert str(controller.schedule.target_latency) == "40%"
    assert controller.latency_settings == {"runtime": "onnxruntime", "batch_size": 32, "num_threads": 1,
                                           "auto_round": False}
    with pytest.raises(PlPruningError, match="target_macs or target_latency, not both"):
        pruning_callbacks(_compose("pruning.controller.target_latency=40%").pruning)  # two_phase stops at target_macs 0.1
    with pytest.raises(PlPruningError, match="target_latency must be milliseconds"):
        pruning_callbacks(_compose("pruning.controller.target_latency=0.4", "pruning.controller.target_macs=null").pruning)
