"""Every option of every config group composes, and the composed objects instantiate."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

CONF = Path(__file__).resolve().parents[1] / "pl_pruning" / "conf"
GROUPS = ["model", "data", "optim", "trainer", "callbacks", "logger", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides):
    with initialize_config_module(version_base="1.3", config_module="pl_pruning.conf"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option, tmp_path):
    overrides = [f"{group}={option}", f"hydra.run.dir={tmp_path}"]
    if group == "data" and option == "image_folder":
        overrides.append("data.root=/tmp")
    cfg = _compose(overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)  # what a real run sets
    HydraConfig.instance().set_config(cfg)
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
    cfg = _compose(["trainer=ddp"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2
