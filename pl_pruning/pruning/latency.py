"""The latency model: how long a network runs on a named runtime, measured there rather
than assumed from MACs, and what each prunable group's filters cost in it.

MACs leave out what a runtime spends outside multiply-accumulates: BatchNorm, ReLU and
pooling read and write every activation, and a layer has a fixed overhead, so a network
with 3x fewer MACs may run 1.3x or 2.3x faster depending on where the filters went and on
the runtime. A :class:`LatencyTable` is measured once per run on the runtime the network
will be deployed on (:class:`Runtime`: eager PyTorch or ONNX Runtime on the CPU, a batch
size and a thread count, the app's ``measure`` settings):

* every convolution is timed alone (a Conv2d of its shape, on the same runtime, batch and
  threads) at eight widths of its output and eight of its input
  (:data:`LAYER_SHARES`, its fastest call: :func:`pl_pruning.measure.time_runners`; layers
  of one shape share one curve): what it costs at any pair of widths is the product of its
  two curves, interpolated, over its time as given (:meth:`LatencyTable.layer_ms`). The
  curves hold what MACs cannot: eager PyTorch (oneDNN) runs 18 output channels as slowly as
  32 and the 16-channel convolution at 32x32 as slowly at 2 output channels as at 16, and
  ONNX Runtime runs widths off its vector block slower than wider aligned ones;
* the whole network is timed at a few widths (every group at ``scales`` of its width, and
  two shapes that cut alternate groups, so that the convolutions and the activations do not
  move together), all timed interleaved, each the fastest of as many calls as the others
  (:func:`pl_pruning.measure.time_runners`; on a shared machine other jobs only add time,
  and the fastest of more calls is faster by chance);
* a least-squares fit with non-negative coefficients gives the runtime's fixed cost, the
  scale from the convolutions' time alone to their time in the network, the cost of a MAC
  outside them (linear layers, grouped convolutions) and of one activation element (a
  conv's output read and written by the BatchNorm, activation and pooling after it): a
  network's latency is ``fixed_ms + ms_per_layer_ms * conv_ms + ms_per_mmac * MACs +
  ms_per_mact * activations``, counted from the network's own trace
  (:class:`~pl_pruning.structure.graph.NetworkGraph`), so the coupling of a group with the
  layers that read it is exact;
* what one filter of a group costs is what its convolution's curve and its readers' curves
  save per filter over the last quarter of their width (a runtime that pads to a multiple
  saves nothing for one filter and much for a whole multiple) plus its output map's
  activations (:meth:`LatencyTable.per_filter`), and each group's latency as a function of
  its width is tabulated in the table (``groups``) for reading;
* which channel counts run faster on that runtime (``round_to``), read from the same
  curves: a candidate ``r`` pays when, above ``r``, the widths between its multiples ran
  no faster than the multiple above them (within 5%) in at least 80% of the cases the
  curves hold: the runtime pads to ``r`` (eager PyTorch's oneDNN here: 16) or has a fast
  path at its multiples, so a cut that stops between two multiples buys no time. A table
  without curves (format 1, ``layer_curves=False``) times the network with every group at
  a multiple of ``r`` against one channel fewer in each instead (``r`` pays when that runs
  2% slower). ``round_to="auto"`` takes the largest that pays
  (:meth:`LatencyTable.multiple`); widths at or below it stay free
  (:func:`~pl_pruning.pruning.surgery.allowed_width`), so the narrow early groups can
  still be cut (on oneDNN the convolution reading them gets faster with every input
  channel below 16).

Why each convolution alone rather than each group in the whole network: cutting one group
of VGG-16 changes the whole network's time by a few percent, less than the noise of a
shared machine (measured: a group at a quarter of its width timed slower than the full
network), while a convolution alone moves by its whole time. A run still re-checks every
prediction against a real measurement of the whole network and plans from the measurement
(the prediction's error goes in the report); a measurement more than :data:`RETIME_SHARE`
off the prediction, or one that says a cut bought no time, is taken twice more and the median
stands (:meth:`LatencyModel.measure`).

The table is plain data: :meth:`LatencyTable.save` writes JSON, :meth:`LatencyTable.load`
reads it back (on another machine a run plans from its predictions only: a measurement
here would say nothing about there), :meth:`LatencyTable.to_markdown` shows it.

Example::

    table = LatencyTable.fit(net, Runtime("onnxruntime", batch_size=64, num_threads=1),
                             input_shape=(3, 32, 32))
    table.save("vgg_ort.json")
    graph = NetworkGraph.of(pruned, torch.zeros(1, 3, 32, 32))
    table.predict(graph)            # ms per batch of the pruned network
    table.per_filter(graph)         # ms one filter of each group costs in it
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pl_pruning.errors import PlPruningError
from pl_pruning.files import write_text_atomic
from pl_pruning.measure import (
    MEMORY_FORMATS,
    RUNTIMES,
    channel_counts,
    latency_runner,
    time_runners,
)
from pl_pruning.pruning.pruner import private_copy
from pl_pruning.pruning.surgery import narrower_width, prune_filters
from pl_pruning.structure.graph import NetworkGraph
from pl_pruning.validate import check_choice, check_int, check_number

__all__ = ["FORMAT", "LatencyTable", "Runtime", "TargetLatency", "parse_target_latency", "relative_error",
           "with_widths"]

FORMAT = 2  # the table's JSON format (1: no per-layer curves; still read)
FORMATS = (1, 2)
SCALES = (1.0, 0.8, 0.6, 0.45, 0.3, 0.2)  # uniform widths timed, as shares of every group's width
ROUND_CANDIDATES = (4, 8, 16, 32)
TABULATED = (0.25, 0.5, 0.75, 1.0)  # widths each group's latency is tabulated at, for reading
ALIGNMENT_MARGIN = 1.02  # a multiple pays when one channel fewer runs at least 2% slower (not noise)
CURVE_MARGIN = 0.05  # on the curves: a width off the multiples "no faster" within 5% (fastest calls)
CURVE_SHARE = 0.8  # ... in at least this share of the widths the curves hold for a candidate
LAYER_SHARES = tuple(k / 8 for k in range(1, 9))  # widths each convolution is timed at alone
LAYER_RUN_TIME = 0.5  # seconds the slowest convolution alone is timed for; every other one is called as often
SLOPE_WINDOW = 0.25  # a filter's cost: the mean over the last quarter of its layer's width
RETIME_SHARE = 0.2  # a cut timed this far off the model's prediction is timed twice more (LatencyModel.measure)
NO_TIME = 1e-9  # ms: what a filter that saves no time costs (a cost must be positive to rank by)


# --------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class TargetLatency:
    """A latency target in one of two explicit forms: ``ms`` (milliseconds per batch on the
    runtime) or ``fraction`` (of the dense network's latency measured on it)."""

    value: float
    unit: str  # "ms" | "fraction"

    def in_ms(self, dense_ms: float) -> float:
        return self.value if self.unit == "ms" else self.value * dense_ms

    def __str__(self) -> str:
        return f"{self.value:g}ms" if self.unit == "ms" else f"{self.value * 100:g}%"


_TARGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|%)\s*$")


def parse_target_latency(value: Any) -> TargetLatency | None:
    """``"25ms"`` (milliseconds per batch) or ``"40%"`` (of the dense network's latency);
    ``None`` for no target. A bare number is refused: which of the two it meant would be a
    guess.

    Raises:
        PlPruningError: anything else, a percentage outside ``(0, 100)``, or 0 ms.
    """
    if value is None or isinstance(value, TargetLatency):
        return value
    match = _TARGET.match(value) if isinstance(value, str) else None
    if match is None:
        raise PlPruningError(f"target_latency must be milliseconds per batch ('25ms') or a percentage of the "
                             f"dense network's latency ('40%'), or None, got {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        if not 0 < number < 100:
            raise PlPruningError(f"target_latency as a percentage must be in (0%, 100%), got {value!r}")
        return TargetLatency(number / 100, "fraction")
    if number <= 0:
        raise PlPruningError(f"target_latency in milliseconds must be more than 0, got {value!r}")
    return TargetLatency(number, "ms")


# --------------------------------------------------------------------------- the runtime


@dataclass(frozen=True)
class Runtime:
    """Where latency is measured: ``name`` in :data:`pl_pruning.measure.RUNTIMES` (``eager``
    PyTorch or ``onnxruntime``), on the CPU, ``batch_size`` samples per forward pass,
    ``num_threads`` threads; each network timed for ``min_run_time`` seconds in ``rounds``
    interleaved rounds, its latency the fastest call (``statistic="min"``, the default: on a
    shared machine other jobs only ever add time; every network called equally often) or the
    median over rounds. On eager
    PyTorch the network runs in ``memory_format`` (``contiguous``, PyTorch's default, or
    ``channels_last``) whatever format its weights are kept in while training: a run with
    ``ChannelsLast`` keeps its weights channels-last, and surgery makes new ones contiguous,
    so without a fixed format a cut would be timed with format conversions in it. Eager
    timing first makes glibc's allocator steady for the process
    (:func:`pl_pruning.measure.steady_allocator`): otherwise whether activations page-fault
    in on every forward depends on what the process allocated before.

    Raises:
        PlPruningError: an unknown runtime or a bad number.
    """

    name: str = "eager"
    batch_size: int = 64
    num_threads: int = 1
    min_run_time: float = 1.0
    rounds: int = 3
    statistic: str = "min"
    memory_format: str = "contiguous"

    def __post_init__(self) -> None:
        check_choice("runtime", self.name, RUNTIMES)
        check_int("batch_size", self.batch_size, 1)
        check_int("num_threads", self.num_threads, 1)
        check_number("min_run_time", self.min_run_time, 0, low_open=True)
        check_int("rounds", self.rounds, 1)
        check_choice("statistic", self.statistic, ("min", "median"))
        check_choice("memory_format", self.memory_format, MEMORY_FORMATS)

    @classmethod
    def of(cls, settings: Runtime | Mapping[str, Any] | None) -> Runtime:
        """A runtime from itself, a mapping of its fields (``runtime`` names ``name``), or None (defaults)."""
        if isinstance(settings, Runtime):
            return settings
        values = dict(settings or {})
        if "runtime" in values:
            values["name"] = values.pop("runtime")
        unknown = sorted(set(values) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise PlPruningError(f"unknown latency setting {unknown[0]!r}; allowed: runtime, batch_size, "
                                 "num_threads, min_run_time, rounds, statistic, memory_format")
        return cls(**values)

    def measure(self, models: Sequence[nn.Module], input_shape: Sequence[int]) -> list[float]:
        """Milliseconds per batch of each of ``models`` (CPU copies without hooks), interleaved."""
        with tempfile.TemporaryDirectory() as tmp:
            return self.time([self.runner(m, input_shape, Path(tmp)) for m in models])

    def runner(self, model: nn.Module, input_shape: Sequence[int], folder: Path,
               dynamo: bool = True) -> Callable[[], object]:
        """A call that runs a CPU copy of ``model`` (without hooks) on this runtime (``dynamo``:
        :func:`~pl_pruning.measure.latency_runner`'s)."""
        x = torch.zeros(self.batch_size, *input_shape)
        return latency_runner(private_copy(model).cpu(), x, self.name, self.num_threads, folder,
                              memory_format=self.memory_format, dynamo=dynamo)

    def time(self, runners: Sequence[Callable[[], object]]) -> list[float]:
        """Milliseconds per batch of each runner, interleaved."""
        return time_runners(runners, self.num_threads, self.min_run_time, self.rounds, self.statistic)


def _machine() -> dict[str, Any]:
    out = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
           "torch": str(torch.__version__)}  # TorchVersion is no plain str: weights-only loading refuses it
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return out


# --------------------------------------------------------------------------- building shapes


def with_widths(model: nn.Module, widths: Mapping[str, int], input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` (no hooks) with each named group cut to the given width (its
    last filters go: latency depends on the shape, not on which filters)."""
    net = private_copy(model)
    have = channel_counts(net, convs_only=True)
    plan = {root: list(range(w, have[root])) for root, w in widths.items() if w < have[root]}
    if plan:
        prune_filters(net, plan, torch.zeros(1, *input_shape, device=_device(net)), compensate=False)
        NetworkGraph.forget(net)  # a private copy: its trace would only push the run's own out of the cache
    return net


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def counts(graph: NetworkGraph) -> tuple[float, float]:
    """MACs and activation elements (conv outputs) of one sample, in millions."""
    act = sum(graph.channels[name] * h * w for name, (h, w) in graph.output_hw.items())
    return graph.macs / 1e6, act / 1e6


def _graph(model: nn.Module, input_shape: Sequence[int]) -> NetworkGraph:
    return NetworkGraph.of(model, torch.zeros(1, *input_shape, device=_device(model)))


# --------------------------------------------------------------------------- the table


@dataclass
class LatencyTable:
    """A runtime's latency model, measured on one network (see the module doc).

    Attributes:
        runtime: where it was measured (:class:`Runtime` fields as a dict).
        input_shape: one sample's shape (the batch is ``runtime["batch_size"]``).
        fixed_ms, ms_per_layer_ms, ms_per_mmac, ms_per_mact: the fitted costs (per batch):
            fixed, per millisecond of the convolutions timed alone (:attr:`curves`), per
            million MACs of a sample outside them, per million activation elements of a sample.
        layers: convolution name -> the key of its curve in :attr:`curves` (layers of one
            shape share one).
        curves: key -> one convolution timed alone (``conv``: its shape; ``out``/``out_ms``:
            ms per batch at output widths, the input as in the network; ``in``/``in_ms``: at
            input widths, the output as in the network): what its time is at any pair of
            widths, interpolated (:meth:`layer_ms`).
        measurements: the networks timed: ``{"shape", "layer_ms", "mmacs", "mact", "ms",
            "fitted_ms"}`` each (a table of format 1 has no ``layer_ms``).
        reference_ms: the network as given, timed (``measurements[0]``).
        groups: group root -> ``{"widths": [...], "ms": [...]}``: the whole network's
            predicted latency with that group at each width (the others as given).
        round_to: ``{"candidates": {r: {"widths", "no_faster", "pays"}}}`` from the curves
            (a table without curves: ``{"aligned_ms", "one_less_ms", "pays"}``), what
            :meth:`multiple` chooses from.
        machine: where it was measured (platform, CPUs, torch and ONNX Runtime versions).
        fit_s: seconds the fit took.
    """

    runtime: dict[str, Any]
    input_shape: list[int]
    fixed_ms: float
    ms_per_mmac: float
    ms_per_mact: float
    ms_per_layer_ms: float = 0.0
    layers: dict[str, str] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    reference_ms: float | None = None
    groups: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    round_to: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    fit_s: float | None = None
    format: int = FORMAT

    # ------------------------------------------------------------------ building

    @classmethod
    def fit(cls, model: nn.Module, runtime: Runtime | Mapping[str, Any] | None = None, *,
            input_shape: Sequence[int] | None = None, ignored_layers: Sequence[str] = (),
            scales: Sequence[float] = SCALES, round_candidates: Sequence[int] = ROUND_CANDIDATES,
            layer_curves: bool = True) -> LatencyTable:
        """Measure ``model`` (not changed) on ``runtime`` and fit the costs.

        Args:
            model: the network (or a LightningModule around it).
            runtime: a :class:`Runtime` or its fields (default: eager, batch 64, 1 thread).
            input_shape: one sample's shape (default: the model's ``example_input_array``).
            ignored_layers: as the run's: their groups keep their width.
            scales: the uniform widths timed, shares in ``(0, 1]``, at least two.
            round_candidates: channel multiples tried for ``round_to`` (empty: none tried).
            layer_curves: time every convolution alone at :data:`LAYER_SHARES` of its output
                and of its input width (False: the MACs stand for them, format 1's model).

        Raises:
            PlPruningError: no input shape, bad scales or candidates, a bad runtime.
        """
        start = time.perf_counter()
        runtime = Runtime.of(runtime)
        input_shape = _input_shape(model, input_shape)
        scales = [check_number("scales", s, 0, 1, low_open=True) for s in scales]
        if len(set(scales)) < 2:
            raise PlPruningError(f"scales must hold at least two different widths, got {scales!r}")
        for r in round_candidates:
            check_int("round_candidates", r, 2)
        graph = NetworkGraph.of(model, torch.zeros(1, *input_shape, device=_device(model)), ignored_layers)
        reference = {g.root: g.channels for g in graph.groups}
        roots = list(reference)
        shapes: list[tuple[str, dict[str, int]]] = []
        for s in scales:
            shapes.append((f"all groups x{s:g}", {r: max(1, round(s * c)) for r, c in reference.items()} if s < 1 else {}))
        for parity in (0, 1):  # alternate groups thin: MACs (in x out) fall less than activations
            shapes.append((f"every other group x0.3 (from the {'first' if parity == 0 else 'second'})",
                           {r: max(1, round(0.3 * reference[r])) for i, r in enumerate(roots) if i % 2 == parity}))
        aligned = {} if layer_curves else _alignment_shapes(reference, round_candidates)
        nets = [with_widths(model, widths, input_shape) for _, widths in shapes]
        nets += [with_widths(model, widths, input_shape) for pair in aligned.values() for widths in pair]
        ms = runtime.measure(nets, input_shape)
        layers = _conv_layers(graph) if layer_curves else {}
        table = cls(runtime=asdict(runtime), input_shape=list(input_shape), fixed_ms=0.0, ms_per_mmac=0.0,
                    ms_per_mact=0.0, layers={name: key for name, (key, _) in layers.items()},
                    curves=_time_layers({key: conv for key, conv in layers.values()}, runtime))
        features = [table.features(_graph(net, input_shape)) for net in nets[:len(shapes)]]
        for net in nets:
            NetworkGraph.forget(net)
        table.fixed_ms, table.ms_per_layer_ms, table.ms_per_mmac, table.ms_per_mact = \
            _nonnegative_fit(features, ms[:len(shapes)])
        measurements = [{"shape": name, "layer_ms": round(f[0], 4), "mmacs": round(f[1], 4),
                         "mact": round(f[2], 4), "ms": round(t, 4), "fitted_ms": round(table.combine(f), 4)}
                        for (name, _), f, t in zip(shapes, features, ms, strict=False)]
        if layer_curves:
            candidates = _curve_alignment(table.curves, round_candidates)
        else:
            it, candidates = iter(ms[len(shapes):]), {}
            for r in aligned:
                a, b = next(it), next(it)
                candidates[str(r)] = {"aligned_ms": round(a, 4), "one_less_ms": round(b, 4),
                                      "pays": b >= a * ALIGNMENT_MARGIN}
        table.measurements, table.round_to, table.machine = measurements, {"candidates": candidates}, _machine()
        table.reference_ms = measurements[0]["ms"] if scales[0] == 1 else None
        table.groups = table.tabulate(graph)
        table.fit_s = round(time.perf_counter() - start, 2)
        return table

    # ------------------------------------------------------------------ reading

    def paying(self) -> list[int]:
        """The channel multiples that ran faster on this runtime, smallest first."""
        return sorted(int(r) for r, c in self.round_to.get("candidates", {}).items() if c["pays"])

    def multiple(self) -> int | None:
        """The multiple ``round_to="auto"`` takes: the largest that pays (None: none does).
        Widths at or below it stay free, so a coarse multiple never makes a narrow group
        uncuttable."""
        return max(self.paying(), default=None)

    def layer_ms(self, name: str, in_width: float, out_width: float) -> float:
        """Milliseconds per batch of the convolution ``name`` alone at these widths: its
        measured time at the output width times its measured time at the input width, over
        its time as measured (each interpolated between the widths timed; below the
        narrowest, as at the narrowest)."""
        import numpy as np

        c = self.curves[self.layers[name]]
        at_out = float(np.interp(out_width, c["out"], c["out_ms"]))
        at_in = float(np.interp(in_width, c["in"], c["in_ms"]))
        return at_out * at_in / c["ms"]

    def features(self, graph: NetworkGraph) -> tuple[float, float, float]:
        """What the model reads of a network: the ms of its tabulated convolutions
        (:meth:`layer_ms` at their widths), the MACs outside them and the activation
        elements (millions, per sample)."""
        mmacs, mact = counts(graph)
        modules = {name: m for m, name in graph.names.items()}
        layer_ms = 0.0
        for name, shapes in graph.layer_shapes.items():
            if name in self.layers:
                ci, co = shapes[0][1], shapes[1][1]
                layer_ms += self.layer_ms(name, ci, co)
                mmacs -= _module_mmacs(modules[name], shapes, ci, co)
        return layer_ms, max(mmacs, 0.0), mact

    def combine(self, features: Sequence[float]) -> float:
        """Milliseconds per batch from :meth:`features`."""
        layer_ms, mmacs, mact = features
        return self.fixed_ms + self.ms_per_layer_ms * layer_ms + self.ms_per_mmac * mmacs + self.ms_per_mact * mact

    def predict(self, graph: NetworkGraph) -> float:
        """Milliseconds per batch of the network ``graph`` describes."""
        return self.combine(self.features(graph))

    def per_filter(self, graph: NetworkGraph, round_to: int | None = None) -> dict[str, float]:
        """Milliseconds one filter of each layer costs, for every layer
        ``graph.macs_per_filter`` names: its output map's activations, and for a tabulated
        convolution and each tabulated consumer the time its curve saves per filter over the
        last quarter of the width (:data:`SLOPE_WINDOW`: a runtime that pads channels to a
        multiple saves nothing for one filter and much for a whole multiple), or with
        ``round_to``, above it, over the filters down to the next width it allows (the block
        a rounded plan removes: :func:`~pl_pruning.pruning.surgery.narrower_width`); MACs outside
        the curves (THE :attr:`~pl_pruning.structure.graph.NetworkGraph.macs_per_filter`
        less theirs) at the fitted cost of a MAC; at least :data:`NO_TIME`, so that a ranking per
        millisecond keeps the filters that buy none."""
        hw = {name: h * w for name, (h, w) in graph.output_hw.items()}
        shapes = graph.layer_shapes
        modules = {name: m for m, name in graph.names.items()}
        out = {}
        for name, macs in graph.macs_per_filter.items():
            ms, mmacs = 0.0, macs / 1e6
            for layer, lost in ((name, (0, 1)), *((c, (cols, 0)) for c, cols in graph.reads.get(name, {}).items())):
                if layer not in self.layers or layer not in shapes:
                    continue
                ci, co = shapes[layer][0][1], shapes[layer][1][1]
                width = co if lost[1] else ci
                k = (width - narrower_width(width, round_to) if round_to and width > round_to
                     else max(1, round(SLOPE_WINDOW * width)))  # filters of ``name`` in the window
                dci, dco = lost[0] * k, lost[1] * k
                ms += (self.layer_ms(layer, ci, co) - self.layer_ms(layer, ci - dci, co - dco)) / k
                mmacs -= (_module_mmacs(modules[layer], shapes[layer], ci, co)
                          - _module_mmacs(modules[layer], shapes[layer], ci - dci, co - dco)) / k
            out[name] = max(self.ms_per_layer_ms * max(ms, 0.0) + self.ms_per_mmac * max(mmacs, 0.0)
                            + self.ms_per_mact * hw.get(name, 1) / 1e6, NO_TIME)
        return out

    def tabulate(self, graph: NetworkGraph, shares: Sequence[float] = TABULATED) -> dict[str, dict[str, list[float]]]:
        """Each group's latency as a function of its width (the others as in ``graph``):
        ``{root: {"widths": [...], "ms": [...]}}``, the whole network's predicted ms."""
        shapes, reads = graph.layer_shapes, graph.reads
        hw = {name: h * w for name, (h, w) in graph.output_hw.items()}
        layer_ms, mmacs, mact = self.features(graph)
        modules = {name: m for m, name in graph.names.items()}
        out = {}
        for group in graph.groups:
            widths = sorted({max(1, round(s * group.channels)) for s in shares})
            row = []
            for w in widths:
                cut = group.channels - w
                changed: dict[str, list[int]] = {}
                for conv in group.convs:
                    if conv in shapes:
                        changed.setdefault(conv, [shapes[conv][0][1], shapes[conv][1][1]])[1] -= cut
                    for reader, cols in reads.get(conv, {}).items():
                        if reader in shapes:
                            changed.setdefault(reader, [shapes[reader][0][1], shapes[reader][1][1]])[0] -= cols * cut
                d_layer = d_macs = 0.0
                for layer, (ci, co) in changed.items():
                    was_ci, was_co = shapes[layer][0][1], shapes[layer][1][1]
                    if layer in self.layers:
                        d_layer += self.layer_ms(layer, ci, co) - self.layer_ms(layer, was_ci, was_co)
                    else:
                        module = modules[layer]
                        d_macs += (_module_mmacs(module, shapes[layer], ci, co)
                                   - _module_mmacs(module, shapes[layer], was_ci, was_co))
                d_act = -sum(cut * hw.get(conv, 0) for conv in group.convs) / 1e6  # conv outputs only, as counts()
                row.append(round(self.combine((layer_ms + d_layer, mmacs + d_macs, mact + d_act)), 4))
            out[group.root] = {"widths": widths, "ms": row}
        return out

    def check_input(self, input_shape: Sequence[int]) -> None:
        """Raises :class:`PlPruningError` when the table was measured with another input shape."""
        if list(input_shape) != list(self.input_shape):
            raise PlPruningError(f"the latency table was measured with inputs of shape {self.input_shape}, "
                                 f"this network takes {list(input_shape)}")

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        if not isinstance(data, Mapping) or data.get("format") not in FORMATS or "ms_per_mmac" not in data:
            raise PlPruningError(f"not a latency table of format {' or '.join(map(str, FORMATS))} (format "
                                 f"{data.get('format') if isinstance(data, Mapping) else None!r})")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (parents created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """A table saved by :meth:`save`.

        Raises:
            PlPruningError: no such file, or not a latency table.
        """
        path = Path(path)
        if not path.is_file():
            raise PlPruningError(f"latency table {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text())
        except ValueError as err:
            raise PlPruningError(f"latency table {str(path)!r} is not JSON: {err}") from err
        return cls.from_dict(data)

    def to_markdown(self) -> str:
        """The table for reading: the runtime, the fitted costs, the networks timed, each
        group's latency by width and round_to's measurement."""
        rt, m = self.runtime, self.machine
        lines = [f"# Latency table ({rt['name']}, batch {rt['batch_size']}, {rt['num_threads']} thread(s))", "",
                 f"Measured on {m.get('processor', '?')}, {m.get('cpus', '?')} CPUs, torch {m.get('torch', '?')}"
                 + (f", ONNX Runtime {m['onnxruntime']}" if m.get("onnxruntime") else "")
                 + (f", in {self.fit_s:.0f} s" if self.fit_s else "") + ".", "",
                 f"latency = {self.fixed_ms:.3f} ms + {self.ms_per_layer_ms:.3f} x ms of the convolutions timed "
                 f"alone + {self.ms_per_mmac:.4f} ms x MMACs outside them + {self.ms_per_mact:.4f} ms x M "
                 f"activations (per sample counts, batch {rt['batch_size']})", "",
                 "| network timed | ms of its convolutions alone | MMACs outside them | M activations | "
                 "ms measured | ms fitted | error |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in self.measurements:
            lines.append(f"| {r['shape']} | {r.get('layer_ms', 0.0):.3f} | {r['mmacs']:.3f} | {r['mact']:.4f} | "
                         f"{r['ms']:.3f} | {r['fitted_ms']:.3f} | {r['fitted_ms'] / r['ms'] - 1:+.1%} |")
        if self.curves:
            lines += ["", "Each convolution timed alone (ms per batch) at output widths (the input as in the "
                          "network) and at input widths (the output as in the network):", "",
                      "| convolution | layers | ms at output widths | ms at input widths |", "| --- | ---: | --- | --- |"]
            for key, c in self.curves.items():
                conv, names = c["conv"], [n for n, k in self.layers.items() if k == key]
                label = (f"{conv['in']}->{conv['out']} {'x'.join(map(str, conv['kernel_size']))} "
                         f"stride {max(conv['stride'])} at {'x'.join(map(str, conv['input_hw']))}")
                lines.append(f"| {label} | {len(names)} | "
                             + ", ".join(f"{w}: {v:.2f}" for w, v in zip(c["out"], c["out_ms"], strict=True)) + " | "
                             + ", ".join(f"{w}: {v:.2f}" for w, v in zip(c["in"], c["in_ms"], strict=True)) + " |")
        if self.groups:
            lines += ["", "| group | ms of the network at widths |", "| --- | --- |"]
            for root, g in self.groups.items():
                lines.append(f"| {root} | " + ", ".join(f"{w}: {v:.2f}" for w, v in zip(g["widths"], g["ms"],
                                                                                        strict=True)) + " |")
        candidates = self.round_to.get("candidates", {})
        if candidates and "widths" in next(iter(candidates.values())):
            lines += ["", f"round_to: {', '.join(map(str, self.paying())) or 'no multiple'} paid (a multiple "
                          f"pays when, above it, widths between its multiples ran no faster than the multiple "
                          f"above them, within {CURVE_MARGIN:.0%}, in {CURVE_SHARE:.0%} of the curves' widths)", "",
                      "| multiple | widths off it on the curves | no faster than the multiple above | pays |",
                      "| ---: | ---: | ---: | --- |"]
            for r, c in candidates.items():
                lines.append(f"| {r} | {c['widths']} | {c['no_faster']} | {'yes' if c['pays'] else 'no'} |")
        elif candidates:
            lines += ["", f"round_to: {', '.join(map(str, self.paying())) or 'no multiple'} paid (a multiple "
                          "pays when one channel fewer in every group runs at least 2% slower)", "",
                      "| multiple | ms at multiples | ms one channel fewer | pays |", "| ---: | ---: | ---: | --- |"]
            for r, c in candidates.items():
                lines.append(f"| {r} | {c['aligned_ms']:.3f} | {c['one_less_ms']:.3f} | {'yes' if c['pays'] else 'no'} |")
        return "\n".join(lines) + "\n"


def _conv_layers(graph: NetworkGraph) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every ungrouped Conv2d the trace saw: name -> (the key of its shape, its shape)."""
    modules = {name: m for m, name in graph.names.items()}
    out = {}
    for name, (shape_in, shape_out) in graph.layer_shapes.items():
        m = modules[name]
        if not isinstance(m, nn.Conv2d) or m.groups != 1 or len(shape_in) != 4 or m.padding_mode != "zeros":
            continue
        conv = {"in": int(shape_in[1]), "out": int(shape_out[1]), "input_hw": [int(d) for d in shape_in[2:]],
                "output_hw": [int(d) for d in shape_out[2:]], "kernel_size": list(m.kernel_size),
                "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
                "dilation": list(m.dilation), "bias": m.bias is not None}
        out[name] = (json.dumps(conv, sort_keys=True), conv)
    return out


def _time_layers(convs: Mapping[str, dict[str, Any]], runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Each convolution timed alone on ``runtime`` (its fastest call, as many calls each as the
    slowest fits in :data:`LAYER_RUN_TIME` seconds: :func:`~pl_pruning.measure.time_runners`) at
    :data:`LAYER_SHARES` of its output width (the input as given) and of its input width (the
    output as given), all interleaved; its time as given is the faster of its two timings."""
    plan = []
    for key, conv in convs.items():
        for side in ("out", "in"):
            for w in sorted({max(1, round(s * conv[side])) for s in LAYER_SHARES}):
                plan.append((key, side, w))
    if not plan:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        runners = []
        for key, side, w in plan:
            conv = convs[key]
            ci, co = (conv["in"], w) if side == "out" else (w, conv["out"])
            module = nn.Conv2d(ci, co, tuple(conv["kernel_size"]), stride=tuple(conv["stride"]),
                               padding=conv["padding"] if isinstance(conv["padding"], str) else tuple(conv["padding"]),
                               dilation=tuple(conv["dilation"]), bias=conv["bias"]).eval()
            runners.append(runtime.runner(module, (ci, *conv["input_hw"]), Path(tmp), dynamo=False))
        ms = time_runners(runners, runtime.num_threads, LAYER_RUN_TIME, runtime.rounds, "min")
    out: dict[str, dict[str, Any]] = {key: {"conv": conv, "out": [], "out_ms": [], "in": [], "in_ms": []}
                                      for key, conv in convs.items()}
    for (key, side, w), t in zip(plan, ms, strict=True):
        out[key][side].append(w)
        out[key][f"{side}_ms"].append(round(t, 5))
    for curve in out.values():
        curve["ms"] = min(curve["out_ms"][-1], curve["in_ms"][-1])
        curve["out_ms"][-1] = curve["in_ms"][-1] = curve["ms"]
    return out


def _curve_alignment(curves: Mapping[str, Mapping[str, Any]], candidates: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per candidate ``r``, from the convolutions timed alone (both sides of every curve):
    ``widths``, how many widths above ``r`` off its multiples have the multiple above them
    timed too, ``no_faster``, how many of those ran no faster than it (within
    :data:`CURVE_MARGIN`), and ``pays``: at least three widths and :data:`CURVE_SHARE` of them."""
    out = {}
    for r in candidates:
        widths = no_faster = 0
        for c in curves.values():
            for side in ("out", "in"):
                at = dict(zip(c[side], c[f"{side}_ms"], strict=True))
                for w, ms in at.items():
                    above = -(-w // r) * r
                    if w > r and w % r and above in at:
                        widths += 1
                        no_faster += ms >= at[above] * (1 - CURVE_MARGIN)
        out[str(r)] = {"widths": widths, "no_faster": no_faster,
                       "pays": widths >= 3 and no_faster >= CURVE_SHARE * widths}
    return out


def _module_mmacs(module: nn.Module, shapes: tuple[tuple, tuple], in_width: float, out_width: float) -> float:
    """Millions of MACs of one sample through a Conv or Linear layer at these widths (a grouped
    convolution's groups taken to follow its width, as a depthwise one's do)."""
    shape_in, shape_out = shapes
    if isinstance(module, nn.Linear):
        return math.prod(shape_out[1:-1]) * in_width * out_width / 1e6
    per_group_in = in_width if module.groups == 1 else module.in_channels // module.groups
    return math.prod(shape_out[2:]) * math.prod(module.kernel_size) * per_group_in * out_width / 1e6


def _nonnegative_fit(features: Sequence[Sequence[float]], ms: Sequence[float]) -> tuple[float, ...]:
    """The fixed cost and one cost per feature, all >= 0, minimising the squared relative error."""
    import numpy as np
    from scipy.optimize import nnls

    y = np.asarray(ms, dtype=float)
    x = np.asarray([[1.0, *f] for f in features]) / y[:, None]  # relative: small networks count alike
    coef, _ = nnls(x, np.ones_like(y))
    return tuple(float(c) for c in coef)


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> list[int]:
    if input_shape is not None:
        return [int(d) for d in input_shape]
    example = getattr(model, "example_input_array", None)
    if not isinstance(example, torch.Tensor):
        raise PlPruningError("a latency table needs the input shape of one sample: give input_shape, or set "
                             "example_input_array on the module")
    return list(example.shape[1:])


def _alignment_shapes(reference: Mapping[str, int],
                      candidates: Sequence[int]) -> dict[int, tuple[dict[str, int], dict[str, int]]]:
    """Per candidate ``r``: every group at least ``r`` wide at the largest multiple of ``r``
    at most half its width (at least ``r``), and the same with one channel fewer in each
    (narrower groups stay as they are)."""
    out = {}
    for r in candidates:
        widths = {root: max(r, (c // 2) // r * r) for root, c in reference.items() if c >= r}
        if widths:
            out[r] = (widths, {root: w - 1 for root, w in widths.items()})
    return out


def relative_error(predicted: float | None, measured: float | None) -> float | None:
    """``predicted / measured - 1`` (None when either is missing)."""
    if predicted is None or measured is None or not measured:
        return None
    return predicted / measured - 1


# --------------------------------------------------------------------------- a run's model


class LatencyModel:
    """What a pruning run knows of latency: its table and, when the table was measured on
    this machine, the network as the fit found it. Every network the run cuts is then timed
    side by side with that one and its latency is the ratio of the two times the fit's
    ``reference_ms``: a machine's load slows both alike, so a re-check compares with the
    table and with the target (a share of that same reference). A table loaded from a file
    may describe another machine: the run plans from its predictions only.

    A run resumed from a checkpoint times against its accepted network instead
    (``reference`` and its latency ``reference_ms``).

    Build it with :meth:`build` from the controller's ``latency`` settings: the
    :class:`Runtime` fields, ``table`` (the path of a saved table to use instead of
    measuring) and ``save_table`` (where to write the table measured here).
    """

    SETTINGS = ("table", "save_table")

    def __init__(self, table: LatencyTable, reference: nn.Module | None = None,
                 reference_ms: float | None = None) -> None:
        self.table, self.runtime = table, Runtime.of(table.runtime)
        self.reference_ms = table.reference_ms if reference_ms is None else reference_ms
        self.readings: list[float] = []  # the last measure's readings (three when the first was off)
        self._folder = tempfile.TemporaryDirectory() if reference is not None else None
        self._reference = (self.runtime.runner(reference, table.input_shape, Path(self._folder.name))
                           if reference is not None else None)

    @property
    def measured_here(self) -> bool:
        return self._reference is not None

    @staticmethod
    def split(settings: Mapping[str, Any] | None) -> tuple[Runtime, dict[str, Any]]:
        """The :class:`Runtime` and the other settings (``table``, ``save_table``), checked."""
        values = dict(settings or {})
        extra = {k: values.pop(k) for k in LatencyModel.SETTINGS if k in values}
        for key, value in extra.items():
            if value is not None and not isinstance(value, (str, Path)):
                raise PlPruningError(f"latency.{key} must be a file path or None, got {value!r}")
        return Runtime.of(values), extra

    @classmethod
    def build(cls, module: nn.Module, settings: Mapping[str, Any] | None,
              ignored_layers: Sequence[str] = ()) -> LatencyModel:
        runtime, extra = cls.split(settings)
        shape = _input_shape(module, None)
        if extra.get("table"):
            table = LatencyTable.load(extra["table"])
            table.check_input(shape)
            return cls(table)
        table = LatencyTable.fit(module, runtime, input_shape=shape, ignored_layers=ignored_layers)
        if extra.get("save_table"):
            table.save(extra["save_table"])
        return cls(table, reference=module)

    def measure(self, module: nn.Module, expected: float | None = None, before: float | None = None) -> float | None:
        """The network's latency on the table's runtime, timed side by side with the fit's
        network (None: the table is of another machine). A reading more than
        :data:`RETIME_SHARE` off ``expected`` (the model's prediction), or not under ``before``
        (the latency of the network a cut was made from), is timed twice more and the median of
        the three stands: on a loaded machine one side of a side-by-side timing can be slowed
        throughout, and a cut judged on such a reading is rolled back (past the target, or as no
        faster), or ends the run, for nothing. ``readings`` keeps the last call's readings."""
        self.readings = []
        if self._reference is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            runner = self.runtime.runner(module, self.table.input_shape, Path(tmp))

            def reading() -> float:
                ref, now = self.runtime.time([self._reference, runner])
                return now / ref * self.reference_ms

            first = reading()
            self.readings = [first]
            if ((expected is not None and abs(first / expected - 1) > RETIME_SHARE)
                    or (before is not None and first >= before)):
                self.readings += [reading(), reading()]
        return statistics.median(self.readings)
