"""Where eager PyTorch spends the time of dense and uniformly pruned VGG-16 (CIFAR).

    python benchmarks/speedup/profile_ops.py [--target 10] [--batch 64] [--threads 1]

Prunes VGG-16 exactly as ``run.py`` does (uniform, smallest L1 norm, channel counts a
multiple of 8) and prints each network's share of eager CPU time per operator
(``torch.profiler``, 3 forward passes after a warm-up), NCHW memory format.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from run import fraction_for, spatial_sizes, uniform_plan  # noqa: E402

from pl_pruning.measure import count_macs  # noqa: E402
from pl_pruning.models import build_model  # noqa: E402
from pl_pruning.pruning.surgery import prune_filters, pruning_groups  # noqa: E402


def shares(net: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        net(x)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                net(x)
    times = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(times.values())
    return {k: v / total for k, v in sorted(times.items(), key=lambda kv: -kv[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", type=float, default=10.0, help="MACs reduction of the pruned network")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--round-to", type=int, default=8)
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    dense = build_model("vgg16").eval()
    x1 = torch.randn(1, 3, 32, 32)
    groups = pruning_groups(dense, x1)
    fraction = fraction_for(dense, groups, spatial_sizes(dense, x1), count_macs(dense, x1), args.target,
                            args.round_to)
    pruned = copy.deepcopy(dense)
    prune_filters(pruned, uniform_plan(dense, groups, fraction, args.round_to), x1, round_to=args.round_to)
    x = torch.randn(args.batch, 3, 32, 32)
    for name, net in (("dense", dense), (f"{args.target:g}x", pruned.eval())):
        print(f"{name}: {count_macs(net, x1) / 1e6:.1f} M MACs; share of eager CPU time per operator")
        for op, share in list(shares(net, x).items())[:6]:
            print(f"  {op:40s} {share:6.1%}")


if __name__ == "__main__":
    main()
