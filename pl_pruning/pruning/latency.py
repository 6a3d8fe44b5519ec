"""The latency model: how long a network runs on a named runtime, measured there rather
than assumed from MACs, and what each prunable group's filters cost in it.

MACs leave out what a runtime spends outside multiply-accumulates: BatchNorm, ReLU and
pooling read and write every activation, and a layer has a fixed overhead, so a network
with 3x fewer MACs may run 1.3x or 2.3x faster depending on where the filters went and on
the runtime. A :class:`LatencyTable` is measured once per run on the runtime the network
will be deployed on (:class:`Runtime`: eager PyTorch or ONNX Runtime on the CPU, a batch
size and a thread count, the app's ``measure`` settings):

* the whole network is timed at a few widths (every group at ``scales`` of its width, and
  two shapes that cut alternate groups, so that the MACs and the activations do not move
  together), all timed interleaved, each the fastest of its runs
  (:func:`pl_pruning.measure.interleaved_latency`; on a shared machine other jobs only add
  time);
* a least-squares fit with non-negative coefficients gives the runtime's cost of one
  MAC, of one activation element (a conv's output read and written by the BatchNorm,
  activation and pooling after it) and its fixed cost: a network's latency is
  ``fixed_ms + ms_per_mmac * MACs + ms_per_mact * activations`` (per batch; MACs and
  activations per sample, in millions), counted from the network's own trace
  (:class:`~pl_pruning.structure.graph.NetworkGraph`), so the coupling of a group with the
  layers that read it is exact;
* what one filter of a group costs is then ``ms_per_mmac`` times its MACs
  (THE :attr:`~pl_pruning.structure.graph.NetworkGraph.macs_per_filter`) plus
  ``ms_per_mact`` times its output map, and each group's latency as a function of its
  width is tabulated in the table (``groups``) for reading;
* which channel counts run faster on that runtime (``round_to``): for each candidate ``r``,
  the network with every group at a multiple of ``r`` against the one with a channel fewer
  in every group; ``r`` pays when removing that channel makes the network slower (by 2%
  at least, more than the timing's noise). ``round_to="auto"`` takes the smallest that pays
  and is no coarser than one layer-wise step of the narrowest group
  (:meth:`LatencyTable.multiple`): it keeps the runtime's fast path at the finest steps (at
  16, a 16-wide group could not be cut and a 32-wide one only halved: a ResNet-20 on ONNX
  Runtime stopped at 75% of its latency against a 58% target, and on eager PyTorch, where
  only 16 paid, at 83% against 37%).

Why not time each group alone at a few widths: cutting one group of VGG-16 changes the
whole network's time by a few percent, less than the noise of a shared machine (measured:
a group at a quarter of its width timed slower than the full network); the fit above
uses changes of the whole network, and a run re-checks every prediction against a real
measurement and plans from the measurement (the prediction's error goes in the report).

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
from pl_pruning.pruning.surgery import prune_filters
from pl_pruning.structure.graph import NetworkGraph
from pl_pruning.validate import check_choice, check_int, check_number

__all__ = ["FORMAT", "LatencyTable", "Runtime", "TargetLatency", "parse_target_latency", "relative_error",
           "with_widths"]

FORMAT = 1  # the table's JSON format
SCALES = (1.0, 0.8, 0.6, 0.45, 0.3, 0.2)  # uniform widths timed, as shares of every group's width
ROUND_CANDIDATES = (4, 8, 16)
TABULATED = (0.25, 0.5, 0.75, 1.0)  # widths each group's latency is tabulated at, for reading
ALIGNMENT_MARGIN = 1.02  # a multiple pays when one channel fewer runs at least 2% slower (not noise)


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
    interleaved rounds, its latency the fastest run (``statistic="min"``, the default: on a
    shared machine other jobs only ever add time) or the median over rounds. On eager
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
    min_run_time: float = 0.5
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

    def runner(self, model: nn.Module, input_shape: Sequence[int], folder: Path) -> Callable[[], object]:
        """A call that runs a CPU copy of ``model`` (without hooks) on this runtime."""
        x = torch.zeros(self.batch_size, *input_shape)
        return latency_runner(private_copy(model).cpu(), x, self.name, self.num_threads, folder,
                              memory_format=self.memory_format)

    def time(self, runners: Sequence[Callable[[], object]]) -> list[float]:
        """Milliseconds per batch of each runner, interleaved."""
        return time_runners(runners, self.num_threads, self.min_run_time, self.rounds, self.statistic)


def _machine() -> dict[str, Any]:
    out = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
           "torch": torch.__version__}
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
        fixed_ms, ms_per_mmac, ms_per_mact: the fitted costs (per batch): fixed, per
            million MACs of a sample, per million activation elements of a sample.
        measurements: the networks timed: ``{"shape", "mmacs", "mact", "ms", "fitted_ms"}`` each.
        reference_ms: the network as given, timed (``measurements[0]``).
        groups: group root -> ``{"widths": [...], "ms": [...]}``: the whole network's
            predicted latency with that group at each width (the others as given).
        round_to: ``{"candidates": {r: {"aligned_ms", "one_less_ms", "pays"}}}`` (what
            :meth:`multiple` chooses from).
        machine: where it was measured (platform, CPUs, torch and ONNX Runtime versions).
        fit_s: seconds the fit took.
    """

    runtime: dict[str, Any]
    input_shape: list[int]
    fixed_ms: float
    ms_per_mmac: float
    ms_per_mact: float
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
            scales: Sequence[float] = SCALES, round_candidates: Sequence[int] = ROUND_CANDIDATES) -> LatencyTable:
        """Measure ``model`` (not changed) on ``runtime`` and fit the costs.

        Args:
            model: the network (or a LightningModule around it).
            runtime: a :class:`Runtime` or its fields (default: eager, batch 64, 1 thread).
            input_shape: one sample's shape (default: the model's ``example_input_array``).
            ignored_layers: as the run's: their groups keep their width.
            scales: the uniform widths timed, shares in ``(0, 1]``, at least two.
            round_candidates: channel multiples tried for ``round_to`` (empty: none tried).

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
        aligned = _alignment_shapes(reference, round_candidates)
        nets = [with_widths(model, widths, input_shape) for _, widths in shapes]
        nets += [with_widths(model, widths, input_shape) for pair in aligned.values() for widths in pair]
        ms = runtime.measure(nets, input_shape)
        features = [counts(_graph(net, input_shape)) for net in nets[:len(shapes)]]
        for net in nets:
            NetworkGraph.forget(net)
        fixed, per_mmac, per_mact = _nonnegative_fit(features, ms[:len(shapes)])
        measurements = [{"shape": name, "mmacs": round(f[0], 4), "mact": round(f[1], 4), "ms": round(t, 4),
                         "fitted_ms": round(fixed + per_mmac * f[0] + per_mact * f[1], 4)}
                        for (name, _), f, t in zip(shapes, features, ms, strict=False)]
        it = iter(ms[len(shapes):])
        candidates = {}
        for r in aligned:
            a, b = next(it), next(it)
            candidates[str(r)] = {"aligned_ms": round(a, 4), "one_less_ms": round(b, 4), 
                                  "pays": b >= a * ALIGNMENT_MARGIN}
        table = cls(runtime=asdict(runtime), input_shape=list(input_shape), fixed_ms=fixed, ms_per_mmac=per_mmac,
                    ms_per_mact=per_mact, measurements=measurements,
                    reference_ms=measurements[0]["ms"] if scales[0] == 1 else None,
                    round_to={"candidates": candidates},
                    machine=_machine())
        table.groups = table.tabulate(graph)
        table.fit_s = round(time.perf_counter() - start, 2)
        return table

    # ------------------------------------------------------------------ reading

    def paying(self) -> list[int]:
        """The channel multiples that ran faster on this runtime, smallest first."""
        return sorted(int(r) for r, c in self.round_to.get("candidates", {}).items() if c["pays"])

    def multiple(self, step: float) -> int | None:
        """The multiple ``round_to="auto"`` takes: the smallest that pays and is no coarser than
        one ``step`` (a share of a group) of the narrowest group the table measured; a coarser
        one would make every step on that group larger than it asks, or impossible. None: no
        multiple pays at that granularity."""
        fits = [r for r in self.paying() if r <= step * (self.narrowest() or math.inf)]
        return fits[0] if fits else None

    def narrowest(self) -> int | None:
        """The width of the narrowest group the table measured (None: it tabulated none)."""
        return min((int(g["widths"][-1]) for g in self.groups.values()), default=None)

    def predict(self, graph: NetworkGraph) -> float:
        """Milliseconds per batch of the network ``graph`` describes."""
        mmacs, mact = counts(graph)
        return self.fixed_ms + self.ms_per_mmac * mmacs + self.ms_per_mact * mact

    def per_filter(self, graph: NetworkGraph) -> dict[str, float]:
        """Milliseconds one filter of each layer costs (its MACs, THE
        :attr:`~pl_pruning.structure.graph.NetworkGraph.macs_per_filter`, and its output map),
        for every layer ``graph.macs_per_filter`` names."""
        hw = {name: h * w for name, (h, w) in graph.output_hw.items()}
        return {name: self.ms_per_mmac * macs / 1e6 + self.ms_per_mact * hw.get(name, 1) / 1e6
                for name, macs in graph.macs_per_filter.items()}

    def tabulate(self, graph: NetworkGraph, shares: Sequence[float] = TABULATED) -> dict[str, dict[str, list[float]]]:
        """Each group's latency as a function of its width (the others as in ``graph``):
        ``{root: {"widths": [...], "ms": [...]}}``, the whole network's predicted ms."""
        base, cost = self.predict(graph), self.per_filter(graph)
        out = {}
        for group in graph.groups:
            per = sum(cost.get(c, 0.0) for c in group.convs)
            widths = sorted({max(1, round(s * group.channels)) for s in shares})
            out[group.root] = {"widths": widths,
                               "ms": [round(base - per * (group.channels - w), 4) for w in widths]}
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
        if not isinstance(data, Mapping) or data.get("format") != FORMAT or "ms_per_mmac" not in data:
            raise PlPruningError(f"not a latency table of format {FORMAT} (format "
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
                 f"latency = {self.fixed_ms:.3f} ms + {self.ms_per_mmac:.4f} ms x MMACs + "
                 f"{self.ms_per_mact:.4f} ms x M activations (per sample counts, batch {rt['batch_size']})", "",
                 "| network timed | MMACs | M activations | ms measured | ms fitted | error |",
                 "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in self.measurements:
            lines.append(f"| {r['shape']} | {r['mmacs']:.3f} | {r['mact']:.4f} | {r['ms']:.3f} | "
                         f"{r['fitted_ms']:.3f} | {r['fitted_ms'] / r['ms'] - 1:+.1%} |")
        if self.groups:
            lines += ["", "| group | ms of the network at widths |", "| --- | --- |"]
            for root, g in self.groups.items():
                lines.append(f"| {root} | " + ", ".join(f"{w}: {v:.2f}" for w, v in zip(g["widths"], g["ms"],
                                                                                        strict=True)) + " |")
        if self.round_to.get("candidates"):
            lines += ["", f"round_to: {', '.join(map(str, self.paying())) or 'no multiple'} paid (a multiple "
                          "pays when one channel fewer in every group runs at least 2% slower)", "",
                      "| multiple | ms at multiples | ms one channel fewer | pays |", "| ---: | ---: | ---: | --- |"]
            for r, c in self.round_to["candidates"].items():
                lines.append(f"| {r} | {c['aligned_ms']:.3f} | {c['one_less_ms']:.3f} | {'yes' if c['pays'] else 'no'} |")
        return "\n".join(lines) + "\n"


def _nonnegative_fit(features: Sequence[tuple[float, float]], ms: Sequence[float]) -> tuple[float, float, float]:
    """``fixed, per_mmac, per_mact`` >= 0 minimising the squared relative error."""
    import numpy as np
    from scipy.optimize import nnls

    y = np.asarray(ms, dtype=float)
    x = np.asarray([[1.0, m, a] for m, a in features]) / y[:, None]  # relative: small networks count alike
    coef, _ = nnls(x, np.ones_like(y))
    return float(coef[0]), float(coef[1]), float(coef[2])


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

    def measure(self, module: nn.Module) -> float | None:
        """The network's latency on the table's runtime, timed side by side with the fit's
        network (None: the table is of another machine)."""
        if self._reference is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            ref, now = self.runtime.time([self._reference, self.runtime.runner(module, self.table.input_shape,
                                                                               Path(tmp))])
        return now / ref * self.reference_ms
