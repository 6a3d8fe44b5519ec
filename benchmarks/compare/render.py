"""Table, plot and findings of the equal-budget comparison, from ``runs/*.json`` (and the
side-by-side latencies of ``latency.json``) only.

    python benchmarks/compare/run.py render

Writes ``results.csv`` (one row per run), ``results.md`` (mean ± std per setting, the
RQ tables, findings computed from the numbers), ``accuracy_vs_macs.png`` (every run, and the
3x runs seed by seed), ``val_curves_3x.png`` / ``val_curves_3x_e40.png`` / ``val_curves_resnet20_3x.png`` (validation accuracy
per epoch of the 3x runs) and ``cut_vs_final.png``.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from records import EXPERIMENT, experiment_of, final_val, mean_sd, welch_p

from pl_pruning.pruning.run_state import per_phase

HERE = Path(__file__).resolve().parent
# Which table each setting belongs to; anything else lands in "other". The paper's research
# questions are asked of one setting at the goal's 3x (RQ_BASE: steps judged before the first
# epoch, conditional entropy, both phases, freeze off, distillation off), one lever changed per run.
RQ_BASE = "at_once_3x_freeze_off_distill_off"
# The goal's 3x at the harness's 15 epochs and at the goal's 40 (each also drawn epoch by epoch).
# L1_LW: the pruning=at_once preset's settings (L1 scores, layer-wise steps only, distillation
# on, freeze off), the two changes that each beat the paper's choices in RQ1 and RQ2 together.
L1_LW = "at_once_3x_freeze_off_l1_layerwise"
# The same settings asked for 3.33x (pruning.target_macs=0.3): issue 12's 2x over the controller
# before at 40 epochs, if it stays within 2 points.
L1_LW_333 = "at_once_3.33x_freeze_off_l1_layerwise"
AT_3X = ["two_phase_3x", "at_once_3x", "at_once_3x_freeze_off", RQ_BASE, L1_LW, "torch_pruning_3x", "l1_uniform_3x"]
AT_3X_E40 = [f"{RQ_BASE}_e40", f"{L1_LW}_e40", f"{L1_LW}_distill_off_e40", f"{L1_LW}_layer_step0.5_e40",
             "torch_pruning_3x_e40", "l1_uniform_3x_e40"]
RESNET20_3X = [f"resnet20_{L1_LW}", "resnet20_torch_pruning_3x", "resnet20_l1_uniform_3x"]
RQ = {
    "At the goal's 3x, 15 epochs (pl_pruning given target_macs=0.3333)": AT_3X,
    "At the goal's 3x within the goal's 40 epochs (--budget 40)": AT_3X_E40,
    f"RQ1 criterion ({RQ_BASE}, 15 epochs, pruning.criterion changed)": [
        RQ_BASE, f"{RQ_BASE}_criterion_entropy", f"{RQ_BASE}_criterion_mutual_information", f"{RQ_BASE}_criterion_apoz",
        f"{RQ_BASE}_criterion_l1", f"{RQ_BASE}_criterion_random"],
    f"RQ2 phases ({RQ_BASE}, 15 epochs, pruning.phases changed)": [
        RQ_BASE, f"{RQ_BASE}_global_only", f"{RQ_BASE}_layerwise_only"],
    "RQ3 freeze, compensation, distillation (at_once_3x with one or more of them off, 15 epochs)": [
        "at_once_3x", "at_once_3x_freeze_off", RQ_BASE, f"{RQ_BASE}_compensation_off"],
    # pruning.normalize acts on Phase I's global ranking only, so the preset's layer-wise steps
    # are shaped by layer_step (a layer's share per step) and layer_order instead.
    f"Levers on the preset's settings ({L1_LW}, 15 epochs, seed-0 screens: distillation, shape)": [
        L1_LW, f"{L1_LW}_kd0.5", f"{L1_LW}_t2", f"{L1_LW}_layer_step0.125", f"{L1_LW}_by_macs",
        f"{L1_LW}_layer_step0.5", f"{L1_LW}_max_drop0.03"],
    "The fine-tune's starting rate (cosine, 15 epochs; 0.01 is every method's default, 0.05 the baseline's own)": [
        RQ_BASE, f"{RQ_BASE}_lr0.05", "torch_pruning_3x", "torch_pruning_3x_lr0.05", "l1_uniform_3x", "l1_uniform_3x_lr0.05"],
    "The fine-tune's starting rate in the goal's 40 epochs (cosine; 0.05 is the baseline's own; the same cut)": [
        f"{L1_LW}_e40", f"{L1_LW}_lr0.05_e40", f"{L1_LW}_lr0.005_e40"],
    "Distillation in the goal's 40 epochs (off, the default weight 1, weight 4; the same cut)": [
        f"{L1_LW}_distill_off_e40", f"{L1_LW}_e40", f"{L1_LW}_kd4_e40"],
    # after: the pruning=at_once preset's settings, given the same epochs as the controller before
    "The controller before (commit 5c8aca5) and after the efficiency work, 15 and 40 epochs": [
        "shipped", L1_LW, "shipped_e40", f"{L1_LW}_e40", f"{L1_LW_333}_e40", f"{L1_LW_333}_layer_step0.5_e40",
        f"{L1_LW_333}_max_drop0.03_e40"],
    # run.py names another network's runs with its prefix (--experiment converged_resnet20)
    "ResNet-20 at 3x, 15 epochs (--experiment converged_resnet20)": RESNET20_3X,
}
# Issue goal: 3x fewer MACs at no more than 1 point lost within a 40-epoch budget.
# The goal (issue 11) and the controller before (shipped, shipped_e40) are on the VGG only.
# The bound of the before/after comparison (issue 12): the controller before's max_drop, the
# two_phase preset's 0.02 then, in points.
BEFORE_BOUND_POINTS = 2.0
GOAL = {"macs_reduction": 3.0, "max_drop_points": 1.0, "budget": 40, "experiment": EXPERIMENT}


from records import load  # noqa: E402  (the records, read once per render)

_mean_std = mean_sd


TRAIN_IMAGES, VAL_IMAGES, BATCH = 45_000, 5_000, 128  # the converged presets' splits and batch size


def distilled(run: dict) -> bool:
    """Whether a pl_pruning run fine-tuned with the dense teacher (the presets' default then;
    the controller before, ``shipped*``, had none)."""
    return (run["method"] == "pl_pruning" and not run["name"].startswith("shipped")
            and not any(o.replace(" ", "") == "pruning.distill=false" for o in run.get("overrides") or []))


def images_forwarded(run: dict) -> int:
    """Images through a forward pass in a run: counted where the run counted them
    (``images_forwarded`` in its record: a total, or per phase and split); otherwise estimated
    from its record: training images per
    epoch (twice with a teacher), one validation pass per epoch and per judged step (and the
    baseline's), and for steps judged before any epoch their BatchNorm re-estimation batches
    (the controller's default 4)."""
    counted = run.get("images_forwarded")
    if counted is not None:
        return counted if isinstance(counted, int) else _total(counted)
    epochs = run["budget"] if run["method"] != "scratch" else run["epochs"]
    images = TRAIN_IMAGES * epochs * (2 if distilled(run) else 1) + VAL_IMAGES * epochs
    if run["method"] == "pl_pruning":
        judged = run.get("surgeries") or 0
        images += VAL_IMAGES * (judged + 1) + (4 * BATCH * judged if any(
            o.replace(" ", "") == "pruning.finetune_epochs=0" for o in run.get("overrides") or []) else 0)
    return images


def _total(counts: dict | int) -> int:
    return counts if isinstance(counts, int) else sum(_total(v) for v in counts.values())


def summarise(runs: list[dict]) -> dict[str, dict]:
    by_name: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_name[r["name"]].append(r)
    out = {}
    for name, rs in by_name.items():
        acc = _mean_std([r["pruned"]["test_acc"] * 100 for r in rs])
        drop = _mean_std([r["acc_drop"] * 100 for r in rs])
        red = _mean_std([r["macs_reduction"] for r in rs])
        vals = [v for v in (final_val(r) for r in rs) if v is not None]
        out[name] = {"n": len(rs), "seeds": sorted(r["seed"] for r in rs), "acc": acc, "drop": drop,
                     "tests": [r["pruned"]["test_acc"] * 100 for r in rs], "vals": vals,
                     "val": _mean_std(vals) if vals else None,
                     # a resumed run recorded its last sitting's time only: left out of the mean
                     "wall_min": statistics.fmean(r["wall_s"] / 60 for r in rs if r.get("wall_s") and not resumed(r))
                     if any(r.get("wall_s") and not resumed(r) for r in rs) else None,
                     "images_m": statistics.fmean(images_forwarded(r) for r in rs) / 1e6,
                     "precision": rs[0].get("precision", "32-true"),
                     "macs_reduction": red, "method": rs[0]["method"], "max_drop": rs[0].get("max_drop"),
                     "budget": max(r["budget"] for r in rs),
                     "experiment": experiment_of(rs[0]),
                     "baseline_acc": statistics.fmean(r["baseline"]["test_acc"] * 100 for r in rs)}
    return out


def _pm(ms: tuple[float, float | None], spec: str = ".2f", unit: str = "") -> str:
    mean, std = ms
    return f"{mean:{spec}}{unit}" + (f" ± {std:{spec}}{unit}" if std is not None else " (1 seed)")


def speedups() -> dict[str, str]:
    """``{setting: PyTorch speed-up at batch 64}`` from ``latency.json`` (``latency.py``: each
    setting's pruned shape timed side by side with the dense network), as table cells. A
    setting not timed whose shape is a timed one's (a 40-epoch run of the same cut) shows that
    setting's figure, named."""
    from latency import shapes

    path = HERE / "latency.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    timed = {r["setting"]: r["speedup"] for r in rows if r["batch"] == 64}
    out = {name: f"{x:.2f}x" for name, x in timed.items()}
    known = shapes()
    for name, shape in known.items():
        if name in out:
            continue
        same = [t for t in sorted(timed, key=lambda t: t != name.removesuffix("_e40"))  # its own 15-epoch run first
                if t in known and known[t]["channels"] == shape["channels"]]
        if same:
            out[name] = f"{timed[same[0]]:.2f}x (the shape of {same[0]})"
    return out


def table(rows: dict[str, dict], names: list[str], speedup: dict[str, str]) -> list[str]:
    lines = ["| setting | runs | validation acc (%) | test acc (%) | drop (points) | MACs reduction | "
             "latency speed-up (batch 64) | wall (min) | images forwarded (M) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        s = rows.get(name)
        if s is None:
            lines.append(f"| {name} | 0 | not run yet | | | | | | |")
            continue
        val = _pm(s["val"]) if s["val"] else "-"
        wall = f"{s['wall_min']:.0f}" if s["wall_min"] is not None else "-"
        lines.append(f"| {name} | {s['n']} | {val} | {_pm(s['acc'])} | {_pm(s['drop'])} | "
                     f"{_pm(s['macs_reduction'], unit='x')} | {speedup.get(name, '-')} | {wall} | {s['images_m']:.1f} |")
    return lines


def efficiency(runs: list[dict]) -> list[str]:
    """Per pl_pruning run: fine-tuning epochs spent on steps and MACs removed per such epoch,
    per phase (the final fine-tune is not counted), steps accepted, the kept cut's validation
    accuracy before the final fine-tune, and wall time."""
    lines = ["| run | seed | Phase I epochs | Phase I MACs removed / epoch | Phase II epochs | "
             "Phase II MACs removed / epoch | steps accepted | validation before the final fine-tune | wall (min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        if r["method"] != "pl_pruning":
            continue
        ph = per_phase(r["history"])
        cells = []
        for phase in ("global", "layerwise"):
            row = ph.get(phase, {"epochs": 0, "macs_removed": 0, "macs_removed_per_epoch": 0.0})
            rate = row["macs_removed_per_epoch"]  # None: judged at once (finetune_epochs=0)
            cells += [str(row["epochs"]), f"{rate / 1e6:.2f} M" if rate is not None else
                      f"{row['macs_removed'] / 1e6:.2f} M before any epoch"]
        steps = [e for e in r["history"] if e["phase"] in ("global", "layerwise")]
        cut = cut_before_finetune(r)
        cells += [f"{sum(e['accepted'] for e in steps)} / {len(steps)}", f"{cut:.4f}" if cut is not None else "-"]
        lines.append(f"| {r['name']} | {r['seed']} | {' | '.join(cells)} | "
                     f"{r['wall_s'] / 60:.0f}{' (resumed)' if resumed(r) else ''} |")
    return lines


# Each pl_pruning setting and the external runs matched to it (same MACs, same budget).
EXTERNAL_3X = ["torch_pruning_3x", "l1_uniform_3x"]
EXTERNAL_3X_E40 = [f"{name}_e40" for name in EXTERNAL_3X]
MATCHED = {"two_phase": ["torch_pruning", "l1_uniform"], "two_phase_3x": EXTERNAL_3X,
           "at_once_3x": EXTERNAL_3X, "at_once_3x_freeze_off": EXTERNAL_3X, RQ_BASE: EXTERNAL_3X, L1_LW: EXTERNAL_3X,
           # at 40 epochs; the rate levers too, against the external pipelines as their users run them (lr 0.01)
           **{f"{name}_e40": EXTERNAL_3X_E40 for name in (RQ_BASE, L1_LW, f"{L1_LW}_distill_off", f"{L1_LW}_lr0.05",
                                                           f"{L1_LW}_lr0.005", f"{L1_LW}_kd4",
                                                           f"{L1_LW}_layer_step0.5")},
           # no external run at 3.33x
           **{f"{L1_LW_333}{lever}_e40": [] for lever in ("", "_layer_step0.5", "_max_drop0.03")},
           RESNET20_3X[0]: RESNET20_3X[1:]}


def _versus(ours: dict, s: dict | None) -> str:
    """``ours`` against a matched external setting: the accuracy difference and whether it
    exceeds the larger of the two seed spreads."""
    if s is None:
        return "not run yet"
    diff = ours["acc"][0] - s["acc"][0]
    spread = max(x for x in (ours["acc"][1], s["acc"][1], 0.0) if x is not None)
    if ours["n"] < 2 or s["n"] < 2:
        verdict = "one seed: no spread"
    elif abs(diff) <= spread:
        verdict = f"tie (spread {spread:.2f})"
    else:
        verdict = f"{'wins' if diff > 0 else 'loses'} (spread {spread:.2f})"
    return f"{diff:+.2f}, {verdict}"


def findings(rows: dict[str, dict]) -> list[str]:
    """The goals, judged per pl_pruning setting from the table: the issue's goal (3x at no
    more than 1 point within 40 epochs), the before/after goal (2x the reduction of the
    controller before, within its max_drop), and the matched external baselines (points of
    test accuracy, ours minus theirs, against the seed spread)."""
    # the controller before at each budget (`shipped`, `shipped_e40`): a setting is compared
    # with the one given the same epochs
    before_at = {row["budget"]: (name, row) for name, row in sorted(rows.items())
                 if name.startswith("shipped") and row.get("method") == "pl_pruning"}
    out = [f"- **The controller before** (`{name}`, commit 5c8aca5, {budget} epochs): "
           f"{row['macs_reduction'][0]:.2f}x with {row['drop'][0]:.2f} points of test accuracy lost "
           f"(mean of {row['n']} seed(s))." for budget, (name, row) in sorted(before_at.items())]
    ours_rows = [name for name in MATCHED if name in rows]
    if not ours_rows:
        return [*out, "- No run of the current controller has finished yet: nothing to conclude about 2PFPCE."]
    # the bound the controller before ran under (its runs predate the max_drop field: the
    # two_phase preset's 0.02 then), in points
    bound = 100 * next((row["max_drop"] for _, row in before_at.values() if row.get("max_drop")),
                       BEFORE_BOUND_POINTS / 100)
    out += ["- The \"vs\" columns: test accuracy, ours minus theirs, in points; a tie when the difference is "
            "within the larger of the two settings' seed standard deviations. The before/after column compares "
            "with the controller before given the same epochs.",
            "", f"| setting | seeds | MACs reduction | points lost | goal: 3x at <= 1 point in <= {GOAL['budget']} "
            f"epochs | before/after: reduction ratio, within {bound:g} points | vs Torch-Pruning | vs uniform L1 |",
            "| --- | ---: | ---: | ---: | --- | --- | --- | --- |"]
    for name in ours_rows:
        ours = rows[name]
        red, drop = ours["macs_reduction"][0], ours["drop"][0]
        met = red >= GOAL["macs_reduction"] and drop <= GOAL["max_drop_points"] and ours["budget"] <= GOAL["budget"]
        goal = f"{'met' if met else 'NOT met'} ({ours['budget']} epochs)"
        before = before_at.get(ours["budget"])
        ratio = (f"no run before at {ours['budget']} epochs" if before is None else
                 f"{red / before[1]['macs_reduction'][0]:.2f}x, {'within' if drop <= bound else 'NOT within'}")
        if experiment_of(ours) != GOAL["experiment"]:
            goal = ratio = "- (set on the VGG)"
        tp, l1 = (_versus(ours, rows.get(o)) for o in MATCHED[name]) if MATCHED[name] else ["none at this reduction"] * 2
        out.append(f"| `{name}` | {ours['n']} | {red:.2f}x | {drop:.2f} | {goal} | {ratio} | {tp} | {l1} |")
    return out


# Every headline difference (PROTOCOL.md): ours against each peer and control at 3x in 40 epochs,
# the peers at their strongest, the scratch controls, each pair within one precision (rule 7: at
# 40 epochs bf16 and fp32 differ by more than the margin); a pair with no run yet says so.
# L1, layer-wise steps, no distillation: the best on validation in fp32 (seed 0; its bf16 seeds
# are row 5 of the plan).
OURS_E40 = "at_once_3x_freeze_off_l1_layerwise_distill_off_e40"
# The recommended preset (L1, both phases, no distillation) at 40 epochs, bf16.
PRESET_E40 = "rederived_3x_e40_bf16cl"
# The re-derived preset's values at 15 epochs, recorded in fp32 on three seeds before the
# protocol (named for the ablation it then was): the precision check repeats its seed 0.
PRESET_15 = "at_once_3x_freeze_off_distill_off_criterion_l1"
HEADLINES = [
    # bf16
    (PRESET_E40, "torch_pruning_sl_3x_e40_bf16cl"), (PRESET_E40, "scratch_uniform_3x_bf16cl"),
    (f"{OURS_E40}_bf16cl", "torch_pruning_sl_3x_e40_bf16cl"), (f"{OURS_E40}_bf16cl", f"scratch_{OURS_E40}_bf16cl"),
    (f"{OURS_E40}_bf16cl", PRESET_E40),  # layer-wise only against both phases
    # fp32
    (OURS_E40, "torch_pruning_3x_e40"), (OURS_E40, "l1_uniform_3x_e40"),
    (f"{L1_LW}_e40", OURS_E40),  # distillation on against off
    (f"{L1_LW}_e40", "torch_pruning_3x_e40"), (f"{L1_LW}_e40", "l1_uniform_3x_e40"),
    # the precision checks (PROTOCOL.md rule 7), at 15 and 40 epochs
    (f"{PRESET_15}_bf16cl", PRESET_15), (f"{OURS_E40}_bf16cl", OURS_E40),
]


def resumed(record: dict) -> bool:
    """Whether any part of the run was resumed (``torch_pruning_sl`` records it per phase)."""
    flag = record.get("resumed")
    return any(flag.values()) if isinstance(flag, dict) else bool(flag)


def headlines(rows: dict[str, dict]) -> list[str]:
    lines = ["| ours | theirs | seeds | validation: ours / theirs | diff | p | test: ours / theirs | diff | p | "
             "wall (min) ours / theirs | images (M) ours / theirs |",
             "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- | --- |"]
    fmt_p = lambda p: "-" if p is None else f"{p:.3f}"  # noqa: E731
    for ours, theirs in HEADLINES:
        a, b = rows.get(ours), rows.get(theirs)
        if a is None or b is None:
            missing = " and ".join(n for n, r in ((ours, a), (theirs, b)) if r is None)
            lines.append(f"| {ours} | {theirs} | | not run yet: {missing} | | | | | | | |")
            continue
        vd = (a["val"][0] - b["val"][0]) if a["val"] and b["val"] else None
        wall = " / ".join("- (resumed)" if r["wall_min"] is None else f"{r['wall_min']:.0f}" for r in (a, b))
        lines.append(
            f"| {ours} | {theirs} | {a['n']} / {b['n']} | "
            f"{_pm(a['val']) if a['val'] else '-'} / {_pm(b['val']) if b['val'] else '-'} | "
            f"{'-' if vd is None else f'{vd:+.2f}'} | {fmt_p(welch_p(a['vals'], b['vals']))} | "
            f"{_pm(a['acc'])} / {_pm(b['acc'])} | {a['acc'][0] - b['acc'][0]:+.2f} | "
            f"{fmt_p(welch_p(a['tests'], b['tests']))} | {wall} | {a['images_m']:.1f} / {b['images_m']:.1f} |")
    return lines


def plot_val_vs_test(runs: list[dict], path: Path) -> None:
    """Validation against test accuracy, run by run, of the 3x runs: where the two disagree,
    a choice made on one is not a choice made on the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, budget in zip(axes, (15, 40)):
        pts = [(final_val(r), 100 * r["pruned"]["test_acc"], r) for r in runs
               if r["budget"] == budget and 2.9 < r["macs_reduction"] < 3.1 and final_val(r) is not None]
        for v, t, r in pts:
            colour, _ = STYLE[style_of(r["name"], r["method"])]
            ax.scatter(v, t, color=colour, s=25)
        if pts:
            lo = min(min(v, t) for v, t, _ in pts) - 0.3
            hi = max(max(v, t) for v, t, _ in pts) + 0.3
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_title(f"3x, {budget} epochs: each run's final validation and test accuracy")
        ax.set_xlabel("validation accuracy (%), 5 000 images")
    axes[0].set_ylabel("test accuracy (%), 10 000 images")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=label) for c, label in STYLE.values()]
    axes[1].legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Colours by method (the preset's settings apart from the controller's other settings) and
# markers by budget, shared by both panels of accuracy_vs_macs.png.
STYLE = {"preset": ("tab:orange", "pl_pruning: the at_once preset's settings"),
         "ours": ("tab:blue", "pl_pruning: other settings (ablations)"),
         "before": ("dimgrey", "pl_pruning before its efficiency work (5c8aca5)"),
         "torch_pruning": ("tab:green", "Torch-Pruning's pipeline"),
         "l1_uniform": ("tab:red", "one-shot uniform L1"),
         "torch_pruning_sl": ("tab:olive", "Torch-Pruning with group sparsity"),
         "scratch": ("tab:purple", "the same MACs trained from scratch")}
MARKERS = {15: "o", 40: "D"}  # another budget: squares


def style_of(name: str, method: str) -> str:
    """The STYLE key of a setting."""
    if method != "pl_pruning":
        return method if method in STYLE else "ours"
    if name in (L1_LW, f"{L1_LW}_e40", f"{L1_LW_333}_e40") or name.startswith("rederived"):
        return "preset"
    return "before" if name.startswith("shipped") else "ours"


def plot(runs: list[dict], path: Path) -> None:
    """Left: every run a point, test accuracy against MACs reduction. Right: the runs at the
    goal's 3x, each setting a column (15 then 40 epochs), each seed a point, the mean a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.25]})
    base = statistics.fmean(r["baseline"]["test_acc"] * 100 for r in runs)
    for r in runs:
        colour = STYLE[style_of(r["name"], r["method"])][0]
        ax.scatter(r["macs_reduction"], r["pruned"]["test_acc"] * 100, color=colour, s=36, alpha=0.8,
                   marker=MARKERS.get(r["budget"], "s"), edgecolor="black", linewidth=0.4)
    names = [n for n in [*AT_3X, *AT_3X_E40] if any(r["name"] == n for r in runs)]
    for x, name in enumerate(names):
        rs = [r for r in runs if r["name"] == name]
        colour = STYLE[style_of(name, rs[0]["method"])][0]
        accs = [r["pruned"]["test_acc"] * 100 for r in rs]
        bx.scatter([x] * len(accs), accs, color=colour, s=36, marker=MARKERS.get(rs[0]["budget"], "s"),
                   edgecolor="black", linewidth=0.4, zorder=3)
        bx.hlines(statistics.fmean(accs), x - 0.3, x + 0.3, color=colour, lw=2, zorder=2)
    split = sum(1 for n in names if n in AT_3X) - 0.5
    bx.axvline(split, color="black", lw=0.8)
    bx.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
    for a in (ax, bx):
        a.axhline(base, color="grey", lw=1, ls="--")
        a.axhline(base - GOAL["max_drop_points"], color="grey", lw=1, ls=":")
        a.grid(alpha=0.3)
        a.set_ylabel("test accuracy (%)")
    ax.axvline(GOAL["macs_reduction"], color="grey", lw=1, ls=":")
    # issue 12's before/after bound: the controller before's max_drop (2 points), at twice its reduction
    ax.axhline(base - BEFORE_BOUND_POINTS, color="grey", lw=1, ls="-.")
    ax.set_xlabel("MACs reduction (baseline / pruned)")
    ax.set_title("Every run", fontsize=10)
    bx.set_title(f"At 3x: 15 epochs | {GOAL['budget']} epochs (each seed a point, mean a bar)", fontsize=10)
    used = {style_of(r["name"], r["method"]) for r in runs}
    handles = [Line2D([], [], color=STYLE[k][0], marker="o", ls="", label=STYLE[k][1]) for k in STYLE if k in used]
    handles += [Line2D([], [], color="black", marker=MARKERS.get(b, "s"), ls="", mfc="none", label=f"{b}-epoch budget")
                for b in sorted({r["budget"] for r in runs})]
    handles += [Line2D([], [], color="grey", ls="--", label=f"converged baseline {base:.2f}%"),
                Line2D([], [], color="grey", ls=":", label="1 point below (the goal)"),
                Line2D([], [], color="grey", ls="-.", label=f"{BEFORE_BOUND_POINTS:g} points below (before/after bound)")]
    ax.legend(handles=handles, fontsize=7, loc="center", bbox_to_anchor=(0.45, 0.45))
    fig.suptitle("Equal-budget pruning of converged VGG-16-BN x0.25 (CIFAR-10 test set)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cut_before_finetune(run: dict) -> float | None:
    """Validation accuracy of the cut a pl_pruning run kept, before its final fine-tune
    (BatchNorm re-estimated: the controller's own judgment of its last accepted step)."""
    kept = [e["metric"] for e in run.get("history", []) if e["phase"] in ("global", "layerwise") and e["accepted"]]
    return kept[-1] if kept else None


def plot_cut_vs_final(runs: list[dict], path: Path, budget: int = 15) -> list[str]:
    """Each at-once run that reached 3x (steps judged before any training): its cut's validation before
    fine-tuning against its test accuracy after the budget. Also the external methods' seed-0
    cuts (``before_finetune.json``, BatchNorm re-estimated the same way). Returns a line with
    the rank correlation over the pl_pruning runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [(cut_before_finetune(r), r) for r in runs if r["method"] == "pl_pruning" and r["budget"] == budget
            and "pruning.finetune_epochs=0" in r.get("overrides", []) and abs(r["macs_reduction"] - 3) < 0.1]
    ours = [(c, r) for c, r in ours if c is not None]
    if len(ours) < 3:
        return []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    cmap = plt.get_cmap("tab10")
    names = sorted({r["name"] for _, r in ours})
    for i, name in enumerate(names):
        pts = [(c * 100, r["pruned"]["test_acc"] * 100) for c, r in ours if r["name"] == name]
        ax.scatter(*zip(*pts), color=cmap(i % 10), s=40, marker="o" if i < 10 else "^", label=name)
    cuts = json.loads((HERE / "before_finetune.json").read_text()) if (HERE / "before_finetune.json").exists() else {}
    for j, name in enumerate(n for n in ("torch_pruning_3x", "l1_uniform_3x") if n in cuts):
        final = [r["pruned"]["test_acc"] * 100 for r in runs if r["name"] == name and r["seed"] == 0]
        if final and cuts[name].get("val_acc_batchnorm_reestimated") is not None:
            ax.scatter(cuts[name]["val_acc_batchnorm_reestimated"] * 100, final[0], marker="s", s=50,
                       color="black" if j == 0 else "dimgrey", label=f"{name} (seed 0)")
    x = [c for c, _ in ours]
    y = [r["pruned"]["test_acc"] for _, r in ours]
    rho = _spearman(x, y)
    ax.set_xlabel("validation accuracy of the kept cut before fine-tuning (%, BatchNorm re-estimated)")
    ax.set_ylabel(f"test accuracy after {budget} epochs (%)")
    ax.set_title(f"The judged cut against the fine-tuned network (Spearman {rho:+.2f} over {len(ours)} runs)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [f"- Over the {len(ours)} at-once 3x runs of {budget} epochs, the rank correlation between the kept cut's "
            f"validation before fine-tuning and the test accuracy after it is {rho:+.2f} (`{path.name}`)."]


def _spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def curve_band(curves: list[list[float | None]]) -> list[tuple[int, float, float, float]]:
    """``(epoch, mean, lowest, highest)`` over the seeds' validation curves (fractions, as runs
    record them in ``val_curve``), for every epoch at least one seed logged; an epoch a seed's
    log lost (``None``) is left out of that epoch's mean, not counted as zero."""
    band = []
    for e in range(max((len(c) for c in curves), default=0)):
        values = [c[e] for c in curves if e < len(c) and c[e] is not None]
        if values:
            band.append((e, statistics.fmean(values), min(values), max(values)))
    return band


def plot_curves(runs: list[dict], names: list[str], path: Path, epochs: int, network: str = "") -> None:
    """Validation accuracy after each epoch of the budget, per setting: the mean over its
    seeds, and the range of the seeds shaded (runs record ``val_curve``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        curves = [r["val_curve"] for r in runs if r["name"] == name and r.get("val_curve")]
        if not curves:
            continue
        band = curve_band(curves)
        xs = [e + 1 for e, *_ in band]
        ax.plot(xs, [m * 100 for _, m, _, _ in band], color=cmap(i % 10), lw=1.5, marker=".", ms=3,
                label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
        if len(curves) > 1:
            ax.fill_between(xs, [lo * 100 for _, _, lo, _ in band], [hi * 100 for *_, hi in band],
                            color=cmap(i % 10), alpha=0.2)
    ax.set_xlabel("epoch of the budget")
    ax.set_ylabel("validation accuracy (%, 5 000 images)")
    ax.set_title(f"Recovery at 3x fewer MACs{network}, {epochs} epochs (mean over seeds, range shaded)",
                 fontsize=10)
    ax.set_ylim(bottom=65)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(experiment: str) -> None:
    """Everything from ``runs/``; the pictures of the VGG runs show only ``experiment``'s runs
    (the harness's VGG-16-BN), so another network's runs stay out of them."""
    runs = load()
    rows, lat = summarise(runs), speedups()
    with open(HERE / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "method", "seed", "budget", "baseline_test_acc", "test_acc", "acc_drop",
                    "macs", "macs_reduction", "params", "latency_ms", "baseline_latency_ms", "wall_s"])
        for r in runs:
            w.writerow([r["name"], r["method"], r["seed"], r["budget"], r["baseline"]["test_acc"],
                        r["pruned"]["test_acc"], round(r["acc_drop"], 4), r["pruned"]["macs"],
                        round(r["macs_reduction"], 3), r["pruned"]["params"], r["pruned"].get("latency_ms"),
                        r["baseline"].get("latency_ms"), r.get("wall_s")])
    md = ["# Equal-budget comparison (generated by `python benchmarks/compare/run.py render`)", ""]
    md += [f"{len(runs)} runs. Every run starts from the same converged checkpoint and trains "
           "its budget of epochs in all (15, the harness default; 40 for names ending in _e40). "
           "Mean ± sample standard deviation over seeds; "
           "'(1 seed)' marks a single run. Latency speed-up: the dense network's CPU latency over the "
           "pruned one's in eager PyTorch at batch 64, one thread, the two timed side by side by "
           "`latency.py` (`latency.md` has batch 1 and ONNX Runtime); '-' where the run recorded no "
           "shape. `results.csv` keeps the latencies each run took of itself at its end, on a shared "
           "machine: those do not compare across runs.", ""]
    md += ["## Headline differences (PROTOCOL.md: validation decides, test is reported beside it)", "",
           "Mean ± sample SD over seeds; p: Welch's two-sided t-test; wall time on a shared 2-core CPU "
           "(runs named `_bf16cl`: bf16 autocast, channels-last weights); images forwarded estimated from "
           "each record (a teacher's forward counted).", "", *headlines(rows), ""]
    for title, names in RQ.items():
        md += [f"## {title}", "", *table(rows, names, lat), ""]
    others = sorted(set(rows) - {n for names in RQ.values() for n in names})
    if others:
        md += ["## Other settings", "", *table(rows, others, lat), ""]
    md += ["## Epochs and what they bought (pl_pruning runs)", "", *efficiency(runs), ""]
    vgg = [r for r in runs if experiment_of(r) == experiment]
    cut_lines = plot_cut_vs_final(vgg, HERE / "cut_vs_final.png") if vgg else []
    md += ["## Findings (computed from the table)", "", *findings(rows), *cut_lines, ""]
    (HERE / "results.md").write_text("\n".join(md))
    if vgg:
        plot(vgg, HERE / "accuracy_vs_macs.png")
        plot_val_vs_test(vgg, HERE / "val_vs_test_3x.png")
        plot_curves(runs, AT_3X, HERE / "val_curves_3x.png", epochs=15)
        if any(r["name"] in AT_3X_E40 for r in runs):
            plot_curves(runs, AT_3X_E40, HERE / "val_curves_3x_e40.png", epochs=40)
    if any(r["name"] in RESNET20_3X for r in runs):
        plot_curves(runs, RESNET20_3X, HERE / "val_curves_resnet20_3x.png", epochs=15, network=" of ResNet-20")
    print("\n".join(md))


if __name__ == "__main__":
    render(EXPERIMENT)
