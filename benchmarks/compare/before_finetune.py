"""How broken each method leaves the converged network before any fine-tuning, at 3x.

Cuts the converged VGG-16-BN x0.25 to a third of its MACs with Torch-Pruning's pipeline
(5 iterative steps) and with one-shot uniform L1, exactly as ``run.py`` does, and measures
validation accuracy on the 5 000 validation images twice: with the BatchNorm statistics
the cut left, and after re-estimating them on the first 4 training batches (what
``pruning.controller.finetune_epochs=0`` does before each judgment). The 2PFPCE figure (``at_once_3x``)
comes from its committed run: its last accepted step's validation. Each cut's channels per
layer are written beside it.

    python benchmarks/compare/before_finetune.py      # writes before_finetune.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    import run  # the harness: the same setup, pipelines and bisection

    from pl_pruning.measure import channel_counts
    from pl_pruning.pruning.screen import accuracy, reestimate_batchnorm

    os.chdir(run.ROOT)
    args = argparse.Namespace(experiment=run.EXPERIMENT, checkpoint=str(run.CHECKPOINT), seed=0)
    torch.manual_seed(0)
    _, dm, net = run._setup(args)
    dm.setup("fit")
    example = torch.zeros(1, *dm.input_shape)
    target = run._count(net, example) / 3
    val = list(dm.val_dataloader())
    train = []
    for batch in dm.train_dataloader():
        train.append(batch)
        if len(train) == 4:
            break
    rows = {"dense": {"macs": run._count(net, example), "val_acc": accuracy(net, val)}}
    for name, cut in (("torch_pruning_3x", lambda n: run.torch_pruning_pipeline(n, example, target, 5)[0]),
                      ("l1_uniform_3x", lambda n: run.l1_uniform(n, example, target)[0])):
        pruned = cut(net)
        row = {"macs": run._count(pruned, example), "val_acc": accuracy(pruned, val)}
        reestimate_batchnorm(pruned, train)
        row["val_acc_batchnorm_reestimated"] = accuracy(pruned, val)
        row["channels"] = channel_counts(pruned, convs_only=True)
        rows[name] = row
        print(name, row)
    ours = json.loads((HERE / "runs" / "at_once_3x_seed0.json").read_text())
    last = [e for e in ours["history"] if e["phase"] in ("global", "layerwise") and e["accepted"]][-1]
    rows["at_once_3x"] = {"macs": last["macs"], "val_acc_batchnorm_reestimated": last["metric"],
                          "from": "runs/at_once_3x_seed0.json (its last accepted step)"}
    report = HERE / "outputs" / "at_once_3x_seed0" / "pruning_report.json"  # the run's own folder, if here
    channels = ours.get("channels") or (json.loads(report.read_text())["channels"]["after"] if report.is_file() else None)
    if channels:
        rows["at_once_3x"]["channels"] = channels
    rows["dense"]["channels"] = channel_counts(net, convs_only=True)
    (HERE / "before_finetune.json").write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
