"""Two-phase pruning against either phase alone, on the real CIFAR-10 (JPEG copy).

    python benchmarks/two_phase/run.py                     # defaults below, CPU
    python benchmarks/two_phase/run.py --width 0.5 --per-class 5000 --epochs 60 --budget 80   # GPU-sized

A VGG-16-BN is trained to a baseline once; then three copies are pruned with
``phases = global``, ``layerwise`` and ``global + layerwise``, each with the same
criterion, ``max_drop``, step sizes and the same fine-tuning budget (``--budget`` epochs
for the whole pruning fit, final fine-tune included). Writes ``results.csv``,
``README.md`` and ``paths.png`` beside this file.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
import time
from pathlib import Path

import lightning as L
import torch

from pl_pruning import (
    EntropyStatistics,
    ImageClassifier,
    MaxEntropyFreeze,
    PhaseController,
    build_model,
)
from pl_pruning.data import ImageFolderDataModule
from pl_pruning.measure import measure_cost

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE.parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"
SETTINGS = {"global": ["global"], "layerwise": ["layerwise"], "two_phase": ["global", "layerwise"]}


def trainer(args, out: Path, callbacks=(), max_epochs: int = 1) -> L.Trainer:
    return L.Trainer(accelerator=args.accelerator, devices=1, max_epochs=max_epochs, callbacks=list(callbacks),
                     logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(out))


def test_acc(args, model, dm, out) -> float:
    return float(trainer(args, out).test(model, datamodule=dm, verbose=False)[0]["test_acc"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", default=str(ARCHIVE))
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--per-class", type=int, default=500, help="training pool per class (10%% becomes validation)")
    p.add_argument("--eval-per-class", type=int, default=200, help="test images per class")
    p.add_argument("--epochs", type=int, default=30, help="baseline training epochs")
    p.add_argument("--budget", type=int, default=30, help="epochs of each pruning fit, final fine-tune included")
    p.add_argument("--max-drop", type=float, default=0.02)
    p.add_argument("--criterion", default="conditional_entropy")
    p.add_argument("--layer-order", default="by_macs", help="Phase II order (PhaseController.layer_order)")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--render", action="store_true",
                   help="only rewrite README.md, results.csv and paths.png from summary.json")
    args = p.parse_args()
    out = HERE / "outputs"
    if args.render:
        write_outputs(json.loads((HERE / "summary.json").read_text()))
        return
    out.mkdir(exist_ok=True)

    L.seed_everything(args.seed)
    dm = ImageFolderDataModule(root=args.archive, samples_per_class=args.per_class,
                               eval_samples_per_class=args.eval_per_class, batch_size=64, num_workers=1,
                               seed=args.seed)
    base = ImageClassifier(build_model("vgg16", num_classes=10, width=args.width), input_shape=(3, 32, 32),
                           lr=0.05, weight_decay=5e-4)
    start = time.perf_counter()
    trainer(args, out, max_epochs=args.epochs).fit(base, datamodule=dm)
    baseline_s = time.perf_counter() - start
    base_acc = test_acc(args, base, dm, out)
    example = torch.zeros(64, 3, 32, 32)
    base_cost = measure_cost(base.net.cpu(), example, latency=False)
    print(f"baseline: test_acc={base_acc:.4f} MACs={base_cost.macs / 1e6:.1f}M ({baseline_s:.0f}s)")

    rows, reports = [], {}
    for name, phases in SETTINGS.items():
        model = copy.deepcopy(base)
        model.hparams.update(lr=0.01, scheduler="none")
        controller = PhaseController(criterion=args.criterion, phases=phases, max_drop=args.max_drop,
                                     global_step=0.2, layer_step=0.25, min_step=0.05, finetune_epochs=1,
                                     final_epochs=3, layer_order=args.layer_order,
                                     report_dir=str(out / name))
        L.seed_everything(args.seed)
        start = time.perf_counter()
        fit = trainer(args, out / name, [EntropyStatistics(), controller, MaxEntropyFreeze(0.1)],
                      max_epochs=args.budget)
        fit.fit(model, datamodule=dm)
        seconds = time.perf_counter() - start
        acc = test_acc(args, model, dm, out)
        cost = measure_cost(model.net.cpu(), example, latency=False)
        steps = [e for e in controller.history if e["phase"] in ("global", "layerwise")]
        rows.append({"setting": name, "phases": "+".join(phases), "baseline_test_acc": round(base_acc, 4),
                     "pruned_test_acc": round(acc, 4), "acc_drop": round(base_acc - acc, 4),
                     "macs_reduction": round(base_cost.macs / cost.macs, 2),
                     "params_reduction": round(base_cost.params / cost.params, 2),
                     "macs_M": round(cost.macs / 1e6, 2), "params_M": round(cost.params / 1e6, 3),
                     "steps": len(steps), "accepted": sum(e["accepted"] for e in steps),
                     "epochs": fit.current_epoch,
                     "wall_s": round(seconds, 1)})
        reports[name] = controller.report()
        print(rows[-1])

    summary = {"command": command_line(args), "machine": f"{platform.machine()} ({args.accelerator}, "
               f"{torch.get_num_threads()} threads), torch {torch.__version__}",
               "width": args.width, "epochs": args.epochs, "budget": args.budget, "max_drop": args.max_drop,
               "baseline_acc": base_acc, "baseline_macs": base_cost.macs, "baseline_params": base_cost.params,
               "baseline_s": baseline_s, "rows": rows, "reports": reports}
    (HERE / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    write_outputs(summary)


def command_line(args) -> str:
    return (f"python benchmarks/two_phase/run.py --width {args.width} --per-class {args.per_class} "
            f"--eval-per-class {args.eval_per_class} --epochs {args.epochs} --budget {args.budget} "
            f"--max-drop {args.max_drop} --criterion {args.criterion} --layer-order {args.layer_order}")


def findings(summary: dict) -> list[str]:
    """What the table says, computed from it (so that a re-run cannot contradict the text)."""
    rows = {r["setting"]: r for r in summary["rows"]}
    lines = []
    if {"global", "layerwise", "two_phase"} <= set(rows):
        both, best_single = rows["two_phase"], max(rows["global"], rows["layerwise"], key=lambda r: r["macs_reduction"])
        verdict = "more" if both["macs_reduction"] > best_single["macs_reduction"] else "not more"
        lines.append(f"- **MACs**: both phases {both['macs_reduction']}x, {best_single['setting']} alone "
                     f"{best_single['macs_reduction']}x (the better single phase): two phases compress "
                     f"{verdict} than either alone in this run.")
        lines.append(f"- **Parameters**: both {rows['two_phase']['params_reduction']}x, global "
                     f"{rows['global']['params_reduction']}x, layer-wise {rows['layerwise']['params_reduction']}x.")
    within = [r["setting"] for r in summary["rows"] if r["acc_drop"] <= summary["max_drop"]]
    lines.append(f"- **Test accuracy drop** within max_drop {summary['max_drop']}: "
                 f"{', '.join(within) or 'none'} (the controller decides on validation accuracy; the test "
                 "split is never seen while pruning).")
    gains = [r["setting"] for r in summary["rows"] if r["acc_drop"] < 0]
    if gains:
        lines.append(f"- Negative drops ({', '.join(gains)}): the baseline had {summary['epochs']} epochs, and "
                     "the fine-tuning epochs of the pruning fit train the network further; the budget "
                     "also differs in use (a run that ends its phases early stops early: see `epochs`), "
                     "so compare accuracies with care and MACs first.")
    return lines


def write_outputs(summary: dict) -> None:
    """results.csv, README.md and paths.png from a run's summary."""
    rows = summary["rows"]
    with open(HERE / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(summary["reports"], HERE / "paths.png")
    lines = ["# Two-phase pruning vs. either phase alone (CIFAR-10 JPEG, VGG-16-BN)", "",
             f"Command: `{summary['command']}` on {summary['machine']}. "
             "`python benchmarks/two_phase/run.py --render` rewrites this page from `summary.json`.", "",
             f"Baseline: VGG-16-BN width {summary['width']}, {summary['baseline_macs'] / 1e6:.1f} M MACs, "
             f"{summary['baseline_params'] / 1e6:.3f} M params, test accuracy {summary['baseline_acc']:.4f} after "
             f"{summary['epochs']} epochs ({summary['baseline_s']:.0f} s). Each pruning fit: {summary['budget']} "
             f"epochs at most (final 3 included), max_drop {summary['max_drop']} on validation accuracy, same "
             "steps and criterion. `acc_drop` is a fraction of the test accuracy (0.01 = 1 point); "
             "`epochs` is how many the pruning fit used; `wall_s` its wall time.", "",
             "| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    lines += ["", "## What it shows", "", *findings(summary), "",
              "![accuracy against MACs along each run](paths.png)", ""]
    (HERE / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(reports: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    # two_phase first: its Phase I is the global run's path, which is drawn over it, dashed
    styles = {"two_phase": ("o-", 4, 2.0), "layerwise": ("s-", 4, 1.2), "global": ("x--", 7, 1.2)}
    for name in sorted(reports, key=lambda n: list(styles).index(n) if n in styles else 99):
        accepted = [e for e in reports[name]["history"] if e.get("accepted") and e.get("metric") is not None]
        fmt, ms, lw = styles.get(name, ("o-", 4, 1.2))
        line, = ax.plot([e["macs"] / 1e6 for e in accepted], [e["metric"] for e in accepted], fmt, label=name,
                        ms=ms, lw=lw)
        final = accepted[-1]
        ax.plot(final["macs"] / 1e6, final["metric"], "*", ms=14, color=line.get_color(), mec="black")
    ax.invert_xaxis()
    ax.set_xlabel("MACs per sample (M; pruning goes right)")
    ax.set_ylabel("validation accuracy (accepted steps)")
    ax.set_title("Pruning paths: global, layer-wise, both (star: final network)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
