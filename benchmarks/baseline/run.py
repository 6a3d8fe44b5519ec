"""The main job of the Hydra app (train a baseline, test it, prune it in two phases, test
again), run as a user starts it; writes results.csv and README.md.

    python benchmarks/baseline/run.py            # both runs (CIFAR-10 needs ../shared/data)
    python benchmarks/baseline/run.py digits     # one of them

Each run is the real CLI in a subprocess; wall time includes start-up and data extraction
(the CIFAR-10 archive is extracted once into the cache and reused afterwards).
"""

from __future__ import annotations

import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RUNS = {
    "digits": ["pl-prune"],
    "cifar10_local": ["pl-prune", "experiment=cifar10_local"],
}


def main(names: list[str]) -> None:
    rows = []
    for name in names:
        out = HERE / "outputs" / name
        cmd = [sys.executable, "-m", "pl_pruning", *RUNS[name][1:], f"hydra.run.dir={out}"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=HERE.parents[1])
        wall = time.perf_counter() - start
        results = json.loads((out / "results.json").read_text())
        base, pruned = results["baseline"], results.get("pruned", {})
        rows.append({"run": name, "command": " ".join(RUNS[name]),
                     "baseline_test_acc": round(base["test_acc"], 4),
                     "pruned_test_acc": round(pruned["test_acc"], 4) if pruned else "",
                     "acc_drop_points": round(100 * results["acc_drop"], 2) if pruned else "",
                     "baseline_macs_M": round(base["macs"] / 1e6, 3),
                     "pruned_macs_M": round(pruned["macs"] / 1e6, 3) if pruned else "",
                     "macs_reduction": round(results["macs_reduction"], 2) if pruned else "",
                     "params_reduction": round(results["params_reduction"], 2) if pruned else "",
                     "latency_speedup": round(base["latency_ms"] / pruned["latency_ms"], 2) if pruned else "",
                     "latency_batch": base["latency_batch_size"], "wall_s": round(wall, 1)})
    with open(HERE / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# The main job: baseline, two-phase pruning, test", "",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
             f"torch {torch.__version__}. Command: `python benchmarks/baseline/run.py`. Wall time is the "
             "whole CLI run (baseline training, pruning fit, two tests, latency timing); the "
             "latency speed-up is measured on one thread at the batch size given.", "",
             "| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(f"`{v}`" if k == "command" else str(v) for k, v in r.items()) + " |" for r in rows]
    (HERE / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:] or list(RUNS))
