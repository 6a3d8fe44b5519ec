"""The pruning path of the two digits runs, step by step, for comparing two versions.

    python benchmarks/redesign_parity/run.py --label after          # runs both commands
    python benchmarks/redesign_parity/run.py --compare before after  # prints the differences

A path is what the controller decided at every step: phase, layer, step size, filters
removed, MACs after the step, accepted or rolled back. Two versions of the code take the
same path when every row matches (same seed, same machine, same torch).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = {"default": [], "digits_quick": ["experiment=digits_quick"]}
KEYS = ("phase", "layer", "step", "removed", "macs", "accepted")


def path_of(report: dict) -> list[dict]:
    return [{k: e.get(k) for k in KEYS} for e in report["history"]]


def record(label: str) -> Path:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in RUNS.items():
            run_dir = Path(tmp) / name
            subprocess.run([sys.executable, "-m", "pl_pruning", *overrides, f"hydra.run.dir={run_dir}",
                            "callbacks.rich_progress_bar=null"], check=True, capture_output=True)
            report = json.loads((run_dir / "pruning_report.json").read_text())
            out[name] = {"macs_reduction": report.get("macs_reduction"), "path": path_of(report)}
    import torch

    out["torch"] = torch.__version__
    target = HERE / f"paths_{label}.json"
    target.write_text(json.dumps(out, indent=1))
    return target


def compare(a: str, b: str) -> int:
    pa, pb = (json.loads((HERE / f"paths_{x}.json").read_text()) for x in (a, b))
    differ = 0
    for name in RUNS:
        rows_a, rows_b = pa[name]["path"], pb[name]["path"]
        same = rows_a == rows_b
        differ += not same
        print(f"{name}: {len(rows_a)} vs {len(rows_b)} steps, {'identical' if same else 'DIFFERENT'}")
        for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
            if ra != rb:
                print(f"  first difference at step {i}:\n    {a}: {ra}\n    {b}: {rb}")
                break
    return differ


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = parser.parse_args()
    if args.compare:
        raise SystemExit(compare(*args.compare))
    print(record(args.label or "current"))
