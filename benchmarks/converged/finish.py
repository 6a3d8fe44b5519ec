"""Check a finished baseline run for convergence and commit-ready outputs.

    pl-prune experiment=converged_vgg16_w025 hydra.run.dir=benchmarks/converged/outputs/vgg16_w025_seed0
    python benchmarks/converged/finish.py vgg16_w025_seed0

Reads the run folder (``outputs/<run>/``: the CSV log, ``results.json``, the checkpoint
the app tested), and writes beside this file:

* ``<run>.pt``: the tested network's state dict (what every pruning benchmark starts from);
* ``<run>_curve.png``: training loss, validation loss and accuracy per epoch;
* ``baselines.json``: per run the command, test accuracy, MACs, parameters and the
  convergence check: the learning-rate schedule ran to its end and the last tenth of
  the epochs gained less than 0.3 points of validation accuracy.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
MAX_LATE_GAIN = 0.3  # points of validation accuracy over the last tenth of the epochs


def epochs_table(run_dir: Path) -> list[dict[str, float]]:
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                epoch = int(row["epoch"])
                for key in ("train_loss", "val_loss", "val_acc"):
                    if row.get(key):
                        rows[epoch][key] = float(row[key])
    return [dict(epoch=e, **rows[e]) for e in sorted(rows)]


def convergence(table: list[dict[str, float]], max_epochs: int) -> dict:
    accs = [r["val_acc"] * 100 for r in table if "val_acc" in r]
    tenth = max(1, math.ceil(len(accs) / 10))
    gain = max(accs[-tenth:]) - accs[-tenth - 1]
    return {"epochs": len(accs), "max_epochs": max_epochs, "schedule_finished": len(accs) >= max_epochs,
            "last_tenth_epochs": tenth, "last_tenth_gain_points": round(gain, 3),
            "final_val_acc": round(accs[-1] / 100, 4), "best_val_acc": round(max(accs) / 100, 4),
            "converged": len(accs) >= max_epochs and gain < MAX_LATE_GAIN}


def plot(table: list[dict[str, float]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    ep = [r["epoch"] + 1 for r in table]
    a.plot(ep, [r.get("train_loss", float("nan")) for r in table], label="train loss")
    a.plot(ep, [r.get("val_loss", float("nan")) for r in table], label="validation loss")
    a.set_xlabel("epoch")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(ep, [r.get("val_acc", float("nan")) * 100 for r in table], color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel("validation accuracy (%)")
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def finish(run: str) -> dict:
    run_dir = HERE / "outputs" / run
    results = json.loads((run_dir / "results.json").read_text())
    cfg = results["config"]
    table = epochs_table(run_dir)
    check = convergence(table, cfg["trainer"]["max_epochs"])
    tested = results["baseline"]["checkpoint"]
    blob = torch.load(tested, map_location="cpu", weights_only=False)
    state = {k[len("net."):]: v for k, v in blob["state_dict"].items() if k.startswith("net.")}
    torch.save(state, HERE / f"{run}.pt")
    title = f"{cfg['model']['name']} x{cfg['model']['width']} on CIFAR-10 (seed {cfg['seed']})"
    plot(table, title, HERE / f"{run}_curve.png")
    record = {
        "command": f"pl-prune experiment={_experiment(run_dir)} trainer.max_epochs={cfg['trainer']['max_epochs']} "
                   f"hydra.run.dir=benchmarks/converged/outputs/{run}",
        "model": cfg["model"], "seed": cfg["seed"], "optim": cfg["optim"],
        "test_acc": results["baseline"]["test_acc"], "macs": results["baseline"]["macs"],
        "params": results["baseline"]["params"], "latency_ms": results["baseline"].get("latency_ms"),
        "checkpoint": f"benchmarks/converged/{run}.pt", "tested_epoch_checkpoint": Path(tested).name,
        "convergence": check, "curve": [{k: round(v, 5) for k, v in r.items()} for r in table],
    }
    path = HERE / "baselines.json"
    all_runs = json.loads(path.read_text()) if path.exists() else {}
    all_runs[run] = record
    path.write_text(json.dumps(all_runs, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "curve"}, indent=1))
    return record


def _experiment(run_dir: Path) -> str:
    overrides = (run_dir / ".hydra" / "overrides.yaml")
    if overrides.exists():
        for line in overrides.read_text().splitlines():
            if "experiment=" in line:
                return line.split("experiment=", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    for name in sys.argv[1:] or ["vgg16_w025_seed0"]:
        finish(name)
