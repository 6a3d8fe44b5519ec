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
from pl_pruning.measure import measure

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
    args = p.parse_args()
    out = HERE / "outputs"
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
    base_cost = measure(base.net.cpu(), example, latency=False)
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
        cost = measure(model.net.cpu(), example, latency=False)
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

    with open(HERE / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "reports.json").write_text(json.dumps(reports, indent=2, default=float))
    plot(reports, base_acc, HERE / "paths.png")
    lines = ["# Two-phase pruning vs. either phase alone (CIFAR-10 JPEG, VGG-16-BN)", "",
             f"Command: `python benchmarks/two_phase/run.py --width {args.width} --per-class {args.per_class} "
             f"--eval-per-class {args.eval_per_class} --epochs {args.epochs} --budget {args.budget} "
             f"--max-drop {args.max_drop} --criterion {args.criterion} --layer-order {args.layer_order}` "
             f"on {platform.machine()} "
             f"({args.accelerator}, {torch.get_num_threads()} threads), torch {torch.__version__}.", "",
             f"Baseline: VGG-16-BN width {args.width}, {base_cost.macs / 1e6:.1f} M MACs, "
             f"{base_cost.params / 1e6:.3f} M params, test accuracy {base_acc:.4f} after {args.epochs} epochs "
             f"({baseline_s:.0f} s). Each pruning fit: {args.budget} epochs at most (final 3 included), "
             f"max_drop {args.max_drop} on validation accuracy, same steps and criterion.", "",
             "| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    lines += ["", "![accuracy against MACs along each run](paths.png)", ""]
    (HERE / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(reports: dict, base_acc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, report in reports.items():
        accepted = [e for e in report["history"] if e.get("accepted") and e.get("metric") is not None]
        ax.plot([e["macs"] / 1e6 for e in accepted], [e["metric"] for e in accepted], "o-", label=name, ms=4)
    ax.invert_xaxis()
    ax.set_xlabel("MACs per sample (M)")
    ax.set_ylabel("validation accuracy (accepted steps)")
    ax.set_title("Pruning paths: global, layer-wise, both")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
