"""What one fine-tuning epoch costs the converged network, with and without a cut.

The question behind ``PhaseController.step_lr``: a pruning step is judged after one
fine-tuning epoch, so whatever that epoch alone does to a converged network is counted as
the cut's damage. From the 60-epoch VGG-16-BN x0.25 (``benchmarks/converged/``), this cuts
a share of the MACs by uniform L1 (none with ``--cut 0``), trains one epoch of SGD
(Nesterov, momentum 0.9, weight decay 5e-4) with the learning rate a cosine from ``--lr``
to 0, and validates on the 5 000-image split before and after. No distillation, no freeze:
the epoch alone.

    python benchmarks/window_lr/run.py --cut 0 --lr 0.01
    python benchmarks/window_lr/run.py --cut 0 --lr 0.002
    python benchmarks/window_lr/run.py --cut 0.3 --lr 0.01
    python benchmarks/window_lr/run.py --cut 0.3 --lr 0.002

Each run appends one line to ``results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "compare"))


def main() -> None:
    import lightning as L
    import run as harness  # the compare harness: the same data, network and uniform L1
    import torch

    from pl_pruning.measure import count_macs
    from pl_pruning.module import ImageClassifier

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cut", type=float, default=0.0, help="share of the MACs removed (uniform L1); 0: none")
    p.add_argument("--lr", type=float, default=0.01, help="the epoch's peak learning rate")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    L.seed_everything(a.seed, workers=True)
    ns = argparse.Namespace(experiment=harness.EXPERIMENT, seed=a.seed, checkpoint=harness.CHECKPOINT)
    cfg, dm, net = harness._setup(ns)
    example = torch.zeros(1, *dm.input_shape)
    base = count_macs(net, example)
    if a.cut > 0:
        net, _ = harness.l1_uniform(net, example, base * (1 - a.cut))
    model = ImageClassifier(net, num_classes=dm.num_classes, input_shape=dm.input_shape, optimizer="sgd", lr=a.lr,
                            momentum=0.9, weight_decay=cfg.optim.weight_decay, nesterov=True, scheduler="cosine")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    before = trainer.validate(model, datamodule=dm, verbose=False)[0]["val_acc"]
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    after = trainer.validate(model, datamodule=dm, verbose=False)[0]["val_acc"]
    row = {"cut": a.cut, "lr": a.lr, "seed": a.seed, "macs": count_macs(model.net, example), "base_macs": base,
           "val_acc_before_epoch": before, "val_acc_after_epoch": after, "epoch_s": round(time.perf_counter() - start, 1)}
    print(json.dumps(row))
    with open(HERE / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
