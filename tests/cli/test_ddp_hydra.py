"""pl_pruning.cli.ddp_hydra: the command a Lightning-started DDP rank runs inside a Hydra job
(this job's overrides and folder, in run mode), and what the job's context manager patches
and puts back."""

import os
import sys

import lightning.fabric.strategies.launchers.subprocess_script as fabric_launcher
import lightning.pytorch.strategies.launchers.subprocess_script as pytorch_launcher
import pytest
from hydra import compose, initialize_config_module
from hydra.conf import ConfigSourceInfo
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from pl_pruning.cli.ddp_hydra import DIST_ENV, child_command, ddp_ranks_join_this_job, quote

AWKWARD = '/runs/a "quoted" dir,with=signs\\and [brackets]'


@pytest.mark.parametrize("value", [AWKWARD, "C:\\runs\\job 1", "ends\\", 'a\\"b', "it's", "a\\\\b", '"'])
def test_a_quoted_value_parses_back_to_itself(value):
    (override,) = OverridesParser.create().parse_overrides([f"hydra.run.dir={quote(value)}"])
    assert override.value() == value


@pytest.fixture
def hydra_job(tmp_path):
    """The HydraConfig of a composed job with a run folder, as inside the app."""
    with initialize_config_module(version_base="1.3", config_module="pl_pruning.conf"):
        cfg = compose("config", overrides=["experiment=digits_quick", "trainer.max_epochs=3"],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = AWKWARD
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.runtime.config_sources.append(ConfigSourceInfo(path="/my/configs", schema="file", provider="main"))
    HydraConfig.instance().set_config(cfg)
    yield cfg
    HydraConfig.instance().cfg = None


def test_a_rank_runs_this_jobs_overrides_in_this_jobs_folder(hydra_job, tmp_path):
    command, cwd = child_command(1)
    assert command[:4] == [sys.executable, "-m", "pl_pruning", "--config-name=config"]
    assert cwd == str(tmp_path)
    assert "--config-path=/my/configs" in command                      # a user's own config folder
    assert not any("pl_pruning.conf" in part for part in command)      # the app's own: not repeated
    overrides = OverridesParser.create().parse_overrides([c for c in command[4:] if not c.startswith("--")])
    values = {o.key_or_group: o.value() for o in overrides}
    assert values["experiment"] == "digits_quick" and values["trainer.max_epochs"] == 3
    assert values["hydra.run.dir"] == AWKWARD
    assert values["hydra.mode"] == "RUN" and values["hydra.job.name"] == "train_ddp_process_1"
    assert values["hydra.output_subdir"] is None


@pytest.fixture
def clean_dist_env(monkeypatch):
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)


def test_the_launchers_command_is_replaced_for_one_job_and_the_environment_put_back(clean_dist_env, monkeypatch):
    originals = (fabric_launcher._hydra_subprocess_cmd, pytorch_launcher._hydra_subprocess_cmd)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    with ddp_ranks_join_this_job():
        assert fabric_launcher._hydra_subprocess_cmd is child_command
        assert pytorch_launcher._hydra_subprocess_cmd is child_command
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="12910", WORLD_SIZE="2")  # as Lightning's launcher
    assert (fabric_launcher._hydra_subprocess_cmd, pytorch_launcher._hydra_subprocess_cmd) == originals
    assert os.environ["MASTER_ADDR"] == "10.0.0.1"
    assert "MASTER_PORT" not in os.environ and "WORLD_SIZE" not in os.environ


def test_a_rank_started_by_the_cluster_keeps_its_environment(clean_dist_env, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="in the job"), ddp_ranks_join_this_job():
        os.environ["MASTER_PORT"] = "12911"
        raise RuntimeError("in the job")
    assert fabric_launcher._hydra_subprocess_cmd is not child_command
    assert os.environ["MASTER_PORT"] == "12911" and os.environ["LOCAL_RANK"] == "1"
    del os.environ["MASTER_PORT"]  # not monkeypatch.delenv: its undo would put 12911 back for later tests
