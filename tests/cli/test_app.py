"""The Hydra app (pl_pruning.cli.app) through its real command line."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from pl_pruning import build_model, measure_cost


def _run(cli, tmp_path, *overrides, check=True):
    cmd = [*cli, f"hydra.run.dir={tmp_path}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_default_run_on_digits_trains_prunes_and_writes_results(cli, tmp_path):
    _run(cli, tmp_path, "trainer.max_epochs=6", "measure.batch_size=8", "pruning.fit.max_epochs=25",
         "pruning.controller.final_epochs=1")
    results = json.loads((tmp_path / "results.json").read_text())
    base, pruned = results["baseline"], results["pruned"]
    assert set(pruned) >= {"test_acc", "macs", "params", "latency_ms"}
    assert results["macs_reduction"] == pytest.approx(base["macs"] / pruned["macs"])
    assert results["macs_reduction"] > 1.0 and results["params_reduction"] > 1.0
    assert results["acc_drop"] == pytest.approx(base["test_acc"] - pruned["test_acc"])
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("results.json", "pruning_report.json", "pruning_report.md", "pruning_path.png",
                 "pruning_channels.png", "pruned_model.pt"):
        assert (tmp_path / name).is_file(), name
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name  # as the umask allows
    assert set(base) >= {"test_acc", "macs", "params", "latency_ms"}
    assert base["test_acc"] > 0.9
    expected = measure_cost(build_model("small_cnn", in_channels=1), torch.zeros(1, 1, 8, 8), latency=False)
    assert (base["macs"], base["params"]) == (expected.macs, expected.params)
    assert base["latency_ms"] > 0
    assert results["config"]["model"]["name"] == "small_cnn"
    assert list((tmp_path / "checkpoints").glob("*.ckpt"))
    assert (tmp_path / "csv").is_dir()


@pytest.mark.slow
def test_checkpoint_is_loaded_and_tested_without_training(cli, tmp_path):
    net = build_model("small_cnn", num_classes=10, in_channels=1)
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    _run(cli, tmp_path / "run", f"model.checkpoint={path}", "measure.latency=false", "pruning=none")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["baseline"]["checkpoint"] == str(path)
    assert results["baseline"]["latency_ms"] is None
    assert not (tmp_path / "run" / "checkpoints").exists()  # no training happened


BAD_INPUT = [
    (["model.name=vgg17"], "unknown model name 'vgg17'; choose one of: vgg11"),
    (["model.width=0"], "width must be a number > 0, got 0"),
    (["data=image_folder", "data.root=/no/such/dir"], "data.root='/no/such/dir' does not exist"),
    (["model=nonexistent"], "Could not find 'model/nonexistent'"),
    (["data=imagenet"], "Available options in 'data'"),
    (["pruning.controller.criterion=entropyy"],
     "unknown pruning.controller.criterion 'entropyy'; choose one of: conditional_entropy"),
    (["pruning.controller.max_drop=1.5"], "pruning.controller.max_drop must be in (0, 1), got 1.5"),
    (["trainer.max_epochs=0"], "trainer.max_epochs must be an integer >= 1 to train the baseline, got 0"),
    (["data=image_folder"], "data.root must be given (the folder or .tar.gz of the images)"),
]


@pytest.fixture(scope="module")
def bad_input_runs(cli, tmp_path_factory):
    """Every bad command line, started at once (most of each run is the interpreter
    starting), then waited for: the run folder, the exit status and stderr of each."""
    runs = []
    for i, (overrides, _) in enumerate(BAD_INPUT):
        folder = tmp_path_factory.mktemp(f"bad{i}")
        proc = subprocess.Popen([*cli, f"hydra.run.dir={folder}", *overrides], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        runs.append((folder, proc))
    finished = []
    for folder, proc in runs:
        stderr = proc.communicate(timeout=600)[1]
        finished.append((folder, proc.returncode, stderr))
    return finished


@pytest.mark.parametrize("case", range(len(BAD_INPUT)), ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_gets_one_clear_error(bad_input_runs, case):
    folder, returncode, stderr = bad_input_runs[case]
    assert returncode != 0
    assert BAD_INPUT[case][1] in stderr
    assert "Traceback" not in stderr
    assert not (folder / "results.json").exists()


def test_checkpoint_of_another_architecture_is_refused(cli, tmp_path):
    path = tmp_path / "vgg.pt"
    torch.save(build_model("vgg11", width=0.25).state_dict(), path)
    proc = _run(cli, tmp_path / "run", f"model.checkpoint={path}", check=False)
    assert proc.returncode == 2
    assert f"model.checkpoint='{path}' does not fit model=small_cnn width=1.0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_internal_failure_keeps_its_traceback(tmp_path):
    """Only bad input (PlPruningError) is one line with exit status 2; a bug is not hidden."""
    code = ("import sys\n"
            "import pl_pruning.cli.app as app\n"
            "def run(cfg):\n"
            "    return {}['a bug']\n"
            "app.run = run\n"
            f"sys.argv = ['pl-prune', 'hydra.run.dir={tmp_path}']\n"
            "app.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'a bug'" in proc.stderr
    assert "pl-prune: error" not in proc.stderr



def test_console_scripts_point_at_the_cli():
    import importlib
    import re
    from pathlib import Path

    from pl_pruning.cli import app
    from pl_pruning.reports import sweep

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    scripts = dict(re.findall(r'^(pl-prune[\w-]*) = "(.+)"$', text, re.M))
    resolved = {name: getattr(importlib.import_module(target.split(":")[0]), target.split(":")[1])
                for name, target in scripts.items()}
    assert resolved == {"pl-prune": app.main, "pl-prune-report": sweep.main}


# A small run of the paper's method (distillation on) with rollbacks: 2 baseline epochs, then
# Phase I (with rollbacks), Phase II and the final fine-tune in 9 pruning epochs.
KILL_RUN = ["pruning=two_phase", "pruning.distill.enabled=true", "trainer.max_epochs=2", "pruning.fit.max_epochs=9",
            "pruning.controller.final_epochs=1", "pruning.controller.max_drop=0.005",
            "pruning.controller.global_step=0.3", "pruning.controller.min_step=0.2", "measure.latency=false",
            "callbacks.rich_progress_bar=null"]


def _outcome(folder):
    """What a finished run leaves: its results (paths and timings left out), the pruned
    network's tensors and the controller's history (surgery times left out)."""
    results = json.loads((folder / "results.json").read_text())
    for block in (results["baseline"], results["pruned"]):
        block.pop("checkpoint", None)
    results.pop("config", None)
    history = [{k: v for k, v in e.items() if k != "surgery_s"}
               for e in json.loads((folder / "pruning_report.json").read_text())["history"]]
    weights = torch.load(folder / "pruned_model.pt", weights_only=False)["state_dict"]
    return results, history, weights


@pytest.mark.slow
def test_a_run_killed_after_every_epoch_in_turn_ends_bit_identical(cli, tmp_path):
    """SIGKILL at the start of every epoch in turn (baseline and pruning fits), each time
    followed by the same command in the same folder: the run that finally finishes has the
    same results, history and weights, bit for bit, as the run that was never killed."""
    import os
    from pathlib import Path

    epochs = 2 + 9
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")])}
    # the uninterrupted run goes beside the killed ones (a second core)
    whole = subprocess.Popen([*cli, f"hydra.run.dir={tmp_path / 'whole'}", *KILL_RUN], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "killed"
    for epoch in range(1, epochs):
        kill = ["+callbacks.kill._target_=kill_switch.KillAtEpoch", f"+callbacks.kill.epoch={epoch}",
                "+callbacks.kill.baseline_epochs=2"]
        proc = subprocess.run([*cli, f"hydra.run.dir={folder}", *KILL_RUN, *kill], capture_output=True,
                              text=True, timeout=600, env=env)
        assert proc.returncode == -9, (epoch, proc.returncode, proc.stderr[-3000:])
        assert not (folder / "results.json").exists()
        if epoch > 1:
            assert "resuming from" in proc.stderr, epoch
    last = _run(cli, folder, *KILL_RUN)
    assert f"resuming from {folder / 'pruning_checkpoints' / 'last.ckpt'}" in last.stderr
    assert not list(folder.rglob("last-v*.ckpt"))
    whole_stderr = whole.communicate(timeout=600)[1]
    assert whole.returncode == 0, whole_stderr[-3000:]
    assert "resuming" not in whole_stderr

    (results, history, weights), (results_k, history_k, weights_k) = _outcome(tmp_path / "whole"), _outcome(folder)
    assert results_k == results
    assert history_k == history
    assert sum(e["phase"] == "baseline" for e in history_k) == 1
    # both phases ran and a rollback was resumed across (which phase rolls back depends on
    # the installed numerics: on some installs Phase II accepts every step here)
    assert {"global", "layerwise"} <= {e["phase"] for e in history_k}
    assert any(e["accepted"] is False for e in history_k)
    assert weights_k.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(weights_k[key], value), key


@pytest.mark.slow
def test_a_preempted_cluster_job_is_requeued_and_resumes(cli, tmp_path):
    """The launcher path a SLURM job takes (hydra-submitit-launcher, here its local
    executor): the preemption signal (SIGUSR2) arrives in the pruning fit; submitit
    checkpoints the launcher and requeues the job, which reruns in the same folder and
    resumes both fits from their last.ckpt instead of starting again."""
    import os
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")])}
    marker = tmp_path / "preempted"
    proc = subprocess.run([*cli, "-m", "hydra/launcher=local", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                           "trainer.max_epochs=2", "pruning.fit.max_epochs=6", "pruning.controller.final_epochs=1",
                           "measure.latency=false", "callbacks.rich_progress_bar=null",
                           "+callbacks.preempt._target_=kill_switch.PreemptAtEpoch",
                           "+callbacks.preempt.epoch=2", f"+callbacks.preempt.marker={marker}"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # the signal was sent
    job = tmp_path / "sweep" / "0"
    log = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))
    assert "this job is preempted" in log and "Requeued job" in log
    assert f"resuming from {job / 'checkpoints' / 'last.ckpt'}" in log
    assert f"resuming from {job / 'pruning_checkpoints' / 'last.ckpt'}" in log
    report = json.loads((job / "pruning_report.json").read_text())
    assert sum(e["phase"] == "baseline" for e in report["history"]) == 1
    assert report["history"][-1]["phase"] == "final"
    results = json.loads((job / "results.json").read_text())
    assert results["pruned"]["macs"] < results["baseline"]["macs"]


@pytest.mark.slow
def test_outside_a_terminal_each_epoch_is_one_line_as_it_ends_and_decisions_reach_app_log(cli, tmp_path):
    """stdout to a file (SLURM, nohup): a line per epoch while the baseline still trains, the
    controller's decisions in the console and in app.log, the epoch total the planned end, the
    freeze's message once per change."""
    import time

    out = tmp_path / "stdout.txt"
    folder = tmp_path / "run"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([*cli, f"hydra.run.dir={folder}", "trainer.max_epochs=3", "pruning=two_phase",
                                 "pruning.fit.max_epochs=8", "pruning.controller.final_epochs=1",
                                 "pruning.controller.max_steps=2", "measure.latency=false"],
                                stdout=stdout, stderr=subprocess.DEVNULL, text=True)
        seen_while_training = False
        while proc.poll() is None:
            text = out.read_text()
            if "epoch 1/3:" in text and "epoch 3/3:" not in text:
                seen_while_training = True  # the baseline's first epoch, before its fit ended
            time.sleep(0.2)
    assert proc.returncode == 0
    assert seen_while_training
    lines = out.read_text().splitlines()
    epochs = [line.split("epoch ", 1)[1].split(":")[0] for line in lines if "][pl_pruning][INFO] - epoch " in line]
    assert epochs[:3] == ["1/3", "2/3", "3/3"]  # the baseline fit
    pruning_epochs = [tuple(map(int, e.split("/"))) for e in epochs[3:]]
    assert pruning_epochs[-1][0] == pruning_epochs[-1][1] < 8  # the bar's end is where the fit ended, not max_epochs
    decisions = [line for line in lines if "[PhaseController]" in line]
    assert any("baseline" in line for line in decisions) and any("accepted" in line or "rolled back" in line
                                                                 for line in decisions)
    log = (folder / "app.log").read_text()
    assert all(line.split(" - ", 1)[1] in log for line in decisions)
    freeze = [line.split(" - ", 1)[1] for line in lines if "[MaxEntropyFreeze]" in line]
    assert freeze and all(a != b for a, b in zip(freeze, freeze[1:]))  # once per change


@pytest.mark.slow
def test_the_callbacks_warnings_reach_app_log(cli, tmp_path):
    """A warning the controller gives (here: a normalisation that a run without a global phase
    never uses) is in the run folder's app.log, not only on the console."""
    folder = tmp_path / "run"
    subprocess.run([*cli, f"hydra.run.dir={folder}", "trainer.max_epochs=1", "pruning.fit.max_epochs=2",
                    "pruning.controller.max_steps=1", "pruning.controller.final_epochs=1",
                    "pruning.controller.phases=[layerwise]", "pruning.controller.normalize=cost-aware",
                    "measure.latency=false", "logger=none"],
                   check=True, capture_output=True, text=True)
    assert "normalize='cost-aware' has no effect" in (folder / "app.log").read_text()
