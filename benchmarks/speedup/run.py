"""Does removing filters make VGG-16 faster in proportion to the MACs it removes?

    python benchmarks/speedup/run.py                # writes results.csv, README.md, speedup.png
    python benchmarks/speedup/run.py --rounds 3     # quicker, noisier

CIFAR VGG-16-BN (width 1, 10 classes, 313.5 M MACs) is pruned *uniformly*: every
convolution loses the same fraction of its filters (the ones of smallest L1 norm), the
fraction found by bisection so that the MACs drop 2x, 4x and 10x, channel counts kept
multiples of ``--round-to`` (8, as one does for fast kernels). Each network is timed
in eager PyTorch and in ONNX Runtime (CPU), batch 1 and 64, all measured side by side in
one run (eager PyTorch in both NCHW and channels-last memory formats): ``--rounds``
interleaved rounds, each timing every (network, runtime, batch)
once with ``torch.utils.benchmark``'s ``blocked_autorange``; the median over rounds is
reported. Both runtimes get the same fixed thread count (``--threads``, default 1).
Also timed: one surgery (dependency-graph trace + removal) per target.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils import benchmark

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from pl_pruning.export import export_onnx, ort_session  # noqa: E402
from pl_pruning.measure import count_macs, count_params  # noqa: E402
from pl_pruning.models import build_model  # noqa: E402
from pl_pruning.pruning.surgery import prune_filters, pruning_groups  # noqa: E402

TARGETS = (2.0, 4.0, 10.0)
BATCHES = (1, 64)
RUNTIMES = ("pytorch", "pytorch-channels-last", "onnxruntime")


def spatial_sizes(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    sizes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: sizes.__setitem__(name, o.shape[-1] * o.shape[-2])))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sizes


def kept(channels: int, fraction: float, round_to: int) -> int:
    """Filters a layer keeps: ``(1 - fraction)`` of them, a multiple of ``round_to``."""
    return max(round_to, round_to * round(channels * (1 - fraction) / round_to))


def uniform_plan(model: nn.Module, groups, fraction: float, round_to: int) -> dict[str, list[int]]:
    """Each group keeps ``kept(...)`` filters, the smallest L1 norms removed first."""
    modules = dict(model.named_modules())
    plan = {}
    for g in groups:
        k = g.channels - kept(g.channels, fraction, round_to)
        if k > 0:
            l1 = modules[g.root].weight.detach().abs().flatten(1).sum(1)
            plan[g.root] = torch.argsort(l1)[:k].tolist()
    return plan


def predicted_macs(model: nn.Module, groups, fraction: float, sizes: dict[str, int],
                   round_to: int) -> int:
    """MACs of the uniformly pruned VGG without doing the surgery (a chain of convs)."""
    left = {g.root: kept(g.channels, fraction, round_to) for g in groups}
    total, in_c = 0, None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            c_in = m.in_channels if in_c is None else in_c
            total += left[name] * c_in * m.kernel_size[0] * m.kernel_size[1] * sizes[name]
            in_c = left[name]
        elif isinstance(m, nn.Linear):
            total += in_c * m.out_features
    return total


def fraction_for(model, groups, sizes, dense_macs: int, target: float, round_to: int) -> float:
    """The smallest fraction whose MACs ratio reaches ``target`` (bisection)."""
    lo, hi = 0.0, 0.99
    for _ in range(40):
        mid = (lo + hi) / 2
        if dense_macs / predicted_macs(model, groups, mid, sizes, round_to) < target:
            lo = mid
        else:
            hi = mid
    return hi


def time_call(fn, threads: int, min_run_time: float) -> float:
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.6,
                        help="seconds per measurement (per network, runtime, batch, round)")
    parser.add_argument("--round-to", type=int, default=8,
                        help="channel counts kept a multiple of this (1: exact fractions)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    started = time.perf_counter()

    dense = build_model("vgg16").eval()
    x1 = torch.randn(1, 3, 32, 32)
    groups = pruning_groups(dense, x1)
    sizes = spatial_sizes(dense, x1)
    dense_macs = count_macs(dense, x1)
    models = {"dense": (dense, 0.0, None)}
    for target in TARGETS:
        fraction = fraction_for(dense, groups, sizes, dense_macs, target, args.round_to)
        plan = uniform_plan(dense, groups, fraction, args.round_to)
        seconds = []
        for _ in range(3):  # surgery time: median of 3 surgeries on fresh copies
            net = copy.deepcopy(dense)
            seconds.append(prune_filters(net, plan, x1, round_to=args.round_to).seconds)
        models[f"{target:g}x"] = (net, fraction, statistics.median(seconds))
        print(f"target {target:g}x: fraction {fraction:.3f}, surgery {statistics.median(seconds):.3f} s",
              flush=True)

    runners: dict[tuple[str, str, int], object] = {}
    onnx_diff = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (net, _, _) in models.items():
            report = export_onnx(net, Path(tmp) / f"{name}.onnx", torch.randn(2, 3, 32, 32))
            onnx_diff[name] = report.max_abs_diff
            session = ort_session(report.path, num_threads=args.threads)
            for batch in BATCHES:
                xb = torch.randn(batch, 3, 32, 32)
                feed = {session.get_inputs()[0].name: xb.numpy()}

                def eager(net=net, xb=xb):
                    with torch.no_grad():
                        return net(xb)

                runners[(name, "pytorch", batch)] = eager
                # the same network and input in channels-last memory format (NHWC)
                net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
                xb_cl = xb.contiguous(memory_format=torch.channels_last)

                def eager_cl(net=net_cl, xb=xb_cl):
                    with torch.no_grad():
                        return net(xb)

                runners[(name, "pytorch-channels-last", batch)] = eager_cl
                runners[(name, "onnxruntime", batch)] = (lambda s=session, f=feed: s.run(None, f))
        for fn in runners.values():
            fn()  # warm-up
        samples: dict[tuple, list[float]] = {key: [] for key in runners}
        for r in range(args.rounds):
            for key, fn in runners.items():  # interleaved: every configuration, every round
                samples[key].append(time_call(fn, args.threads, args.min_run_time))
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    rows = []
    for (name, runtime, batch), times in samples.items():
        net, fraction, surgery_s = models[name]
        macs = count_macs(net, x1)
        latency = statistics.median(times) * 1e3
        dense_latency = statistics.median(samples[("dense", runtime, batch)]) * 1e3
        macs_ratio = dense_macs / macs
        speedup = dense_latency / latency
        rows.append({
            "model": name, "fraction_removed": round(fraction, 4), "macs_M": round(macs / 1e6, 2),
            "params_M": round(count_params(net) / 1e6, 3), "macs_ratio": round(macs_ratio, 3),
            "runtime": runtime, "batch": batch, "threads": args.threads,
            "latency_ms": round(latency, 3),
            "latency_ms_min": round(min(times) * 1e3, 3), "latency_ms_max": round(max(times) * 1e3, 3),
            "speedup": round(speedup, 3), "speedup_over_macs_ratio": round(speedup / macs_ratio, 3),
            "surgery_s": None if surgery_s is None else round(surgery_s, 3),
            "onnx_max_abs_diff": f"{onnx_diff[name]:.2e}",
        })
    rows.sort(key=lambda r: (r["runtime"], r["batch"], r["macs_ratio"]))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    env = {
        "cpu": platform.processor() or _cpu_name(), "cores": os.cpu_count(),
        "threads": args.threads, "round_to": args.round_to, "torch": torch.__version__, "onnxruntime": _ort_version(),
        "rounds": args.rounds, "min_run_time_s": args.min_run_time,
        "load_avg_start": tuple(round(v, 2) for v in load_start),
        "load_avg_end": tuple(round(v, 2) for v in os.getloadavg()),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "README.md").write_text(_markdown(rows, env))
    _plot(rows, out / "speedup.png", args.threads)
    print((out / "README.md").read_text())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _markdown(rows: list[dict], env: dict) -> str:
    lines = [
        "# Speed-up of uniformly pruned VGG-16 (CIFAR) on the CPU",
        "",
        "Generated by `python benchmarks/speedup/run.py` (see its docstring for the method).",
        "Every convolution loses the same fraction of its filters (smallest L1 norm; channel",
        "counts kept a multiple of `round_to`), chosen so that MACs drop at least 2x, 4x and",
        "10x. Latency per batch, median over interleaved rounds (min-max over rounds in",
        "brackets); every runtime on the same fixed number of threads; `pytorch` is eager",
        "PyTorch on NCHW tensors, `pytorch-channels-last` the same network and input in",
        "channels-last (NHWC) memory format, `onnxruntime` the exported network (NCHW input);",
        "speed-up = dense latency / pruned latency in the same runtime and batch size.",
        "",
        "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()),
        "",
        "| runtime | batch | model | MACs (M) | MACs ratio | latency ms (min-max) | speed-up "
        "| speed-up / MACs ratio | goal >= 0.8 at batch 64 |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        goal = ""
        if r["batch"] == 64 and r["model"] != "dense":
            goal = "met" if r["speedup_over_macs_ratio"] >= 0.8 else "missed"
        lines.append(
            f"| {r['runtime']} | {r['batch']} | {r['model']} | {r['macs_M']} | {r['macs_ratio']} | "
            f"{r['latency_ms']} ({r['latency_ms_min']}-{r['latency_ms_max']}) | {r['speedup']} | "
            f"{r['speedup_over_macs_ratio']} | {goal} |")
    lines += ["", "MACs count convolutions and the classifier only. Pooling, BatchNorm and ReLU work "
              "grows with the number of channels, convolution MACs with the product of input and "
              "output channels, so the more a network is pruned, the larger the share of its time "
              "that MACs do not count; how much depends on the runtime's kernels for those "
              "operations (compare the NCHW and channels-last rows; per-operator shares of the "
              "time: `python benchmarks/speedup/profile_ops.py`).",
              "", "Surgery time (dependency-graph trace of one sample + removal + report, median "
              "of 3, goal < 1 s):", ""]
    seen = set()
    for r in rows:
        if r["surgery_s"] is not None and r["model"] not in seen:
            seen.add(r["model"])
            lines.append(f"- {r['model']} ({r['fraction_removed']:.1%} of the filters of every "
                         f"layer): {r['surgery_s']} s")
    lines += ["", "ONNX Runtime vs PyTorch max abs difference of the exported networks: "
              + ", ".join(sorted({f"{r['model']} {r['onnx_max_abs_diff']}" for r in rows})), ""]
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    top = max(r["macs_ratio"] for r in rows) * 1.1
    ax.plot([1, top], [1, top], "k--", lw=1, label="speed-up = MACs ratio")
    ax.plot([1, top], [0.8, 0.8 * top], "k:", lw=1, label="0.8 x MACs ratio (goal)")
    markers = {"pytorch": "o", "pytorch-channels-last": "^", "onnxruntime": "s"}
    colours = {1: "tab:blue", 64: "tab:orange"}
    for runtime in RUNTIMES:
        for batch in BATCHES:
            pts = sorted((r["macs_ratio"], r["speedup"]) for r in rows
                         if r["runtime"] == runtime and r["batch"] == batch)
            ax.plot(*zip(*pts, strict=True), marker=markers[runtime], color=colours[batch],
                    ls={"pytorch": "-", "pytorch-channels-last": ":"}.get(runtime, "-."),
                    label=f"{runtime}, batch {batch}")
    ax.set_xlabel("MACs ratio (dense / pruned)")
    ax.set_ylabel("latency speed-up (dense / pruned)")
    ax.set_title(f"VGG-16 CIFAR, uniform pruning, CPU, {threads} thread(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
