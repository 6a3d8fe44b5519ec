"""The controller on the embedded default, before and after: ``pl-prune`` (digits, small
CNN, the default two-phase preset) over several seeds, from a given source tree.

    python benchmarks/controller/run.py --label after --seeds 0 1 2
    python benchmarks/controller/run.py --label before --tree ../before --seeds 0 1 2
    python benchmarks/controller/run.py --label distill --seeds 0 1 2 -- pruning.distill=true
    python benchmarks/controller/run.py --compare before after

``--tree`` runs another checkout of the project (for example the commit before the
controller changed: ``git worktree add ../before <commit>``) with this interpreter. Each
run writes ``runs/<label>_seed<s>.json``: the test accuracies, the MACs reduction, the wall
time, and per phase the MACs removed by accepted steps and the fine-tuning epochs spent.
``--compare`` writes ``results.md`` and ``results.csv`` from the committed runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pl_pruning.pruning.run_state import per_phase

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = HERE / "runs"


def run_one(tree: Path, seed: int, label: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pl_pruning", f"seed={seed}", f"hydra.run.dir={tmp}",
                        "callbacks.rich_progress_bar=null", *overrides], check=True, cwd=tree,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        results = json.loads((Path(tmp) / "results.json").read_text())
        report = json.loads((Path(tmp) / "pruning_report.json").read_text())
    record = {
        "label": label, "seed": seed, "overrides": overrides, "wall_s": round(wall, 1),
        "baseline_test_acc": results["baseline"]["test_acc"], "pruned_test_acc": results["pruned"]["test_acc"],
        "acc_drop_points": round(100 * results["acc_drop"], 3), "macs_reduction": round(results["macs_reduction"], 3),
        "pruning_epochs": sum(r["epochs"] for r in per_phase(report["history"]).values()),
        "phases": per_phase(report["history"]), "final_check": report.get("final_check"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True,
                                 text=True).stdout.strip(),
    }
    RUNS.mkdir(exist_ok=True)
    (RUNS / f"{label}_seed{seed}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "phases"}))
    return record


def compare(labels: list[str]) -> None:
    def _rounded(value: float | None) -> int | None:  # None: the steps spent no epoch
        return None if value is None else round(value)

    rows = []
    for label in labels:
        for path in sorted(RUNS.glob(f"{label}_seed*.json")):
            r = json.loads(path.read_text())
            rows.append({"label": label, "seed": r["seed"], "macs_reduction": r["macs_reduction"],
                         "acc_drop_points": r["acc_drop_points"], "wall_s": r["wall_s"],
                         "step_epochs": r["pruning_epochs"],
                         **{f"{p}_macs_per_epoch": _rounded(r["phases"].get(p, {}).get("macs_removed_per_epoch", 0))
                            for p in ("global", "layerwise")},
                         "commit": r["commit"]})
    with open(HERE / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| controller | seeds | MACs reduction (mean, min-max; median) | test acc drop, points (mean, max; median) | "
             "Phase I MACs removed / epoch | Phase II MACs removed / epoch | step epochs | wall time (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label in labels:
        rs = [r for r in rows if r["label"] == label]
        if not rs:
            continue

        def m(key, rs=rs):
            return statistics.mean(r[key] for r in rs)

        def per_epoch(key, rs=rs):  # None: every step was judged before any epoch
            values = [r[key] for r in rs]
            return "judged at once" if None in values else f"{statistics.mean(values) / 1e3:.0f} k"

        lines.append(
            f"| {label} ({', '.join(dict.fromkeys(r['commit'] for r in rs))}) | {len(rs)} | {m('macs_reduction'):.2f}x "
            f"({min(r['macs_reduction'] for r in rs):.2f}-{max(r['macs_reduction'] for r in rs):.2f}; "
            f"{statistics.median(r['macs_reduction'] for r in rs):.2f}x) | "
            f"{m('acc_drop_points'):.2f} ({max(r['acc_drop_points'] for r in rs):.2f}; "
            f"{statistics.median(r['acc_drop_points'] for r in rs):.2f}) | "
            f"{per_epoch('global_macs_per_epoch')} | {per_epoch('layerwise_macs_per_epoch')} | "
            f"{m('step_epochs'):.1f} | {m('wall_s'):.0f} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label")
    p.add_argument("--tree", default=str(ROOT), help="the checkout to run (default: this one)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--compare", nargs="+", metavar="LABEL")
    p.add_argument("overrides", nargs="*", help="extra pl-prune overrides, e.g. pruning.distill=true")
    args = p.parse_args()
    if args.compare:
        compare(args.compare)
        return
    if not args.label:
        p.error("--label is required to run")
    for seed in args.seeds:
        run_one(Path(args.tree).resolve(), seed, args.label, args.overrides)


if __name__ == "__main__":
    main()
