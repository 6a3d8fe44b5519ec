"""CPU latency of each method's pruned network, each timed side by side with the dense one.

The runs time their own networks at their end, on a machine shared with other runs and
at different times, so their figures do not compare (the same 32-step cut timed 2.0x and
3.2x faster in two runs). Here every setting's pruned shape (the conv channels its run
recorded; ``before_finetune.json`` for runs made before the runs recorded them) is rebuilt
from its experiment's dense network (``run.py``'s: VGG-16-BN x0.25, or ResNet-20 for the
``resnet20_...`` runs) by removing filters, and timed interleaved with that dense network
in one process (:func:`pl_pruning.measure.compare`: median over rounds, one thread), in
eager PyTorch and ONNX Runtime, at batch 1 and 64. Latency depends on the
shape only, not on the weights, so one network per setting (its lowest seed) stands for
all its seeds; ``shape_seeds`` lists the seeds whose shape was identical.

    python benchmarks/compare/latency.py           # writes latency.json and latency.md
    python benchmarks/compare/latency.py at_once_3x_freeze_off_l1_layerwise   # times these
                                                   # settings only; the other rows are kept

Each row records the machine's load average when it was timed: the ratio is measured side by
side, but a loaded machine stretches both sides unevenly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BATCHES = (1, 64)


def _convs(channels: dict[str, int]) -> dict[str, int]:
    """Conv channels keyed as in the bare network (pl_pruning reports name them ``net.*``)."""
    return {k.removeprefix("net."): v for k, v in channels.items()}


def shapes() -> dict[str, dict]:
    """``{setting: {"channels", "seed", "from", "shape_seeds", "experiment"}}``: each setting's
    lowest-seed shape from the committed runs, the seeds whose shape was the same, and the
    experiment whose dense network it was cut from."""
    from records import experiment_of

    by_name: dict[str, list[tuple[int, dict[str, int], str]]] = {}
    experiment: dict[str, str] = {}
    for path in sorted((HERE / "runs").glob("*.json")):
        run = json.loads(path.read_text())
        if run.get("channels"):
            by_name.setdefault(run["name"], []).append((run["seed"], _convs(run["channels"]), f"runs/{path.name}"))
            experiment[run["name"]] = experiment_of(run)
    cut = HERE / "before_finetune.json"  # the seed-0 cuts of runs made before channels were recorded
    for name, row in (json.loads(cut.read_text()) if cut.is_file() else {}).items():
        if name == "dense" or not row.get("channels"):
            continue
        seeds = by_name.setdefault(name, [])
        experiment.setdefault(name, experiment_of(row))
        if all(s != 0 for s, _, _ in seeds):
            seeds.append((0, _convs(row["channels"]), "before_finetune.json"))
    out = {}
    for name, seeds in by_name.items():
        seed, ch, src = min(seeds, key=lambda t: t[0])
        out[name] = {"channels": ch, "seed": seed, "from": src, "experiment": experiment[name],
                     "shape_seeds": sorted(s for s, c, _ in seeds if c == ch)}
    return out


def rebuild(dense: torch.nn.Module, channels: dict[str, int], example: torch.Tensor) -> torch.nn.Module:
    """A copy of ``dense`` cut to ``channels`` (each conv keeps its first filters)."""
    import copy

    from pl_pruning.measure import channel_counts
    from pl_pruning.pruning.surgery import prune_filters

    net = copy.deepcopy(dense)
    have = channel_counts(net, convs_only=True)
    plan = {name: list(range(keep, have[name])) for name, keep in channels.items() if keep < have[name]}
    prune_filters(net, plan, example, compensate=False)
    got = channel_counts(net, convs_only=True)
    if got != {**have, **channels}:
        raise RuntimeError(f"rebuilt shape {got} is not the recorded {channels}")
    return net


def main(argv: list[str] | None = None) -> None:
    import run  # the harness: the comparison's network, built as every run builds it

    from pl_pruning.measure import compare

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="*", help="time only these settings (default: every committed one)")
    only = p.parse_args(argv).settings
    known = shapes()
    if unknown := sorted(set(only) - set(known)):
        p.error(f"no committed run records the shape of {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    os.chdir(run.ROOT)
    dense_of: dict[str, tuple] = {}

    def dense_network(experiment: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
        """The experiment's converged network, as every run builds it, and its input shape."""
        if experiment not in run.CHECKPOINTS:  # a run given its own --checkpoint
            p.error(f"no converged network is known for experiment {experiment!r} (known: "
                    f"{', '.join(sorted(run.CHECKPOINTS))}): its shapes cannot be rebuilt")
        if experiment not in dense_of:
            torch.manual_seed(0)
            args = argparse.Namespace(experiment=experiment, checkpoint=str(run.CHECKPOINTS[experiment]), seed=0)
            _, dm, net = run._setup(args)
            dense_of[experiment] = (net.eval(), tuple(dm.input_shape))
        return dense_of[experiment]

    start, load_start = time.time(), os.getloadavg()
    path = HERE / "latency.json"
    kept = []
    if only and path.is_file():
        before = json.loads(path.read_text())
        for r in before["rows"]:
            if r["setting"] not in only:  # rows from before rows had a load of their own: the run's at its start
                kept.append({"load_avg": round(before["environment"]["load_avg_start"][0], 1), **r})
    rows = []
    for setting, shape in sorted((k, v) for k, v in known.items() if not only or k in only):
        dense, input_shape = dense_network(shape["experiment"])
        pruned = rebuild(dense, shape["channels"], torch.zeros(1, *input_shape))
        for batch in BATCHES:
            c = compare(dense, pruned, torch.randn(batch, *input_shape), num_threads=1, onnx=True,
                        min_run_time=3.0, rounds=5)
            rows.append({"setting": setting, "experiment": shape["experiment"], "batch": batch, "macs": c.after.macs,
                         "macs_reduction": round(c.ratios["macs"], 3),
                         "dense_ms": round(c.before.latency_ms, 3), "pruned_ms": round(c.after.latency_ms, 3),
                         "speedup": round(c.ratios["latency"], 3),
                         "dense_onnx_ms": round(c.before.onnx_latency_ms, 3),
                         "pruned_onnx_ms": round(c.after.onnx_latency_ms, 3),
                         "onnx_speedup": round(c.ratios["onnx_latency"], 3),
                         "shape_from": shape["from"], "shape_seeds": shape["shape_seeds"],
                         "load_avg": round(os.getloadavg()[0], 1), "date": time.strftime("%Y-%m-%d")})
            print(rows[-1], flush=True)
    rows = sorted(kept + rows, key=lambda r: (r["setting"], r["batch"]))
    env = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 thread, torch {torch.__version__}",
           "load_avg_start": load_start, "load_avg_end": os.getloadavg(), "wall_s": round(time.time() - start, 1),
           "rounds": 5, "min_run_time_s": 3.0}
    path.write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    md = ["# CPU latency of each setting's pruned network, side by side with the dense one",
          "", "Generated by `python benchmarks/compare/latency.py` (see its docstring for the method). "
          "Speed-up = dense latency / pruned latency, the two timed interleaved in the same process; "
          f"environment: {env['machine']}; the load column is the machine's 1-minute load average "
          "when the row was timed (other jobs shared the 2 cores).", "",
          "| setting | batch | MACs reduction | PyTorch ms (dense / pruned) | PyTorch speed-up | "
          "ONNX Runtime ms (dense / pruned) | ONNX Runtime speed-up | shape of seeds | load |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        md.append(f"| {r['setting']} | {r['batch']} | {r['macs_reduction']:.2f}x | {r['dense_ms']:.2f} / "
                  f"{r['pruned_ms']:.2f} | {r['speedup']:.2f}x | {r['dense_onnx_ms']:.2f} / {r['pruned_onnx_ms']:.2f} | "
                  f"{r['onnx_speedup']:.2f}x | {', '.join(map(str, r['shape_seeds']))} | {r['load_avg']} |")
    (HERE / "latency.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
