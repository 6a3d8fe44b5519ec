"""Is bias compensation worth it? Accuracy right after pruning, before any fine-tuning.

    python benchmarks/bias_compensation/run.py                 # digits, then CIFAR-10
    python benchmarks/bias_compensation/run.py --datasets digits

For each data set a network is trained in-script (real data, CPU), then pruned
*uniformly* (every convolution loses the same fraction of its filters) at several
fractions, the filters picked by smallest L1 norm (Li et al. 2017) and, as a second
selection, at random (``--random-seeds`` draws). Each pruned copy is evaluated on the
test split twice: plain removal, and removal with bias compensation
(:mod:`pl_pruning.pruning.compensation`). No fine-tuning in between: this isolates what the
bias update itself recovers. For context a third copy gets plain removal followed by
BatchNorm statistics re-estimated on the validation split.

The per-filter means are collected on the *validation* split with forward hooks at the
tap the compensation expects (after the BatchNorm and ReLU that follow each conv, pooled
over H x W, averaged over samples); accuracy is measured on the *test* split.

Data: ``digits`` = scikit-learn's 8x8 digits with ``small_cnn``; ``cifar10`` = the real
CIFAR-10 JPEG copy in ``../shared/data`` (a class-balanced subset, see the flags) with a
narrow VGG-16-BN (``--cifar-width``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from pl_pruning.data import DigitsDataModule, ImageFolderDataModule  # noqa: E402
from pl_pruning.measure import count_macs  # noqa: E402
from pl_pruning.module import ImageClassifier  # noqa: E402
from pl_pruning.pruning.surgery import prune_filters, pruning_groups  # noqa: E402

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def materialise(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def tapped_means(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean of the ReLU after each conv's BatchNorm (conv, BN, ReLU siblings), per filter."""
    taps, sums, hooks = {}, {}, []
    for parent_name, parent in net.named_modules():
        kids = list(parent.named_children())
        for i, (name, child) in enumerate(kids[:-2]):
            if (isinstance(child, nn.Conv2d) and isinstance(kids[i + 1][1], nn.BatchNorm2d)
                    and isinstance(kids[i + 2][1], nn.ReLU)):
                taps[kids[i + 2][1]] = f"{parent_name}.{name}".lstrip(".")

    def record(conv: str, out: torch.Tensor) -> None:
        sums[conv] = sums.get(conv, 0) + out.double().mean(dim=(2, 3)).sum(0)

    for act, conv in taps.items():
        hooks.append(act.register_forward_hook(lambda m, i, o, conv=conv: record(conv, o)))
    net.eval()
    with torch.no_grad():
        for chunk in x.split(256):
            net(chunk)
    for h in hooks:
        h.remove()
    return {k: (v / len(x)).float() for k, v in sums.items()}


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(chunk) for chunk in x.split(256)])
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def recalibrate_batchnorms(net: nn.Module, x: torch.Tensor) -> None:
    """Re-estimate every BatchNorm's running statistics on ``x`` (no weights change)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    net.train()
    with torch.no_grad():
        for chunk in x.split(128):
            net(chunk)
    net.eval()


def plan_for(net: nn.Module, groups, fraction: float, selection: str, seed: int) -> dict:
    modules = dict(net.named_modules())
    gen = torch.Generator().manual_seed(seed)
    plan = {}
    for g in groups:
        k = min(round(fraction * g.channels), g.channels - 1)
        if k < 1:
            continue
        if selection == "l1":
            l1 = modules[g.root].weight.detach().abs().flatten(1).sum(1)
            plan[g.root] = torch.argsort(l1)[:k].tolist()
        else:
            plan[g.root] = torch.randperm(g.channels, generator=gen)[:k].tolist()
    return plan


def train(module: ImageClassifier, dm, epochs: int) -> float:
    start = time.perf_counter()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start


def run_dataset(name: str, args) -> list[dict]:
    L.seed_everything(0, workers=True)
    if name == "digits":
        dm = DigitsDataModule(batch_size=64)
        spec = dict(name="small_cnn", num_classes=10, in_channels=1)
        module = ImageClassifier(spec, input_shape=(1, 8, 8), lr=0.05, scheduler="cosine")
        epochs = args.digits_epochs
    else:
        dm = ImageFolderDataModule(root=str(CIFAR), samples_per_class=args.cifar_train_per_class,
                                   eval_samples_per_class=args.cifar_test_per_class,
                                   batch_size=128, num_workers=args.workers)
        spec = dict(name="vgg16", num_classes=10, in_channels=3, width=args.cifar_width)
        module = ImageClassifier(spec, input_shape=(3, 32, 32), lr=0.05, scheduler="cosine")
        epochs = args.cifar_epochs
    train_s = train(module, dm, epochs)
    net = module.net.eval()
    dm.setup("test")
    x_val, _ = materialise(dm.val_dataloader())
    x_test, y_test = materialise(dm.test_dataloader())
    means = tapped_means(net, x_val)
    example = x_test[:1]
    groups = pruning_groups(net, example)
    dense_macs = count_macs(net, example)
    acc_dense, loss_dense = evaluate(net, x_test, y_test)
    print(f"[{name}] trained {epochs} epochs in {train_s:.0f} s: test acc {acc_dense:.4f} "
          f"(val {len(x_val)}, test {len(x_test)}); {len(means)} taps", flush=True)
    rows = []
    selections = [("l1", 0)] + [("random", s) for s in range(args.random_seeds)]
    for fraction in FRACTIONS:
        for selection, seed in selections:
            plan = plan_for(net, groups, fraction, selection, seed)
            result = {}
            for compensate in (False, True):
                pruned = copy.deepcopy(net)
                report = prune_filters(pruned, plan, example, channel_means=means if compensate else None)
                result[compensate] = (evaluate(pruned, x_test, y_test), report)
            (acc_p, loss_p), _ = result[False]
            (acc_c, loss_c), rep_c = result[True]
            # for context: plain removal, then BatchNorm statistics re-estimated on the
            # validation split (repairs variance shifts as well as mean shifts)
            recalibrated = copy.deepcopy(net)
            prune_filters(recalibrated, plan, example)
            recalibrate_batchnorms(recalibrated, x_val)
            acc_r, loss_r = evaluate(recalibrated, x_test, y_test)
            row = {
                "dataset": name, "model": f"{spec['name']} (width {spec.get('width', 1.0)})",
                "train_epochs": epochs, "test_samples": len(x_test), "selection": selection,
                "seed": seed, "fraction": fraction,
                "macs_ratio": round(dense_macs / count_macs(pruned, example), 3),
                "acc_dense": round(acc_dense, 4), "acc_plain": round(acc_p, 4),
                "acc_compensated": round(acc_c, 4), "acc_gain": round(acc_c - acc_p, 4),
                "loss_dense": round(loss_dense, 4), "loss_plain": round(loss_p, 4),
                "loss_compensated": round(loss_c, 4),
                "acc_bn_recalibrated": round(acc_r, 4), "loss_bn_recalibrated": round(loss_r, 4),
                "layers_compensated": len(rep_c.compensated),
                "layers_uncompensated": len(rep_c.uncompensated),
            }
            rows.append(row)
            print(f"[{name}] {selection}{seed if selection == 'random' else ''} f={fraction}: "
                  f"plain {acc_p:.4f}  compensated {acc_c:.4f}  BN recalibrated {acc_r:.4f}",
                  flush=True)
    return rows


def summarise(rows: list[dict]) -> list[str]:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for selection in ("l1", "random"):
            sel = [r for r in rows if r["dataset"] == dataset and r["selection"] == selection]
            if not sel:
                continue
            gains = [r["acc_gain"] for r in sel]
            better = sum(g > 0 for g in gains)
            worse = sum(g < 0 for g in gains)
            lines.append(
                f"- {dataset}, {selection} selection: compensation better in {better}, worse in "
                f"{worse}, equal in {len(gains) - better - worse} of {len(gains)} settings; mean "
                f"accuracy change {statistics.mean(gains) * 100:+.2f} points (range "
                f"{min(gains) * 100:+.2f} to {max(gains) * 100:+.2f}); test loss lower with "
                f"compensation in {sum(r['loss_compensated'] < r['loss_plain'] for r in sel)} of "
                f"{len(sel)}; mean accuracy {statistics.mean(r['acc_plain'] for r in sel):.4f} plain, "
                f"{statistics.mean(r['acc_compensated'] for r in sel):.4f} compensated, "
                f"{statistics.mean(r['acc_bn_recalibrated'] for r in sel):.4f} plain + BN "
                f"recalibrated (dense {sel[0]['acc_dense']:.4f}).")
    return lines


def markdown(rows: list[dict], env: dict) -> str:
    lines = [
        "# Bias compensation: accuracy right after pruning, before fine-tuning",
        "",
        "Generated by `python benchmarks/bias_compensation/run.py` (method in its docstring).",
        "Uniform pruning (every conv loses `fraction` of its filters), test accuracy of the",
        "pruned network without fine-tuning: plain removal vs removal with bias compensation.",
        "Means for compensation from the validation split; accuracy on the test split.",
        "Random selection: mean over the seeds in `results.csv`. The last column, for context,",
        "is plain removal followed by re-estimating the BatchNorm statistics on the",
        "validation split (not part of bias compensation; no weight changes either).",
        "",
        "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()),
        "",
        "## Summary (computed from the rows below)",
        "",
        *summarise(rows),
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == dataset]
        first = sel[0]
        lines += [f"## {dataset}: {first['model']}, trained {first['train_epochs']} epochs, "
                  f"dense test accuracy {first['acc_dense']:.4f} on {first['test_samples']} images", "",
                  "| selection | fraction removed | MACs ratio | acc plain | acc compensated | gain (points) "
                  "| loss plain | loss compensated | acc plain + BN recalibrated |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for selection in ("l1", "random"):
            for fraction in FRACTIONS:
                group = [r for r in sel if r["selection"] == selection and r["fraction"] == fraction]
                if not group:
                    continue

                def avg(key, group=group):
                    return statistics.mean(r[key] for r in group)

                lines.append(
                    f"| {selection}{f' (x{len(group)})' if len(group) > 1 else ''} | {fraction} | "
                    f"{avg('macs_ratio'):.2f} | {avg('acc_plain'):.4f} | {avg('acc_compensated'):.4f} | "
                    f"{avg('acc_gain') * 100:+.2f} | {avg('loss_plain'):.3f} | {avg('loss_compensated'):.3f} | "
                    f"{avg('acc_bn_recalibrated'):.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "cifar10"],
                        choices=["digits", "cifar10"])
    parser.add_argument("--digits-epochs", type=int, default=15)
    parser.add_argument("--cifar-epochs", type=int, default=8)
    parser.add_argument("--cifar-width", type=float, default=0.25)
    parser.add_argument("--cifar-train-per-class", type=int, default=500)
    parser.add_argument("--cifar-test-per-class", type=int, default=200)
    parser.add_argument("--random-seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = []
    for name in args.datasets:
        if name == "cifar10" and not CIFAR.is_file():
            print(f"skipping cifar10: {CIFAR} not found", flush=True)
            continue
        rows += run_dataset(name, args)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    env = {"torch": torch.__version__, "threads": args.threads, "cores": os.cpu_count(),
           "cifar_train_per_class": args.cifar_train_per_class,
           "cifar_test_per_class": args.cifar_test_per_class,
           "wall_s": round(time.perf_counter() - started)}
    (args.out / "README.md").write_text(markdown(rows, env))
    print((args.out / "README.md").read_text())


if __name__ == "__main__":
    main()
