"""The comparison report of a sweep: ``pl-prune-report MULTIRUN_DIR`` (or
``python -m pl_pruning.reports.sweep MULTIRUN_DIR``).

Reads every ``results.json`` under a multirun folder (``pl-prune -m ...``), groups the
jobs into settings by their command-line overrides minus the seed, and writes into the
folder (or ``--out``):

- ``sweep_report.md``: one row per setting, mean ± sample standard deviation over its
  jobs (seeds) of the baseline and pruned test accuracy, the accuracy drop (points),
  the MACs, parameter and latency reductions and the objective;
- ``sweep_report.csv``: the same numbers, ``<metric>_mean`` and ``<metric>_std`` columns;
- ``sweep_jobs.csv``: one row per job;
- ``sweep_report.png``: accuracy drop against MACs reduction, every job a small dot and
  every setting's mean with its standard deviations as error bars.

A job's overrides come from its ``.hydra/overrides.yaml``; without one (a run with
``hydra.output_subdir=null``) the settings are told apart by the config values that
differ between jobs. Overrides shared by every job are listed once, not in the labels.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pl_pruning.errors import PlPruningError

REPORT_MD, REPORT_CSV, JOBS_CSV, REPORT_PNG = ("sweep_report.md", "sweep_report.csv", "sweep_jobs.csv",
                                               "sweep_report.png")
SEED_KEYS = ("seed",)
# (key, column title, format of mean and std) in table order.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("baseline_acc", "baseline acc (%)", ".2f"),
    ("pruned_acc", "pruned acc (%)", ".2f"),
    ("acc_drop", "acc drop (points)", ".2f"),
    ("macs_reduction", "MACs reduction (x)", ".2f"),
    ("params_reduction", "params reduction (x)", ".2f"),
    ("latency_speedup", "latency speedup (x)", ".2f"),
    ("objective", "objective", ".3f"),
)


@dataclass
class Job:
    """One finished job of a sweep."""

    path: Path                   # its folder, relative to the multirun folder
    overrides: list[str] | None  # from .hydra/overrides.yaml
    results: dict[str, Any]
    setting: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)

    @property
    def seed(self) -> Any:
        return (self.results.get("config") or {}).get("seed")


@dataclass
class Setting:
    """The jobs of one setting (same overrides but the seed) and their statistics."""

    label: str
    jobs: list[Job]
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)


def _metrics(results: dict[str, Any]) -> dict[str, float | None]:
    """The numbers of one job; accuracies and drop in percent (points)."""
    base, pruned = results.get("baseline") or {}, results.get("pruned") or {}

    def pct(v: Any) -> float | None:
        return None if v is None else 100.0 * float(v)

    latency = None
    if base.get("latency_ms") and pruned.get("latency_ms"):
        latency = base["latency_ms"] / pruned["latency_ms"]
    objective = results.get("objective")
    return {
        "baseline_acc": pct(base.get("test_acc")),
        "pruned_acc": pct(pruned.get("test_acc")),
        "acc_drop": pct(results.get("acc_drop")),
        "macs_reduction": results.get("macs_reduction"),
        "params_reduction": results.get("params_reduction"),
        "latency_speedup": latency,
        "objective": objective.get("value") if isinstance(objective, dict) else None,
    }


def _read_overrides(job_dir: Path) -> list[str] | None:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    # As written on the command line: an interpolation (`${hydra:runtime.output_dir}`,
    # `${oc.env:SLURM_ARRAY_TASK_ID}`) stays text; resolving it outside its job would fail.
    return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path), resolve=False)]


def _job_order(path: Path) -> tuple:
    """Jobs in sweep order: numeric folder names compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def load_jobs(multirun_dir: str | Path) -> tuple[list[Job], list[Path]]:
    """Every job with a ``results.json`` under ``multirun_dir``, and the job folders without.

    Raises:
        PlPruningError: the folder does not exist, holds no ``results.json``, or one of
            them is not valid JSON.
    """
    root = Path(multirun_dir)
    if not root.exists():
        raise PlPruningError(f"MULTIRUN_DIR '{root}' does not exist")
    if not root.is_dir():
        raise PlPruningError(f"MULTIRUN_DIR '{root}' is not a folder")
    jobs = []
    for path in sorted(root.rglob("results.json"), key=lambda p: _job_order(p.parent.relative_to(root))):
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise PlPruningError(f"'{path}' is not a readable results.json: {err}") from None
        jobs.append(Job(path.parent.relative_to(root), _read_overrides(path.parent), results))
    if not jobs:
        raise PlPruningError(f"no results.json under '{root}'; give the folder of a multirun "
                             "(pl-prune -m ... writes multirun/<date>/<time>/<job>/results.json)")
    done = {root / j.path for j in jobs}
    unfinished = sorted((p.parent.parent.relative_to(root) for p in root.rglob(".hydra/overrides.yaml")
                         if p.parent.parent not in done), key=_job_order)
    return jobs, unfinished


def _is_seed(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key in SEED_KEYS


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(node, sort_keys=True)}


def _differing_config(jobs: Sequence[Job]) -> list[list[str]]:
    """Per job, ``key=value`` of the config values that differ between jobs (not seeds or folders)."""
    flat = [_flatten(j.results.get("config") or {}) for j in jobs]
    keys = sorted(set().union(*flat))

    def ignored(key: str) -> bool:  # seeds, and folders that differ by construction
        leaf = key.rsplit(".", 1)[-1]
        return leaf.endswith("seed") or leaf.endswith("dir") or leaf == "dirpath"

    differ = [k for k in keys if not ignored(k) and len({f.get(k) for f in flat}) > 1]
    return [[f"{k}={json.loads(f[k]) if k in f else None}" for k in differ] for f in flat]


def group_settings(jobs: Sequence[Job]) -> tuple[list[Setting], list[str]]:
    """Settings in sweep order, and the overrides every job shares."""
    if all(j.overrides is not None for j in jobs):
        per_job = [[o for o in j.overrides if not _is_seed(o)] for j in jobs]
    else:
        per_job = _differing_config(jobs)
    common = [o for o in per_job[0] if all(o in p for p in per_job[1:])] if per_job else []
    settings: dict[str, Setting] = {}
    for job, overrides in zip(jobs, per_job):
        job.setting = ", ".join(o for o in overrides if o not in common) or "(all jobs)"
        job.metrics = _metrics(job.results)
        settings.setdefault(job.setting, Setting(job.setting, [])).jobs.append(job)
    for s in settings.values():
        for key, _, _ in METRICS:
            values = [j.metrics[key] for j in s.jobs if j.metrics.get(key) is not None]
            s.mean[key] = statistics.fmean(values) if values else None
            s.std[key] = statistics.stdev(values) if len(values) > 1 else None
    return list(settings.values()), common


def _cell(mean: float | None, std: float | None, spec: str) -> str:
    if mean is None:
        return "-"
    return format(mean, spec) + ("" if std is None else f" ± {format(std, spec)}")


def markdown(settings: Sequence[Setting], common: Sequence[str], root: Path, n_jobs: int,
             unfinished: Sequence[Path], png: str | None) -> str:
    lines = ["# Sweep report", "",
             f"{n_jobs} jobs in {len(settings)} settings from `{root}`."]
    if common:
        lines.append("Overrides of every job: " + " ".join(f"`{o}`" for o in common) + ".")
    lines += ["", "| setting | n | " + " | ".join(t for _, t, _ in METRICS) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |"]
    for s in settings:
        cells = [_cell(s.mean[k], s.std[k], spec) for k, _, spec in METRICS]
        lines.append(f"| {s.label} | {len(s.jobs)} | " + " | ".join(cells) + " |")
    lines += ["", "Mean ± sample standard deviation over the jobs of a setting (its seeds). Accuracy is "
              "test accuracy; drop = baseline - pruned, in points; a reduction or speedup is "
              "baseline / pruned. The objective is what `pl-prune` returns to a sweeper."]
    if unfinished:
        lines += ["", f"{len(unfinished)} job folders have no results.json (failed or still running): "
                  + ", ".join(f"`{p}`" for p in unfinished)]
    if png:
        lines += ["", f"![accuracy drop against MACs reduction]({png})"]
    return "\n".join(lines) + "\n"


def write_csv(settings: Sequence[Setting], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "n", *[f"{k}_{s}" for k, _, _ in METRICS for s in ("mean", "std")]])
        for s in settings:
            w.writerow([s.label, len(s.jobs), *[_num(v) for k, _, _ in METRICS for v in (s.mean[k], s.std[k])]])


def write_jobs_csv(jobs: Sequence[Job], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "setting", "seed", *[k for k, _, _ in METRICS]])
        for j in jobs:
            w.writerow([str(j.path), j.setting, j.seed, *[_num(j.metrics[k]) for k, _, _ in METRICS]])


def _num(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(round(float(v), 6))


def plot(settings: Sequence[Setting], path: Path, max_drop: float | None = None) -> bool:
    """Accuracy drop (points) against MACs reduction; False when no job was pruned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pruned = [s for s in settings if s.mean["macs_reduction"] is not None and s.mean["acc_drop"] is not None]
    if not pruned:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.get_cmap("tab10")
    for i, s in enumerate(pruned):
        color = colors(i % 10)
        pts = [(j.metrics["macs_reduction"], j.metrics["acc_drop"]) for j in s.jobs
               if j.metrics["macs_reduction"] is not None and j.metrics["acc_drop"] is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, alpha=0.35, s=18, zorder=2)
        ax.errorbar(s.mean["macs_reduction"], s.mean["acc_drop"], xerr=s.std["macs_reduction"],
                    yerr=s.std["acc_drop"], fmt="o", ms=8, color=color, capsize=3, zorder=3,
                    label=f"{s.label} (n={len(s.jobs)})")
    if max_drop is not None:
        ax.axhline(100 * max_drop, color="red", ls="--", lw=1, label=f"max_drop ({100 * max_drop:g} points)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("MACs reduction (baseline / pruned, x)")
    ax.set_ylabel("test accuracy drop (points)")
    ax.set_title("Accuracy drop against MACs reduction (mean ± std per setting)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _shared_max_drop(jobs: Sequence[Job]) -> float | None:
    values = {(j.results.get("objective") or {}).get("max_drop") for j in jobs}
    return values.pop() if len(values) == 1 and None not in values else None


def write_report(multirun_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Aggregate a multirun folder; returns the paths written (``md``, ``csv``, ``jobs_csv``, ``png``).

    Raises:
        PlPruningError: see :func:`load_jobs`.
    """
    root = Path(multirun_dir)
    jobs, unfinished = load_jobs(root)
    settings, common = group_settings(jobs)
    out = Path(out_dir) if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / REPORT_MD, "csv": out / REPORT_CSV, "jobs_csv": out / JOBS_CSV}
    if plot(settings, out / REPORT_PNG, _shared_max_drop(jobs)):
        paths["png"] = out / REPORT_PNG
    paths["md"].write_text(markdown(settings, common, root, len(jobs), unfinished,
                                    REPORT_PNG if "png" in paths else None))
    write_csv(settings, paths["csv"])
    write_jobs_csv(jobs, paths["jobs_csv"])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pl-prune-report",
        description="Aggregate the results.json files of a pl-prune multirun into a markdown and CSV "
                    "table (mean ± std per setting) and a PNG of accuracy drop against MACs reduction.")
    parser.add_argument("multirun_dir", metavar="MULTIRUN_DIR",
                        help="folder of a sweep, e.g. multirun/2024-05-01/12-00-00")
    parser.add_argument("--out", default=None, help="where to write the report (default: MULTIRUN_DIR)")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.multirun_dir, args.out)
    except PlPruningError as err:
        print(f"pl-prune-report: error: {err}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
