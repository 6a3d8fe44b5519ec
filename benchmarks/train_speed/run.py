"""How fast one training step runs on this CPU: fp32 against ``channels_last`` and bf16 autocast.

    python benchmarks/train_speed/run.py            # writes results.csv and README's table input

Every mode is timed side by side in one process, interleaved round-robin (the machine is
shared and noisy: the ratios, not the seconds, are the result), on the converged networks'
architectures (VGG-16-BN x0.25, ResNet-20) at the experiment presets' batch size (128, 32x32):
forward, cross-entropy, backward and an SGD step. A second table times the data loader (JPEG
decode and augmentation, the presets' one worker), which bounds an epoch from below whatever
the step costs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pl_pruning.models import build_model

HERE = Path(__file__).resolve().parent
MODES = ("fp32", "channels_last", "bf16", "bf16+channels_last")


def make_step(name: str, width: float, mode: str, batch: int):
    torch.manual_seed(0)
    net = build_model(name, width=width)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if "channels_last" in mode:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in mode else contextlib.nullcontext
    net.train()

    def step():
        with autocast():
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_steps(networks, batch: int, rounds: int, reps: int) -> list[dict]:
    rows = []
    for name, width in networks:
        steps = {m: make_step(name, width, m, batch) for m in MODES}
        for s in steps.values():  # warm-up (oneDNN primitive caches)
            for _ in range(3):
                s()
        samples = {m: [] for m in MODES}
        for _ in range(rounds):  # round-robin: the load on the machine hits every mode alike
            for m, s in steps.items():
                t = time.perf_counter()
                for _ in range(reps):
                    s()
                samples[m].append((time.perf_counter() - t) / reps)
        base = statistics.median(samples["fp32"])
        for m in MODES:
            med = statistics.median(samples[m])
            rows.append({"network": f"{name} x{width:g}", "mode": m, "batch": batch,
                         "threads": torch.get_num_threads(), "step_ms": round(1000 * med, 1),
                         "speedup_vs_fp32": round(base / med, 3)})
            print(rows[-1], flush=True)
    return rows


def time_loader(root: str, batches: int) -> dict:
    from pl_pruning.data.image_folder import ImageFolderDataModule

    dm = ImageFolderDataModule(root=root, batch_size=128, num_workers=1, val_fraction=0.1, split_seed=0)
    dm.prepare_data()
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    per = (time.perf_counter() - t) / batches
    row = {"what": "train loader, 1 worker, batch 128", "batch_ms": round(1000 * per, 1),
           "epoch_s_from_loading": round(per * 45000 / 128, 1)}
    print(row, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    args = p.parse_args()
    rows = time_steps([("vgg16", 0.25), ("resnet20", 1.0)], 128, args.rounds, args.reps)
    with open(HERE / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if Path(args.data).exists():
        loader = time_loader(args.data, 30)
        with open(HERE / "loader.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(loader))
            w.writeheader()
            w.writerow(loader)


if __name__ == "__main__":
    main()
