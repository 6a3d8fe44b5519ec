"""Cost of a network in one place: MACs, parameters, channels and measured latency.

MACs come from ``torch.utils.flop_counter`` (FLOPs / 2; convolutions and matrix
products, which is what the pruning literature counts), latency from
``torch.utils.benchmark`` with a fixed thread count so that runs compare, in eager
PyTorch and (optionally) in ONNX Runtime. :func:`channel_counts` gives the width of
every layer; :func:`compare` sets a network before and after pruning side by side in
one call, timing the two interleaved so that machine load hits both alike.

Eager timing first pins glibc malloc's thresholds (:func:`steady_allocator`): left to
itself, glibc returns a freed activation of a few MiB to the system and page-faults it
back on the next forward, or not, by thresholds that move with everything the process
allocated before; a pruned ResNet-20's speed-up over the dense one then read 1.79x in one
fresh process and 2.63x in another (``benchmarks/latency_target/allocator.md``).
"""

from __future__ import annotations

import copy
import ctypes
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from pl_pruning.modes import eval_mode
from pl_pruning.validate import check_choice, check_int


@dataclass
class Cost:
    """MACs per sample, parameters, and latency per batch (ms, median).

    ``onnx_latency_ms`` is filled when ONNX Runtime was timed, ``channels`` (out channels
    per Conv/Linear layer) when asked for with ``per_layer=True``.
    """

    macs: int
    params: int
    latency_ms: float | None
    batch_size: int
    num_threads: int
    onnx_latency_ms: float | None = None
    channels: dict[str, int] | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def count_macs(model: nn.Module, example_inputs: Tensor) -> int:
    """Multiply-accumulates of one forward pass of ONE sample (the first of the batch),
    the unit of the pruning literature. Counted in eval mode; every module's train/eval
    flag is put back after (a BatchNorm frozen in eval mode stays frozen)."""
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example_inputs[:1])
    return int(counter.get_total_flops()) // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_latency(model: nn.Module, example_inputs: Tensor, num_threads: int = 1,
                    min_run_time: float = 0.5) -> float:
    """Median milliseconds per forward pass of the whole batch, in eval mode, no grad."""
    return interleaved_latency([model], example_inputs, "eager", num_threads, min_run_time, rounds=1)[0]


def channel_counts(model: nn.Module, convs_only: bool = False) -> dict[str, int]:
    """Out channels of every Conv layer and (unless ``convs_only``) out features of every
    Linear, by name: THE one definition of a layer's width (the pruning graph's
    ``channels`` too)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = int(m.out_channels)
        elif isinstance(m, nn.Linear) and not convs_only:
            out[name] = int(m.out_features)
    return out


RUNTIMES = ("eager", "onnxruntime")  # where a latency is measured: eager PyTorch, ONNX Runtime (CPU)
# the memory formats a network runs in on eager PyTorch when its latency is measured
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _onnx_runner(model: nn.Module, example_inputs: Tensor, num_threads: int,
                 folder: Path, dynamo: bool = True) -> Callable[[], object]:
    """A no-argument call that runs ``model`` exported to ONNX in ONNX Runtime."""
    from pl_pruning.export import export_onnx, ort_session

    path = folder / f"model_{id(model)}.onnx"
    export_onnx(model, path, example_inputs, check=False, dynamo=dynamo)
    session = ort_session(path, num_threads=num_threads)
    feed = {session.get_inputs()[0].name: example_inputs.detach().float().cpu().numpy()}
    return lambda: session.run(None, feed)


# glibc's mallopt parameters and the values steady_allocator sets: allocations up to 32 MiB
# (the most glibc allows) come from the heap, and a freed heap top is kept up to 2 GiB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_STEADY = {_M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 2**31 - 1}
_steady: bool | None = None  # None: not tried yet


def steady_allocator() -> bool:
    """Make eager PyTorch's time per batch independent of the process's history; True when
    done (glibc), False where the C library has no ``mallopt`` (nothing changed).

    glibc serves an allocation above its mmap threshold (128 KiB at start) with fresh pages
    that fault in on first touch and go back to the system when freed, and it trims the
    heap's top past its trim threshold; it raises both thresholds as it sees large blocks
    freed. Whether a network's activations fault in again on every forward therefore depends
    on what the process allocated before: in a fresh process the dense ResNet-20 took 11 700
    page faults per batch of 64 (125 ms) and a pruned one none, so a speed-up read in one
    process differed from another's by 20-40%. Fixing the thresholds (mmap at
    32 MiB, glibc's ceiling; trim at 2 GiB) keeps freed activations in the heap, so a
    network's steady-state time is measured wherever it is timed. It holds for the rest of
    the process (glibc has no way back to its moving thresholds): freed memory below 2 GiB
    stays with the process instead of returning to the system. Done once per process."""
    global _steady
    if _steady is None:
        try:
            mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own C library
        except (OSError, TypeError):  # no C library to open by name (Windows)
            mallopt = None
        _steady = mallopt is not None and all(mallopt(param, value) == 1 for param, value in _STEADY.items())
    return _steady


def _eager_runner(model: nn.Module, example_inputs: Tensor, memory_format: str = "contiguous") -> Callable[[], object]:
    """A no-argument call that runs a copy of ``model`` in eval mode without autograd, its
    4-D weights and a 4-D input in ``memory_format`` (one of :data:`MEMORY_FORMATS`), with
    the allocator made steady (:func:`steady_allocator`)."""
    steady_allocator()
    fmt = MEMORY_FORMATS[memory_format]
    net = copy.deepcopy(model).eval().to(memory_format=fmt)
    x = example_inputs.to(next(net.parameters()).device)
    if x.dim() == 4:
        x = x.contiguous(memory_format=fmt)

    def run() -> object:
        with torch.no_grad():
            return net(x)
    return run


def _time(fn: Callable[[], object], num_threads: int, min_run_time: float) -> float:
    """Median seconds of ``fn()``, ``torch.utils.benchmark`` style."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=num_threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def interleaved_latency(models: Sequence[nn.Module], example_inputs: Tensor, runtime: str = "eager",
                        num_threads: int = 1, min_run_time: float = 0.5, rounds: int = 3,
                        statistic: str = "median") -> list[float]:
    """Milliseconds per batch of each of ``models`` on ``runtime``, timed interleaved:
    ``rounds`` times each model in turn, each time for ``min_run_time / rounds`` seconds at
    least, so that a busy machine slows them all alike; the median over rounds, or with
    ``statistic="min"`` the fastest single call, every model called equally often (what the
    network costs when nothing else runs: on a shared machine other jobs only ever add time).

    Args:
        models: networks taking ``example_inputs`` (not changed: copies are timed).
        example_inputs: the batch (its size is the batch size timed).
        runtime: ``"eager"`` (PyTorch, eval mode, no grad) or ``"onnxruntime"`` (CPU, the
            model exported to a temporary folder first; needs the ``onnx`` extra).
        num_threads: torch threads (ONNX Runtime: intra-op threads) while timing.
        min_run_time: seconds of timing per model, at least.
        rounds: interleaved rounds, >= 1.
        statistic: ``"median"`` or ``"min"``.

    Raises:
        PlPruningError: an unknown ``runtime`` or ``statistic``, ``rounds < 1`` or ``num_threads < 1``.
    """
    check_choice("runtime", runtime, RUNTIMES)
    with tempfile.TemporaryDirectory() as tmp:
        runners = [latency_runner(m, example_inputs, runtime, num_threads, Path(tmp)) for m in models]
        return time_runners(runners, num_threads, min_run_time, rounds, statistic)


def latency_runner(model: nn.Module, example_inputs: Tensor, runtime: str, num_threads: int,
                   folder: Path, memory_format: str = "contiguous", dynamo: bool = True) -> Callable[[], object]:
    """A no-argument call that runs ``model`` on ``example_inputs`` in ``runtime`` (a copy in
    eval mode without autograd, in ``memory_format``, or the model exported to ``folder`` and
    loaded in ONNX Runtime: the session keeps it, the file may go; exported with
    ``torch.export``, or with ``dynamo=False`` the TorchScript exporter, 30x faster for a
    single layer, where both write the same node)."""
    check_choice("runtime", runtime, RUNTIMES)
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    if runtime == "eager":
        return _eager_runner(model, example_inputs, memory_format)
    return _onnx_runner(model, example_inputs, num_threads, folder, dynamo)


def _fastest_call(fn: Callable[[], object], num_threads: int, calls: int) -> float:
    """Seconds of the fastest of ``calls`` single calls of ``fn()``."""
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        best = float("inf")
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return best


def time_runners(runners: Sequence[Callable[[], object]], num_threads: int = 1, min_run_time: float = 0.5,
                 rounds: int = 3, statistic: str = "median") -> list[float]:
    """Milliseconds of each runner (:func:`latency_runner`), timed interleaved as
    :func:`interleaved_latency` says. With ``statistic="min"`` the fastest single call over
    the rounds, every runner called as often as the slowest fits in ``min_run_time / rounds``
    seconds a round (two calls at least; the slowest's time a call is its fastest of three
    after a warm-up: one call slowed by a loaded machine would leave too few): the fastest of
    more calls is faster by chance, so a fixed time per runner would favour the faster networks."""
    check_choice("statistic", statistic, ("median", "min"))
    check_int("rounds", rounds, 1)
    check_int("num_threads", num_threads, 1)
    slowest = 0.0
    for fn in runners:  # warm-up (allocator, kernels), then three calls timed on the threads timed
        fn()
        slowest = max(slowest, _fastest_call(fn, num_threads, 3))
    calls = max(2, math.ceil(min_run_time / rounds / max(slowest, 1e-6)))
    samples: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, fn in enumerate(runners):
            samples[i].append(_fastest_call(fn, num_threads, calls) if statistic == "min"
                              else _time(fn, num_threads, min_run_time / rounds))
    pick = statistics.median if statistic == "median" else min
    return [pick(t) * 1e3 for t in samples]


def measure_onnx_latency(model: nn.Module, example_inputs: Tensor, num_threads: int = 1,
                         min_run_time: float = 0.5) -> float:
    """Median milliseconds per batch in ONNX Runtime (CPU, ``num_threads`` intra-op threads).

    The model is exported to a temporary file first (see :func:`pl_pruning.export.export_onnx`).
    """
    return interleaved_latency([model], example_inputs, "onnxruntime", num_threads, min_run_time, rounds=1)[0]


def measure_cost(model: nn.Module, example_inputs: Tensor, num_threads: int = 1,
            latency: bool = True, min_run_time: float = 0.5, onnx: bool = False,
            per_layer: bool = False) -> Cost:
    """MACs, parameters and (optionally) latency of ``model`` on ``example_inputs``.

    Args:
        model: any ``nn.Module``; it is not changed (latency runs on a copy).
        example_inputs: a batch; MACs are per sample, latency is for the whole batch.
        num_threads: torch threads while timing, fixed so that runs compare (ONNX
            Runtime gets as many intra-op threads).
        latency: skip the timing when ``False`` (``latency_ms`` is then ``None``).
        min_run_time: seconds of timing, at least.
        onnx: also time the model in ONNX Runtime (``onnx_latency_ms``); needs the
            ``onnx`` extra and ``latency=True``.
        per_layer: also record the channel count of every layer (``channels``).

    Example::

        cost = pl_pruning.measure_cost(net, torch.zeros(64, 3, 32, 32))
        cost.macs, cost.params, cost.latency_ms
    """
    example_inputs = example_inputs.to(next(model.parameters()).device)
    return Cost(
        macs=count_macs(model, example_inputs),
        params=count_params(model),
        latency_ms=measure_latency(model, example_inputs, num_threads, min_run_time) if latency else None,
        batch_size=int(example_inputs.shape[0]),
        num_threads=num_threads,
        onnx_latency_ms=(measure_onnx_latency(model, example_inputs, num_threads, min_run_time)
                         if latency and onnx else None),
        channels=channel_counts(model) if per_layer else None,
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


@dataclass
class Comparison:
    """A network before and after pruning.

    ``ratios`` are factors ``before / after``: ``macs`` 4.0 means 4x fewer MACs,
    ``latency`` 2.0 means twice as fast. ``layers`` lists ``(name, before, after)``
    channel counts of every Conv/Linear layer of the original network.
    """

    before: Cost
    after: Cost
    ratios: dict[str, float | None]
    layers: list[tuple[str, int, int | None]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"before": self.before.as_dict(), "after": self.after.as_dict(),
                "ratios": dict(self.ratios),
                "layers": [{"layer": n, "before": b, "after": a} for n, b, a in self.layers]}

    def to_markdown(self, per_layer: bool = True) -> str:
        """A summary table (and, by default, the per-layer channel table)."""
        rows = [("MACs / sample", self.before.macs, self.after.macs, self.ratios["macs"]),
                ("parameters", self.before.params, self.after.params, self.ratios["params"])]
        if self.before.latency_ms is not None:
            rows.append((f"latency ms (PyTorch, batch {self.before.batch_size}, "
                         f"{self.before.num_threads} thread(s))", self.before.latency_ms,
                         self.after.latency_ms, self.ratios["latency"]))
        if self.before.onnx_latency_ms is not None:
            rows.append((f"latency ms (ONNX Runtime, batch {self.before.batch_size})",
                         self.before.onnx_latency_ms, self.after.onnx_latency_ms,
                         self.ratios["onnx_latency"]))

        def fmt(v: object) -> str:
            if v is None:
                return "-"
            if isinstance(v, float):
                return f"{v:.3f}"
            return f"{v:,}"

        lines = ["| metric | before | after | before / after |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {n} | {fmt(b)} | {fmt(a)} | {fmt(r)}x |" for n, b, a, r in rows]
        if per_layer and self.layers:
            lines += ["", "| layer | channels before | after | kept |", "| --- | ---: | ---: | ---: |"]
            for name, b, a in self.layers:
                kept = "-" if a is None else f"{a / b:.0%}"
                lines.append(f"| {name} | {b} | {fmt(a)} | {kept} |")
        return "\n".join(lines)


def compare(before: nn.Module, after: nn.Module, example_inputs: Tensor, num_threads: int = 1,
            latency: bool = True, onnx: bool = False, min_run_time: float = 0.5,
            rounds: int = 3) -> Comparison:
    """Cost of ``before`` and ``after`` (e.g. a network and its pruned copy), in one call.

    Latencies are measured interleaved: ``rounds`` times each model in turn, each time
    for ``min_run_time / rounds`` seconds at least; the median over rounds is reported,
    so that a busy machine slows both alike.

    Args:
        before, after: the two networks (not changed).
        example_inputs: a batch; MACs are per sample, latencies per batch.
        num_threads: torch threads (and ONNX Runtime intra-op threads) while timing.
        latency: time the models (eager PyTorch).
        onnx: also time them in ONNX Runtime (exported to a temporary folder).
        min_run_time: seconds of timing per model and runtime, at least.
        rounds: interleaved rounds, >= 1.

    Raises:
        PlPruningError: ``rounds < 1``.
    """
    check_int("rounds", rounds, 1)
    costs = [measure_cost(m, example_inputs, num_threads, latency=False, per_layer=True)
             for m in (before, after)]
    for runtime, key, wanted in (("eager", "latency_ms", latency), ("onnxruntime", "onnx_latency_ms", latency and onnx)):
        if wanted:
            for cost, ms in zip(costs, interleaved_latency((before, after), example_inputs, runtime, num_threads,
                                                           min_run_time, rounds), strict=True):
                setattr(cost, key, ms)
    b, a = costs
    after_channels = a.channels or {}
    layers = [(n, c, after_channels.get(n)) for n, c in (b.channels or {}).items()]
    ratios = {"macs": _ratio(b.macs, a.macs), "params": _ratio(b.params, a.params),
              "latency": _ratio(b.latency_ms, a.latency_ms),
              "onnx_latency": _ratio(b.onnx_latency_ms, a.onnx_latency_ms)}
    return Comparison(before=b, after=a, ratios=ratios, layers=layers)
