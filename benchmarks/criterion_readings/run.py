"""How far apart are the readings of the conditional-entropy criterion on the converged VGG?

On the converged VGG-16-BN x0.25 (``benchmarks/converged/vgg16_w025_e60_seed0.pt``) and the
5 000-image validation split of ``experiment=converged_vgg16_w025``, collect the statistics
once (32 bins, labels, as the app does), then for each criterion:

* which filters it would remove first: the lowest ``share`` of every layer (the order of
  Phase II inside a layer, and of Phase I under per-layer normalisation up to the MACs
  weighting); the overlap of those sets between criteria (Jaccard);
* what those filters are: dead ones (H(A) = 0) and the median share of their entropy that
  the class explains, U(A|Y) = 1 - H(A|Y)/H(A);
* the validation accuracy of the network cut that way, with bias compensation and the
  BatchNorm statistics re-estimated on 20 training batches, **without fine-tuning** (the
  immediate damage of the cut; RQ1 proper fine-tunes under the compare protocol).

    python benchmarks/criterion_readings/run.py            # writes results.json, README table

Deterministic given the checkpoint and the data split (``random`` is seeded).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE.parent / "converged" / "vgg16_w025_e60_seed0.pt"
CRITERIA = ["conditional_entropy", "normalized_conditional_entropy", "mutual_information", "entropy",
            "apoz", "l1", "random"]
SHARES = [0.3, 0.5]
BN_BATCHES = 20


def setup(seed: int, data_root: str | None):
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from pl_pruning.checkpoint import load_weights
    from pl_pruning.models import build_model

    with initialize_config_module("pl_pruning.conf", version_base="1.3"):
        overrides = ["experiment=converged_vgg16_w025", f"seed={seed}"]
        cfg = compose("config", overrides=overrides + ([f"data.root={data_root}"] if data_root else []))
    dm = instantiate(cfg.data)
    dm.setup("fit")
    net = build_model(cfg.model.name, num_classes=dm.num_classes, in_channels=dm.in_channels,
                      width=cfg.model.width)
    load_weights(net, CHECKPOINT, what=f"{cfg.model.name} x{cfg.model.width}")
    return dm, net.eval()


def collect(net, batches, num_classes: int):
    from pl_pruning.statistics.collector import StatisticsCollector

    collector = StatisticsCollector(net, num_bins=32, num_classes=num_classes,
                                    example_inputs=batches[0][0][:1])
    collector.start()
    with torch.no_grad():
        for x, y in batches:
            with collector.batch(y):
                net(x)
    return collector.finish()


def lowest(scores: dict[str, torch.Tensor], share: float) -> dict[str, list[int]]:
    """The lowest ``share`` of every layer's filters (ties broken by index)."""
    return {name: torch.argsort(s, stable=True)[:int(share * s.numel())].tolist() for name, s in scores.items()}


def as_set(plan: dict[str, list[int]]) -> set[tuple[str, int]]:
    return {(name, i) for name, idx in plan.items() for i in idx}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--data-root", help="the CIFAR-10 JPEG archive (default: the experiment's)")
    args = parser.parse_args()

    from pl_pruning.pruning.screen import accuracy, reestimate_batchnorm
    from pl_pruning.pruning.surgery import prune_filters
    from pl_pruning.scoring import (
        entropy_from_counts,
        get_criterion,
        uncertainty_coefficient_from_counts,
    )

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    dm, net = setup(args.seed, args.data_root)
    val = [(x, y) for x, y in dm.val_dataloader()]
    train_iter = iter(dm.train_dataloader())
    bn_batches = [next(train_iter) for _ in range(BN_BATCHES)]
    stats = collect(net, val, dm.num_classes)
    base_acc = accuracy(net, val)

    h = {n: entropy_from_counts(s.counts.sum(-1)) for n, s in stats.items()}
    u = {n: uncertainty_coefficient_from_counts(s.counts) for n, s in stats.items()}
    means = {n: s.mean_activation for n, s in stats.items()}
    filters = sum(s.num_filters for s in stats.values())
    record = {"checkpoint": str(CHECKPOINT.relative_to(HERE.parents[1])), "validation_images": sum(len(y) for _, y in val),
              "filters": filters, "dead_filters": int(sum((v == 0).sum() for v in h.values())),
              "validation_acc": base_acc, "shares": {}}
    scores = {}
    for name in CRITERIA:
        criterion = get_criterion(name)
        source = net if not criterion.needs_data else stats
        scores[name] = criterion(source, normalize="none")
    for share in SHARES:
        plans = {name: lowest(scores[name], share) for name in CRITERIA}
        rows = {}
        for name in CRITERIA:
            chosen = as_set(plans[name])
            u_chosen = torch.tensor([float(u[layer][i]) for layer, i in chosen])
            cut = copy.deepcopy(net)
            prune_filters(cut, plans[name], val[0][0][:1], channel_means=means)
            reestimate_batchnorm(cut, bn_batches)
            rows[name] = {
                "removed": len(chosen),
                "dead_among_removed": sum(int(h[layer][i] == 0) for layer, i in chosen),
                "median_u_of_removed": float(u_chosen.median()),
                "removed_with_u_above_half": int((u_chosen > 0.5).sum()),
                "acc_after_cut": accuracy(cut.eval(), val),
                "jaccard": {other: len(chosen & as_set(plans[other])) / len(chosen | as_set(plans[other]))
                            for other in CRITERIA},
            }
            print(f"share {share} {name}: {rows[name]['acc_after_cut']:.4f}", flush=True)
        record["shares"][str(share)] = rows
    record["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(record))


def markdown(record: dict) -> str:
    lines = [f"{record['filters']} filters, {record['dead_filters']} dead (H(A) = 0); validation accuracy "
             f"{record['validation_acc']:.4f} before the cut.", ""]
    for share, rows in record["shares"].items():
        lines += [f"Lowest {float(share):.0%} of every layer:", "",
                  "| criterion | dead among removed | median U of removed | removed with U > 0.5 | "
                  "val acc after cut (no fine-tune) | Jaccard with conditional_entropy |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in rows.items():
            lines.append(f"| `{name}` | {r['dead_among_removed']} / {r['removed']} | {r['median_u_of_removed']:.3f} | "
                         f"{r['removed_with_u_above_half']} | {r['acc_after_cut']:.4f} | "
                         f"{r['jaccard']['conditional_entropy']:.2f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
