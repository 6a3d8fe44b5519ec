"""The report of one pruning run: JSON, a markdown table and two PNG plots (path and channels).

Written by :class:`~pl_pruning.PhaseController` at the end of a run from its
``report()``; the sweep report over many runs is :mod:`pl_pruning.reports.sweep`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pl_pruning.files import atomic_path, write_text_atomic
from pl_pruning.pruning.schedule import target_in_macs


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown_table(report: dict[str, Any]) -> str:
    """Every step of the run as a markdown table, with a summary line and what each phase
    spent and bought (steps, fine-tuning epochs, MACs removed) on top."""
    target = report.get("target_macs")  # None (or a report from before it was recorded): no target
    lines = [f"# Pruning report ({report['criterion']}, phases {', '.join(report['phases'])}, "
             f"max_drop {report['max_drop']}" + (f", target_macs {target}" if target is not None else "") + ")", ""]
    if "final" in report:
        base, final = report["baseline"], report["final"]
        lines += [f"{report['monitor']}: {_fmt(base['metric'], '.4f')} -> {_fmt(final['metric'], '.4f')}; "
                  f"MACs {base['macs'] / 1e6:.3f} M -> {final['macs'] / 1e6:.3f} M "
                  f"({report['macs_reduction']:.2f}x fewer); params {base['params'] / 1e6:.4f} M -> "
                  f"{final['params'] / 1e6:.4f} M ({report['params_reduction']:.2f}x fewer)", ""]
    if report.get("per_phase"):
        lines += ["| phase | steps | accepted | fine-tuning epochs | MACs removed (M) | per epoch (M) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for phase, row in report["per_phase"].items():
            rate = row["macs_removed_per_epoch"]
            lines.append(f"| {phase} | {row['steps']} | {row['accepted']} | {row['epochs']} | "
                         f"{row['macs_removed'] / 1e6:.3f} | {'-' if rate is None else f'{rate / 1e6:.3f}'} |")
        lines.append("")
    latency = report.get("latency")
    if latency:
        lines += [latency_line(report), ""]
    timed = latency is not None
    lines += ["| # | phase | layer | step | metric | drop | MACs (M) | params (M) |"
              + (" latency ms | predicted ms |" if timed else "") + " removed | decision |",
              "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if timed else "")
              + " ---: | --- |"]
    for i, e in enumerate(report["history"]):
        decision = ("accepted" if e.get("accepted") else
                    "rolled back (past the latency target)" if e.get("past_target") else
                    "rolled back (no faster)" if e.get("no_faster") else "rolled back")
        ms = (f" {_fmt(e.get('latency_ms'), '.2f')} | {_fmt(e.get('predicted_latency_ms'), '.2f')} |"
              if timed else "")
        lines.append(f"| {i} | {e['phase']} | {e.get('layer') or ''} | {_fmt(e.get('step'), '.3f')} | "
                     f"{_fmt(e.get('metric'), '.4f')} | {_fmt(e.get('drop'), '+.4f')} | "
                     f"{e['macs'] / 1e6:.3f} | {e['params'] / 1e6:.4f} |{ms} {e.get('removed', 0)} | {decision} |")
    return "\n".join(lines) + "\n"


def latency_line(report: dict[str, Any]) -> str:
    """The run's latency in one line: baseline and final, against the target, and the
    latency model's prediction error."""
    lat, rt = report["latency"], report.get("latency_runtime", {})
    where = f"{rt.get('name', '?')}, batch {rt.get('batch_size', '?')}, {rt.get('num_threads', '?')} thread(s)"
    text = (f"latency ({where}, {'measured' if lat.get('measured') else 'predicted by a saved table'}): "
            f"{_fmt(lat.get('baseline_ms'), '.2f')} ms -> {_fmt(lat.get('final_ms'), '.2f')} ms")
    if lat.get("reduction"):
        text += f" ({lat['reduction']:.2f}x faster)"
    if lat.get("target_ms"):
        text += (f"; target {report.get('target_latency')} = {lat['target_ms']:.2f} ms, final "
                 f"{lat['final_over_target']:+.1%} from it" if lat.get("final_over_target") is not None
                 else f"; target {lat['target_ms']:.2f} ms")
    err = lat.get("prediction_error") or {}
    if err.get("steps"):
        text += (f"; the model's prediction off by {err['mean_abs']:.1%} on average, at most "
                 f"{err['max_abs']:.1%} ({err['steps']} steps timed)")
    return text


def plot_path(report: dict[str, Any], path: Path) -> None:
    """Monitored metric against MACs along the pruning path; beside it, when the run had a
    latency model, the same path against latency (measured, else predicted) and its target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = [e for e in report["history"] if e.get("metric") is not None]
    timed = bool(hist) and all(_latency(e) is not None for e in hist)
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(12, 4.2) if timed else (6.5, 4.2), squeeze=False)
    target = target_in_macs(report.get("target_macs"), report["baseline"].get("macs", 0))
    _path_panel(axes[0][0], report, hist, lambda e: e["macs"] / 1e6, "MACs per sample (M; pruning goes right)",
                target / 1e6 if target else None, "target_macs", "Pruning path" + (": MACs" if timed else ""))
    if timed:
        rt = report.get("latency_runtime", {})
        measured = (report.get("latency") or {}).get("measured")
        _path_panel(axes[0][1], report, hist, _latency,
                    f"latency, ms per batch of {rt.get('batch_size', '?')} on {rt.get('name', '?')}, "
                    f"{'measured' if measured else 'predicted'} (pruning goes right)",
                    (report.get("latency") or {}).get("target_ms"), "target_latency", "Pruning path: latency")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _latency(entry: dict[str, Any]) -> float | None:
    """A step's latency: measured, else predicted (a saved table of another machine)."""
    return entry.get("latency_ms") if entry.get("latency_ms") is not None else entry.get("predicted_latency_ms")


def _path_panel(ax: Any, report: dict[str, Any], hist: list[dict[str, Any]], x: Any, xlabel: str,
                target: float | None, target_label: str, title: str) -> None:
    accepted = [e for e in hist if e.get("accepted")]
    colors = {"baseline": "black", "global": "tab:blue", "layerwise": "tab:orange", "final": "tab:green"}
    ax.plot([x(e) for e in accepted], [e["metric"] for e in accepted], "-", color="grey", lw=1,
            zorder=1, label="accepted path")
    for phase, color in colors.items():
        for ok, marker in ((True, "o"), (False, "x")):
            pts = [e for e in hist if e["phase"] == phase and bool(e.get("accepted")) == ok]
            if pts:
                ax.scatter([x(e) for e in pts], [e["metric"] for e in pts], color=color,
                           marker=marker, zorder=2,
                           label=f"{phase}{'' if ok else ' (rolled back)'}")
    base = report["baseline"]["metric"]
    sign = -1 if report.get("mode", "max") == "max" else 1
    # With reference="accepted" each step had its own bound (the network it was cut from minus
    # max_drop): a red tick at that step; the line is then the final network's check.
    own = [e for e in hist if e.get("reference") is not None]
    if own:
        ax.scatter([x(e) for e in own], [e["reference"] + sign * report["max_drop"] for e in own],
                   color="red", marker="_", s=120, zorder=2, label="step's bound (its parent - max_drop)")
    if base is not None:
        ax.axhline(base + sign * report["max_drop"], color="red", ls="--", lw=1,
                   label="max_drop bound (final check)" if own else "max_drop bound")
    if target:
        ax.axvline(target, color="purple", ls=":", lw=1, label=target_label)
    ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(report["monitor"])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_channels(report: dict[str, Any], path: Path) -> None:
    """Remaining output channels per convolution, before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before, after = report["channels"]["before"], report["channels"]["after"]
    names = list(before)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [before[n] for n in names], width=0.4, label="before", color="lightgrey")
    ax.bar([i + 0.2 for i in x], [after.get(n, 0) for n in names], width=0.4, label="after", color="tab:blue")
    ax.set_xticks(list(x))
    ax.set_xticklabels([n.removeprefix("net.") for n in names], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title("Channels per convolution")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_pruning_report(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write ``pruning_report.json``, ``pruning_report.md``, ``pruning_path.png`` and
    ``pruning_channels.png`` into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "pruning_report.json", folder / "pruning_report.md"]
    write_text_atomic(paths[0], json.dumps(report, indent=2, default=float))
    write_text_atomic(paths[1], markdown_table(report))
    plot_path(report, folder / "pruning_path.png")
    paths.append(folder / "pruning_path.png")
    if report.get("channels"):
        plot_channels(report, folder / "pruning_channels.png")
        paths.append(folder / "pruning_channels.png")
    return paths
