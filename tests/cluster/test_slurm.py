"""pl-prune on a real SLURM cluster (a single node on this machine, see minicluster.py):
a sweep through hydra-submitit-launcher; the plain sbatch script of docs/CLUSTER.md as an
array over seeds, as an array with one task requeued part-way through pruning, and as a
DDP job whose ranks are SLURM tasks. Every test skips, saying why, where SLURM is not
installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SBATCH_SCRIPT = ROOT / "docs" / "examples" / "prune.sbatch"
PLUGINS = ROOT / "tests" / "cli" / "plugins"  # kill_switch.HoldAtEpoch
# Tiny digits runs: one baseline epoch, a few pruning epochs, no latency timing.
QUICK = ["trainer.max_epochs=1", "pruning.fit.max_epochs=3", "pruning.controller.final_epochs=0",
         "pruning.controller.max_steps=1", "measure.latency=false", "callbacks=none", "logger=none"]
TIMEOUT = 900  # seconds a job may take on a busy two-core machine


def job_env() -> dict[str, str]:
    """What submitted jobs inherit: this interpreter's ``pl-prune`` first on PATH, the
    repository and the test plugins on PYTHONPATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(p for p in (str(ROOT), str(PLUGINS), os.environ.get("PYTHONPATH")) if p)
    return {"PATH": path, "PYTHONPATH": pythonpath}


def decisions(report: dict) -> list[dict]:
    """A pruning history without the wall-clock time of each surgery."""
    return [{k: v for k, v in e.items() if k != "surgery_s"} for e in report["history"]]


def read(folder: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """results.json, pruning_report.json and the pruned weights of a run folder."""
    results = json.loads((folder / "results.json").read_text())
    report = json.loads((folder / "pruning_report.json").read_text())
    weights = torch.load(folder / "pruned_model.pt", weights_only=False)["state_dict"]
    return results, report, weights


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same pruning: architecture, history, weights, test numbers."""
    (res_a, rep_a, w_a), (res_b, rep_b, w_b) = read(a), read(b)
    assert rep_a["channels"] == rep_b["channels"]
    assert decisions(rep_a) == decisions(rep_b)
    assert w_a.keys() == w_b.keys()
    for key in w_a:
        assert torch.equal(w_a[key], w_b[key]), key
    for block in ("baseline", "pruned"):  # test accuracy, MACs, parameters (not the folders)
        assert {k: v for k, v in res_a[block].items() if k != "checkpoint"} == \
            {k: v for k, v in res_b[block].items() if k != "checkpoint"}


def tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.is_file() else f"({path} missing)"


def report_script(folder: Path) -> str:
    """``pl-prune-report FOLDER``: its stdout."""
    proc = subprocess.run([str(Path(sys.executable).parent / "pl-prune-report"), str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_a_two_job_sweep_through_the_slurm_launcher_finishes_and_reports(slurm, cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [*cli, "-m", "hydra/launcher=slurm", "pruning.controller.criterion=l1,conditional_entropy",
         f"hydra.sweep.dir={sweep}", "hydra.launcher.cpus_per_task=1", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=30", *QUICK],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **job_env(), **slurm.env})
    logs = "\n".join(f"--- {p}\n{tail(p)}" for p in sorted(sweep.glob(".submitit/*/*.err")))
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{logs}"
    # the two jobs ran as the tasks of one SLURM array, and both completed
    submitted = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(submitted) == 2, submitted
    array_id = submitted[0].split("_")[0]
    jobs = slurm.wait(array_id, 120)  # submitit returns on the results; SLURM ends the tasks after
    assert sorted(jobs) == [f"{array_id}_0", f"{array_id}_1"]
    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}, jobs
    for i, criterion in enumerate(["l1", "conditional_entropy"]):
        results = json.loads((sweep / str(i) / "results.json").read_text())
        assert results["pruning"]["criterion"] == criterion and results["pruned"]["macs"] < results["baseline"]["macs"]
    out = report_script(sweep)
    assert "2 jobs in 2 settings" in out
    md = (sweep / "sweep_report.md").read_text()
    assert "| pruning.controller.criterion=l1 | 1 |" in md
    assert "| pruning.controller.criterion=conditional_entropy | 1 |" in md


@pytest.mark.slow
def test_the_sbatch_script_as_an_array_over_seeds_reports_one_setting(slurm, tmp_path):
    """`sbatch --array=0-1 prune.sbatch seed=%a ...`, as docs/CLUSTER.md shows it: each task
    runs with its own seed in runs/<array id>/<task id>/, and pl-prune-report reads the
    array's folder as one setting over two seeds."""
    array = slurm.sbatch("--array=0-1", "--cpus-per-task=1", f"--chdir={tmp_path}", f"--output={tmp_path}/%A_%a.out",
                         str(SBATCH_SCRIPT), "seed=%a", *QUICK, env=job_env())
    jobs = slurm.wait(array, TIMEOUT, log=tmp_path / f"{array}_1.out")
    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}, f"{jobs}\n{tail(tmp_path / f'{array}_0.out')}"
    runs = tmp_path / "runs" / array
    assert [json.loads((runs / t / "results.json").read_text())["config"]["seed"] for t in "01"] == [0, 1]
    out = report_script(runs)
    assert "2 jobs in 1 settings" in out
    jobs_csv = (runs / "sweep_jobs.csv").read_text().splitlines()
    assert len(jobs_csv) == 3, jobs_csv


# The requeue test's runs: a few pruning epochs, so that one can stop between them.
REQUEUE = ["trainer.max_epochs=1", "pruning.fit.max_epochs=8", "pruning.controller.final_epochs=1",
           "pruning.controller.max_steps=3", "measure.latency=false", "logger=none"]
HOLD_EPOCH = 2  # the pruning fit's epoch at whose start task 1 is held and requeued


@pytest.mark.slow
def test_a_task_requeued_part_way_through_pruning_ends_like_the_uninterrupted_one(slurm, tmp_path):
    """The sbatch script as a two-task array of the same run. Task 1 is held at the start
    of a pruning epoch (after the previous epoch's checkpoint was written), requeued with
    `scontrol requeue`, and runs the script again: it resumes both fits from their
    last.ckpt and ends with task 0's architecture, history and weights."""
    hold = ["+callbacks.hold._target_=kill_switch.HoldAtEpoch", f"+callbacks.hold.epoch={HOLD_EPOCH}",
            "+callbacks.hold.flag=${hydra:runtime.output_dir}/hold"]
    array = slurm.sbatch("--hold", "--array=0-1", "--cpus-per-task=1", f"--chdir={tmp_path}",
                         f"--output={tmp_path}/%A_%a.out", str(SBATCH_SCRIPT), *REQUEUE, *hold, env=job_env())
    runs, task = tmp_path / "runs" / array, f"{array}_1"
    (runs / "1").mkdir(parents=True)
    (runs / "1" / "hold").touch()
    slurm.run("scontrol", "release", array)  # submitted held, so the flag exists before it starts
    log = tmp_path / f"{array}_1.out"
    held = runs / "1" / "hold.held"
    slurm.wait(array, TIMEOUT, until=held.exists, log=log)

    # part-way: the pruning fit's checkpoint has surgeries behind it and steps ahead
    state = torch.load(runs / "1" / "pruning_checkpoints" / "last.ckpt", weights_only=False)
    controller = state["callbacks"]["PhaseController"]
    assert state["epoch"] == HOLD_EPOCH - 1
    assert controller["surgeries"] >= 1 and controller["phase"] not in ("done", "baseline"), controller["phase"]
    before = controller["history"]

    (runs / "1" / "hold").unlink()
    slurm.run("scontrol", "requeue", task)
    slurm.wait(task, 120, until=lambda: slurm.jobs(task)[task]["JobState"] == "PENDING")
    slurm.run("scontrol", "update", f"JobId={task}", "StartTime=now")  # a requeued job waits ~2 min otherwise
    jobs = slurm.wait(array, TIMEOUT, log=log)

    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}, f"{jobs}\n{tail(log)}"
    assert jobs[task]["Restarts"] == "1" and jobs[f"{array}_0"]["Restarts"] == "0"
    out = log.read_text()
    assert "DUE TO JOB REQUEUE" in out and "(restart 1)" in out
    assert f"resuming from {runs / '1' / 'pruning_checkpoints' / 'last.ckpt'}" in out
    _, report, _ = read(runs / "1")
    resumed = decisions(report)[:len(before)]  # continued, not started again:
    assert [{k: b.get(k) for k in r} for b, r in zip(before, resumed)] == resumed
    assert_same_run(runs / "0", runs / "1")
    # the array's folder is a sweep folder: the report reads both tasks
    assert "2 jobs in 1 settings" in report_script(runs)


DDP = ["trainer=ddp", "trainer.max_epochs=1", "pruning.fit.max_epochs=4", "pruning.controller.final_epochs=1",
       "pruning.controller.max_steps=2", "measure.latency=false", "callbacks=none", "logger=none"]


@pytest.mark.slow
def test_a_two_task_ddp_job_ends_identical_to_the_local_two_process_run(slurm, tmp_path):
    """The sbatch script with two tasks: `srun` starts both ranks, Lightning's
    SLURMEnvironment reads them (gloo on the CPU). The local run of the same command starts
    its second rank itself. Both end with the same architecture, history and weights."""
    job = slurm.sbatch("--ntasks-per-node=2", "--cpus-per-task=1", f"--chdir={tmp_path}",
                       f"--output={tmp_path}/%j.out", str(SBATCH_SCRIPT), *DDP, env=job_env())
    local = subprocess.run(["pl-prune", *DDP, f"hydra.run.dir={tmp_path / 'local'}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **job_env()})
    assert local.returncode == 0, local.stderr[-3000:]
    log = tmp_path / f"{job}.out"
    jobs = slurm.wait(job, TIMEOUT, log=log)
    assert jobs[job]["JobState"] == "COMPLETED", f"{jobs}\n{tail(log)}"
    assert jobs[job]["NumTasks"] == "2"
    out = log.read_text()
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in out
    assert "SLURM auto-requeueing enabled" in out  # Lightning chose SLURMEnvironment
    cluster_run = tmp_path / "runs" / job
    assert not (cluster_run / "train_ddp_process_1.log").exists()  # rank 1 was a SLURM task ...
    assert (tmp_path / "local" / "train_ddp_process_1.log").is_file()  # ... locally Lightning started it
    assert_same_run(tmp_path / "local", cluster_run)
