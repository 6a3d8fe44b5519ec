"""Pruning to a latency target against pruning to a MACs target, on the converged networks.

The latency target of each network and runtime is the latency our 3x-MACs preset's network
reaches today (``pruning=at_once`` at ``target_macs`` 0.3333, seed 0: its shape recorded by
``benchmarks/compare/`` where that harness ran the preset, else by this harness's MACs arm),
timed side by side with the dense network on that runtime and
written as a share of the dense latency, so a run on another machine aims at the same
speed-up. The latency-targeted run is the same preset with ``target_latency`` instead of
``target_macs`` (steps sized in milliseconds, the run stopping on the measured latency), a
global phase before the layer-wise one, its ranking normalised per millisecond a filter costs
(``normalize=latency-aware``), and ``round_to=auto``;
both spend the same budget (40 epochs) from the same converged checkpoint.

    # the latency table of a converged network on a runtime (tables/*.json, *.md)
    python benchmarks/latency_target/run.py table --experiment converged_vgg16_w025 --runtime onnxruntime
    # how far the table's predictions are from measurements, on the committed pruned shapes
    python benchmarks/latency_target/run.py predict --experiment converged_vgg16_w025 --runtime eager
    # the target: the 3x preset's network against the dense one (targets/*.json)
    python benchmarks/latency_target/run.py target --experiment converged_vgg16_w025 --runtime eager
    # the runs (runs/<experiment>_<arm>_<runtime>_e<budget>_seed<seed>.json); a run killed part-way
    # resumes from outputs/ (or from partial/ after `park`) when the same command is given again
    python benchmarks/latency_target/run.py run --experiment converged_vgg16_w025 --runtime eager --arm latency
    python benchmarks/latency_target/run.py run --experiment converged_vgg16_w025 --arm macs
    # every recorded run's final network timed side by side with the dense one (timing.json, timing.md);
    # with --runtime, on that runtime only (the other's rows carried, with their date)
    python benchmarks/latency_target/run.py timing
    # the same two networks timed in fresh processes, glibc's allocator left alone or made steady
    # (allocator.json, allocator.md)
    python benchmarks/latency_target/run.py allocator
    # a short demonstration through the CLI on digits (demo/)
    python benchmarks/latency_target/run.py digits --runtime eager
    python benchmarks/latency_target/run.py park

Timings are the fastest of interleaved runs (``pl_pruning.pruning.latency.Runtime``), one
thread, batch 64; every file records the machine's load average when it was written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMPARE = ROOT / "benchmarks" / "compare"
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(COMPARE))
import parking  # noqa: E402  (benchmarks/parking.py)

RUNS, PARTIAL, OUTPUTS = HERE / "runs", HERE / "partial", HERE / "outputs"
RESUME = "pruning_checkpoints/last.ckpt"
EXPERIMENTS = ("converged_vgg16_w025", "converged_resnet20")
# The 3x-MACs network each target was set from, seed 0: the `pruning=at_once` preset's network
# when the targets were measured (L1, layer-wise steps, no distillation, 40 epochs): for the VGG
# the compare harness's run, for the ResNet-20 this harness's MACs arm (the compare harness has
# no 40-epoch ResNet-20 run of the preset).
PRESET_3X = {
    "converged_vgg16_w025": "at_once_3x_freeze_off_l1_layerwise_distill_off_e40",
    "converged_resnet20": "converged_resnet20_macs_e40_bf16cl_seed0",
}
# The preset's 3x network since it took both phases again (the compare harness's bf16 run):
# `timing` times it beside the others.
PRESET_NOW_3X = {"converged_vgg16_w025": "rederived_3x_e40_bf16cl"}
# The MACs arm's target: the reduction the compare harness measures the preset at.
TARGET_MACS = 0.3333
BATCH, THREADS = 64, 1
RUNTIME = {"batch_size": BATCH, "num_threads": THREADS, "min_run_time": 2.0, "rounds": 5}
REPEATS = 5  # side-by-side measurements of a target or of `timing`, the median taken


def _env() -> dict:
    import torch

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_avg": [round(x, 1) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _dense(experiment: str):
    """The experiment's converged network as the compare harness builds it, and its input shape."""
    import run as compare_run
    import torch

    torch.manual_seed(0)
    args = argparse.Namespace(
        experiment=experiment, checkpoint=str(compare_run.CHECKPOINTS[experiment]), seed=0
    )
    _, dm, net = compare_run._setup(args)
    return net.eval(), tuple(dm.input_shape)


def _shapes(experiment: str) -> dict[str, dict[str, int]]:
    """The committed pruned shapes of the experiment (compare runs' seed-0 shapes, and ours)."""
    import latency as compare_latency

    out = {
        k: v["channels"]
        for k, v in compare_latency.shapes().items()
        if v["experiment"] == experiment
    }
    for path in sorted(RUNS.glob(f"{experiment}_*.json")):
        record = json.loads(path.read_text())
        out[path.stem] = {k.removeprefix("net."): v for k, v in record["channels"].items()}
    return out


def _rebuild(dense, channels, input_shape):
    import latency as compare_latency
    import torch

    return compare_latency.rebuild(dense, channels, torch.zeros(1, *input_shape))


def _write(path: Path, data: dict, markdown: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    print(f"wrote {path}")
    if markdown is not None:
        path.with_suffix(".md").write_text("\n".join(markdown) + "\n")
        print("\n".join(markdown))


def _table_path(experiment: str, runtime: str) -> Path:
    return HERE / "tables" / f"{experiment}_{runtime}_b{BATCH}_t{THREADS}.json"


# ----------------------------------------------------------------------------- the latency model


def table(args: argparse.Namespace) -> None:
    from pl_pruning.pruning.latency import LatencyTable, Runtime

    dense, shape = _dense(args.experiment)
    t = LatencyTable.fit(dense, Runtime(args.runtime, **RUNTIME), input_shape=shape)
    path = t.save(_table_path(args.experiment, args.runtime))
    env = _env()
    path.with_suffix(".md").write_text(
        t.to_markdown() + f"\nLoad average when written: {env['load_avg']} ({env['date']}).\n"
    )
    print(t.to_markdown())


def predict(args: argparse.Namespace) -> None:
    """The table's prediction of each committed shape's speed-up against the one measured
    side by side with the dense network (ratios: a loaded machine slows both alike)."""
    import torch

    from pl_pruning.pruning.latency import LatencyTable, Runtime
    from pl_pruning.structure.graph import NetworkGraph

    t = LatencyTable.load(_table_path(args.experiment, args.runtime))
    dense, shape = _dense(args.experiment)
    names = sorted(_shapes(args.experiment))
    nets = [_rebuild(dense, _shapes(args.experiment)[n], shape) for n in names]
    ms = Runtime(args.runtime, **RUNTIME).measure([dense, *nets], shape)
    x = torch.zeros(1, *shape)
    base = t.predict(NetworkGraph.of(dense, x))
    rows = []
    for name, net, measured in zip(names, nets, ms[1:], strict=True):
        graph = NetworkGraph.of(net, x)
        speedup, predicted = ms[0] / measured, base / t.predict(graph)
        rows.append(
            {
                "shape": name,
                "macs_reduction": round(NetworkGraph.of(dense, x).macs / graph.macs, 3),
                "measured_speedup": round(speedup, 3),
                "predicted_speedup": round(predicted, 3),
                "error": round(speedup / predicted - 1, 4),
            }
        )
    env = _env()
    md = [
        f"# Latency table's predictions against measurements ({args.experiment}, {args.runtime}, batch {BATCH}, "
        f"{THREADS} thread)",
        "",
        f"Measured side by side with the dense network in one process ({env['machine']}, load average "
        f"{env['load_avg']}, {env['date']}); error = predicted latency / measured latency - 1.",
        "",
        "| shape | MACs reduction | measured speed-up | predicted | error |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    md += [
        f"| {r['shape']} | {r['macs_reduction']:.2f}x | {r['measured_speedup']:.2f}x | "
        f"{r['predicted_speedup']:.2f}x | {r['error']:+.1%} |"
        for r in rows
    ]
    errors = [abs(r["error"]) for r in rows]
    md += [
        "",
        f"Mean absolute error {sum(errors) / len(errors):.1%}, largest {max(errors):.1%} ({len(rows)} shapes).",
    ]
    _write(
        HERE / "predictions" / f"{args.experiment}_{args.runtime}.json",
        {"environment": env, "dense_ms": ms[0], "rows": rows},
        md,
    )


def target(args: argparse.Namespace) -> dict:
    """The latency the 3x preset's network reaches, as a share of the dense network's: the
    median of REPEATS side-by-side measurements (one varied from 36.8% to 46.0% on
    the ResNet-20 in eager PyTorch, nothing else running), each kept in the record."""
    import statistics

    from pl_pruning.pruning.latency import Runtime

    dense, shape = _dense(args.experiment)
    preset = PRESET_3X[args.experiment]
    net = _rebuild(dense, _shapes(args.experiment)[preset], shape)
    runtime = Runtime(args.runtime, **RUNTIME)
    each = [runtime.measure([dense, net], shape) for _ in range(REPEATS)]
    percents = [100 * p / d for d, p in each]
    record = {
        "experiment": args.experiment,
        "runtime": args.runtime,
        "batch_size": BATCH,
        "num_threads": THREADS,
        "preset": preset,
        "dense_ms": statistics.median(d for d, _ in each),
        "preset_ms": statistics.median(p for _, p in each),
        "percent": round(statistics.median(percents), 2),
        "each": [{"dense_ms": round(d, 3), "preset_ms": round(p, 3), "percent": round(q, 2)}
                 for (d, p), q in zip(each, percents, strict=True)],
        "environment": _env(),
    }
    _write(HERE / "targets" / f"{args.experiment}_{args.runtime}.json", record)
    return record


# ----------------------------------------------------------------------------- the runs


PRESET = ["pruning=at_once", "callbacks.rich_progress_bar=null"]


def run_name(args: argparse.Namespace) -> str:
    import run as compare_run

    runtime = f"_{args.runtime}" if args.arm == "latency" else ""
    fast = compare_run.FAST_SUFFIX if args.fast else ""
    return f"{args.experiment}_{args.arm}{runtime}_e{args.budget}{fast}"


def run(args: argparse.Namespace) -> None:
    import run as compare_run

    name = run_name(args)
    record_path = RUNS / f"{name}_seed{args.seed}.json"
    if record_path.is_file():
        sys.exit(
            f"{name} seed {args.seed} is recorded already ({record_path}); delete it to run again"
        )
    folder = OUTPUTS / f"{name}_seed{args.seed}"
    parking.unpark(folder, PARTIAL, (RESUME,))
    resumed = (folder / RESUME).is_file()
    overrides = [
        *PRESET,
        f"experiment={args.experiment}",
        f"model.checkpoint={compare_run.CHECKPOINTS[args.experiment]}",
        f"pruning.fit.max_epochs={args.budget}",
        f"seed={args.seed}",
        f"hydra.run.dir={folder}",
        f"measure.batch_size={BATCH}",
        f"measure.num_threads={THREADS}",
        *(compare_run.FAST_OVERRIDES if args.fast else ()),
    ]
    goal = None
    if args.arm == "latency":
        target_file = HERE / "targets" / f"{args.experiment}_{args.runtime}.json"
        goal = json.loads(target_file.read_text()) if target_file.is_file() else target(args)
        overrides += [
            "pruning.controller.target_macs=null",
            f"pruning.controller.target_latency={goal['percent']}%",
            f"pruning.controller.latency={{runtime:{args.runtime}}}",
            # the latency path's own parts: a global phase ranked per millisecond a filter costs,
            # channel counts of the multiple that runs faster on the runtime (measured)
            "pruning.controller.phases=[global,layerwise]",
            "pruning.controller.normalize=latency-aware",
            "pruning.controller.round_to=auto",
        ]
    else:
        # the preset at 3x as the targets were set from it (layer-wise steps; PRESET_3X)
        overrides += [f"pruning.controller.target_macs={TARGET_MACS}", "pruning.controller.phases=[layerwise]"]
    overrides += args.overrides
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pl_pruning", *overrides], check=True, cwd=ROOT)
    results = json.loads((folder / "results.json").read_text())
    report = json.loads((folder / "pruning_report.json").read_text())
    steps = [e for e in report["history"] if e["phase"] in ("global", "layerwise")]
    record = {
        "name": name,
        "seed": args.seed,
        "arm": args.arm,
        "experiment": args.experiment,
        "runtime": args.runtime if args.arm == "latency" else None,
        "target": goal,
        "overrides": overrides,
        "baseline": results["baseline"],
        "pruned": results["pruned"],
        "macs_reduction": results["macs_reduction"],
        "acc_drop": results["acc_drop"],
        "latency": report.get("latency"),
        "channels": report.get("channels", {}).get("after"),
        "surgeries": len(steps),
        "accepted": sum(bool(e["accepted"]) for e in steps),
        "budget": args.budget,
        "wall_s": round(time.perf_counter() - start, 1),
        "resumed": resumed,
        "val_curve": compare_run.val_curve(folder),
        "history": report["history"],
        "environment": _env(),
        "command": "python benchmarks/latency_target/run.py " + " ".join(sys.argv[1:]),
    }
    _write(record_path, record)
    parking.release(PARTIAL, record_path.stem)


def timing(args: argparse.Namespace) -> None:
    """Every recorded run's network and the 3x preset's, timed side by side with the dense one:
    the median of REPEATS such measurements (speed-ups from each, their median reported), on
    both runtimes, or on ``--runtime`` only, the other runtime's rows carried from the last
    timing.json with the date they were measured."""
    import statistics

    import torch

    from pl_pruning.measure import count_macs
    from pl_pruning.pruning.latency import Runtime

    runtimes = (args.runtime,) if args.runtime else ("eager", "onnxruntime")
    env = _env()
    rows = []
    for experiment in EXPERIMENTS:
        records = [json.loads(p.read_text()) for p in sorted(RUNS.glob(f"{experiment}_*.json"))]
        if not records:
            continue
        dense, shape = _dense(experiment)
        known = _shapes(experiment)
        shapes = {n: known[n] for n in (PRESET_3X[experiment], PRESET_NOW_3X.get(experiment)) if n in known}
        shapes.update(
            {
                f"{r['name']}_seed{r['seed']}": {
                    k.removeprefix("net."): v for k, v in r["channels"].items()
                }
                for r in records
            }
        )
        nets = {n: _rebuild(dense, c, shape) for n, c in shapes.items()}
        x = torch.zeros(1, *shape)
        dense_macs = count_macs(dense, x)
        reductions = {n: dense_macs / count_macs(net, x) for n, net in nets.items()}  # one count a network
        for runtime in runtimes:
            each = [Runtime(runtime, **RUNTIME).measure([dense, *nets.values()], shape) for _ in range(REPEATS)]
            ms = [statistics.median(column) for column in zip(*each, strict=True)]
            ratios = [[m[0] / m[i] for m in each] for i in range(1, len(ms))]  # each network's speed-ups
            for n, t, speedups in zip(nets, ms[1:], ratios, strict=True):
                speedup = statistics.median(speedups)
                record = next((r for r in records if f"{r['name']}_seed{r['seed']}" == n), None)
                # the preset's, recorded there: its bf16 run where it has one (the arms' precision;
                # the same cut as the fp32 run)
                compare_record = next((p for p in (COMPARE / "runs" / f"{n}_bf16cl_seed0.json",
                                                   COMPARE / "runs" / f"{n}_seed0.json") if p.is_file()), None)
                if record is None and compare_record is not None:
                    record = json.loads(compare_record.read_text())
                macs = reductions[n]
                rows.append(
                    {
                        "experiment": experiment,
                        "network": n,
                        "runtime": runtime,
                        "dense_ms": round(ms[0], 3),
                        "ms": round(t, 3),
                        "speedup": round(speedup, 3),
                        "speedup_range": [round(min(speedups), 3), round(max(speedups), 3)],
                        "macs_reduction": round(macs, 3),
                        "speedup_over_macs": round(speedup / macs, 3),
                        "test_acc": record["pruned"]["test_acc"] if record else None,
                        "target_speedup": (
                            round(100 / record["target"]["percent"], 3)
                            if record
                            and record.get("target")
                            and record["target"]["runtime"] == runtime
                            else None
                        ),
                        "date": env["date"],
                    }
                )
        now = {r["network"]: r for r in rows if r["experiment"] == experiment}
        rows += _carried(experiment, now, runtimes)
    md = [
        "# Latency-targeted against MACs-targeted networks, timed side by side with the dense one",
        "",
        f"One process per experiment, interleaved, batch {BATCH}, {THREADS} thread, eager in contiguous "
        f"memory format with the allocator made steady; the median of {REPEATS} side-by-side measurements, "
        f"their range beside it ({env['machine']}, load average {env['load_avg']}, {env['date']}"
        + ("" if len(runtimes) == 2 else f"; {' and '.join(runtimes)} timed then, the other rows on the date "
           "they show") + ").",
        "",
        "| experiment | network | runtime | test acc | MACs reduction | speed-up (range) | target speed-up | "
        "speed-up / MACs reduction | timed |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    rows.sort(key=lambda r: (EXPERIMENTS.index(r["experiment"]), r["runtime"]))
    for r in rows:
        acc = "-" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
        tgt = "-" if r["target_speedup"] is None else f"{r['target_speedup']:.2f}x"
        md.append(
            f"| {r['experiment']} | {r['network']} | {r['runtime']} | {acc} | {r['macs_reduction']:.2f}x | "
            f"{r['speedup']:.2f}x ({r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}) | {tgt} | "
            f"{r['speedup_over_macs']:.2f} | {r.get('date', '-')} |"
        )
    _write(HERE / "timing.json", {"environment": env, "rows": rows}, md)
    plot_timing(rows, HERE / "timing.png")


def plot_timing(rows: list[dict], path: Path) -> None:
    """Test accuracy against the speed-up measured side by side, one panel per experiment and
    runtime: the MACs-targeted networks, the latency arm pruned for that runtime, the one
    pruned for the other, and the target; each point labelled with its MACs reduction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = ("onnxruntime", "eager")
    fig, axes = plt.subplots(len(EXPERIMENTS), len(runtimes), figsize=(12, 4.2 * len(EXPERIMENTS)), squeeze=False)
    for (i, experiment), (j, runtime) in ((a, b) for a in enumerate(EXPERIMENTS) for b in enumerate(runtimes)):
        ax = axes[i][j]
        here = [r for r in rows if r["experiment"] == experiment and r["runtime"] == runtime and r["test_acc"]]
        for r in here:
            arm = next((rt for rt in runtimes if f"_latency_{rt}_" in r["network"]), None)
            style = ({"marker": "*", "s": 160, "color": "tab:red", "label": f"latency arm for {runtime}"}
                     if arm == runtime else
                     {"marker": "*", "s": 110, "facecolors": "none", "edgecolors": "tab:red",
                      "label": "latency arm for the other runtime"} if arm else
                     {"marker": "o", "s": 50, "color": "tab:grey", "label": "MACs-targeted (3x)"})
            ax.scatter(r["speedup"], 100 * r["test_acc"], **style)
            ax.annotate(f"{r['macs_reduction']:.2f}x MACs", (r["speedup"], 100 * r["test_acc"]),
                        textcoords="offset points", xytext=(6, -3), fontsize=8)
            if arm == runtime and r.get("target_speedup"):
                ax.axvline(r["target_speedup"], color="tab:purple", ls=":", label="its target")
        handles, labels = ax.get_legend_handles_labels()
        keep = dict(zip(labels, handles, strict=True))  # one legend entry per kind
        ax.legend(keep.values(), keep.keys(), fontsize=8, loc="best")
        ax.margins(x=0.25, y=0.3)
        dates = sorted({r.get("date", "-")[:10] for r in here})
        ax.set_title(f"{experiment}, {runtime} (timed {', '.join(dates)})", fontsize=10)
        ax.set_xlabel(f"speed-up over the dense network, side by side (batch {BATCH}, {THREADS} thread)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def _carried(experiment: str, now: dict[str, dict], timed: tuple[str, ...]) -> list[dict]:
    """The last timing.json's rows of ``experiment`` on the runtimes not ``timed`` now, for the
    networks timed now (``now``: name -> its row; a row of a network of the same name but another
    MACs reduction, a run made again, is not carried); each keeps its date and takes the test
    accuracy the networks' records give now."""
    path = HERE / "timing.json"
    if len(timed) == 2 or not path.is_file():
        return []
    last = json.loads(path.read_text())
    return [{**r, "date": r.get("date", last["environment"]["date"]), "test_acc": now[r["network"]]["test_acc"]}
            for r in last["rows"] if r["experiment"] == experiment and r["runtime"] not in timed
            and r["network"] in now and now[r["network"]]["macs_reduction"] == r["macs_reduction"]]


ALLOCATOR_PROBES = 2  # fresh processes per experiment, allocator and history


def allocator(args: argparse.Namespace) -> None:
    """Each experiment's dense network and its 3x-MACs one, timed on eager PyTorch as `target`
    times them, each time in a fresh process: with glibc's allocator left to itself or made
    steady (``pl_pruning.measure.steady_allocator``), right after start or after a
    training-like past (large blocks allocated and freed); with the page faults of a forward."""
    if args.probe:
        return _allocator_probe(args)
    import statistics

    rows = []
    for experiment in EXPERIMENTS:
        for steady in (False, True):
            for past in (False, True):
                for _ in range(ALLOCATOR_PROBES):
                    probe = [sys.executable, __file__, "allocator", "--experiment", experiment,
                             "--probe", f"{'steady' if steady else 'as_is'},{'past' if past else 'fresh'}"]
                    out = subprocess.run(probe, check=True, capture_output=True, text=True, cwd=ROOT).stdout
                    rows.append({"experiment": experiment, "steady": steady, "past": past,
                                 **json.loads(out.strip().splitlines()[-1])})
                    print(rows[-1], flush=True)
    env = _env()
    md = ["# Eager latency in fresh processes, glibc's allocator left alone or made steady", "",
          f"Each row one fresh process: the dense network and the 3x-MACs one timed side by side as "
          f"`target` does (batch {BATCH}, {THREADS} thread, fastest of interleaved runs), with the "
          f"page faults of one forward of the dense network after; \"after a past\": the process first "
          f"allocated and freed 400 blocks of 4-16 MiB ({env['machine']}, load average {env['load_avg']}, "
          f"{env['date']}).", "",
          "| experiment | allocator | process | dense ms | 3x ms | speed-up | page faults per forward |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        md.append(f"| {r['experiment']} | {'steady' if r['steady'] else 'as is'} | "
                  f"{'after a past' if r['past'] else 'fresh'} | {r['dense_ms']:.2f} | {r['pruned_ms']:.2f} | "
                  f"{r['speedup']:.2f}x | {r['faults_per_forward']:.0f} |")
    md += ["", "| experiment | allocator | speed-up, median (range over processes) |", "| --- | --- | ---: |"]
    for experiment in EXPERIMENTS:
        for steady in (False, True):
            ups = [r["speedup"] for r in rows if r["experiment"] == experiment and r["steady"] == steady]
            md.append(f"| {experiment} | {'steady' if steady else 'as is'} | {statistics.median(ups):.2f}x "
                      f"({min(ups):.2f}-{max(ups):.2f}) |")
    _write(HERE / "allocator.json", {"environment": env, "rows": rows}, md)


def _allocator_probe(args: argparse.Namespace) -> None:
    """One process of `allocator`: prints its row as JSON."""
    import resource

    import torch

    import pl_pruning.measure as measure
    from pl_pruning.pruning.latency import Runtime

    allocator_mode, past = args.probe.split(",")
    if allocator_mode == "as_is":
        measure._steady = False  # as if mallopt were missing: steady_allocator leaves glibc alone
    if past == "past":
        for i in range(400):
            block = torch.empty((1 + i % 4) * 2**20, dtype=torch.float32)  # 4-16 MiB
            del block
    dense, shape = _dense(args.experiment)
    pruned = _rebuild(dense, _shapes(args.experiment)[PRESET_3X[args.experiment]], shape)
    dense_ms, pruned_ms = Runtime("eager", **RUNTIME).measure([dense, pruned], shape)
    run = measure.latency_runner(dense, torch.zeros(BATCH, *shape), "eager", THREADS, HERE)
    run()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        run()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    print(json.dumps({"dense_ms": round(dense_ms, 3), "pruned_ms": round(pruned_ms, 3),
                      "speedup": round(dense_ms / pruned_ms, 3), "faults_per_forward": faults}))


def digits(args: argparse.Namespace) -> None:
    """A short run through the CLI on digits: the at_once preset to a latency target."""
    folder = HERE / "demo" / f"digits_{args.runtime}"
    overrides = [
        "experiment=digits_quick",
        "pruning=at_once",
        "pruning.controller.target_macs=null",
        "pruning.controller.target_latency=60%",
        f"pruning.controller.latency={{runtime:{args.runtime}}}",
        "pruning.fit.max_epochs=3",
        "pruning.statistics.calibration_batches=2",
        "logger=none",
        "callbacks.rich_progress_bar=null",
        f"hydra.run.dir={folder}",
        *args.overrides,
    ]
    subprocess.run([sys.executable, "-m", "pl_pruning", *overrides], check=True, cwd=ROOT)
    for junk in ("pruning_checkpoints", "checkpoints", "pruned_model.pt", ".hydra"):
        path = folder / junk
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()
    (folder / "command.txt").write_text(
        "python -m pl_pruning " + " ".join(overrides) + f"\n{_env()}\n"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "command", choices=["table", "predict", "target", "run", "timing", "allocator", "digits", "park"]
    )
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides (run, digits)")
    p.add_argument("--experiment", default=EXPERIMENTS[0], choices=EXPERIMENTS)
    p.add_argument("--runtime", choices=["eager", "onnxruntime"], help="default: eager; timing: both")
    p.add_argument("--arm", default="latency", choices=["latency", "macs"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=40)
    p.add_argument("--fast", action="store_true", help="run: bf16 autocast + channels-last weights (as the "
                   "compare harness's --fast; named with its suffix)")
    p.add_argument("--probe", help=argparse.SUPPRESS)  # allocator: one process's measurement
    args = p.parse_intermixed_args(argv)
    if args.runtime is None and args.command != "timing":
        args.runtime = "eager"
    os.chdir(ROOT)  # the presets name data relative to the repository root
    if args.command == "park":
        parking.park(
            OUTPUTS, PARTIAL, (RESUME,), finished=lambda name: (RUNS / f"{name}.json").is_file()
        )
        return
    {
        "table": table,
        "predict": predict,
        "target": target,
        "run": run,
        "timing": timing,
        "allocator": allocator,
        "digits": digits,
    }[args.command](args)


if __name__ == "__main__":
    main()
