r"""The collection engine: per-filter activation statistics from forward hooks, no Lightning.

:class:`StatisticsCollector` reads, per sample, each filter's **pooled activation** ``A``:
the mean over H x W (a float32 sum divided by H*W) of the feature map at the *tap point*,
which is after the BatchNorm and activation that follow the convolution where there are
such, else the convolution's output (rule and fallbacks in :mod:`pl_pruning.statistics.taps`).

The statistics are streaming and bounded by filters x bins x classes: a joint histogram of
``A`` (``num_bins`` bins) and the class ``Y`` per filter, the sum of ``A`` (mean
activation) and the number of exactly-zero elements of the tapped map (APoZ, counted over
every element N x H x W, not on the pooled value).

**Bin edges.** Per filter, ``num_bins`` equal-width bins from the minimum to the maximum
of ``A`` over a calibration set: the first ``calibration_batches`` batches of the epoch on
every rank, and more until every class has at least half its balanced share of them
(``calibration_batches x batch / classes / 2`` samples), so that a loader sorted by class
still calibrates on every class; at most :data:`CALIBRATION_CAP` times
``calibration_batches`` batches (then a warning names the classes missing). The range is
reduced across ranks with min/max; the class counts are summed, so every rank stops at the
same batch. Those batches are then counted with the fixed edges like all later ones (a
value outside the range falls into the first or last bin), so given the calibration set
the result does not depend on the order of the batches.

**DDP.** Every state is a torchmetrics state (:mod:`pl_pruning.statistics.states`), reduced
with ``sum``, ``min`` or ``max`` when the epoch finishes (and the range when calibration
ends), so ranks that each see part of the data end with the statistics of one process
that sees all of it. Every rank must therefore count the same number of batches.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pl_pruning.errors import PlPruningError, choice_error
from pl_pruning.statistics.epoch import Epoch, check_labels, segments
from pl_pruning.statistics.result import CollectedStatistics
from pl_pruning.statistics.taps import TapPoint, conv_layers, no_conv_error, plan_taps
from pl_pruning.structure.batches import logits_of
from pl_pruning.validate import check_choice, check_int, check_names

if TYPE_CHECKING:
    from pl_pruning.structure.graph import NetworkGraph

log = logging.getLogger(__name__)

CONDITIONS = ("label", "prediction")
CALIBRATION_CAP = 16  # calibration holds back at most this many times calibration_batches batches


def check_options(num_bins: Any, condition_on: Any, calibration_batches: Any, num_classes: Any,
                  output_module: Any, cpu_threads: Any) -> None:
    """Validate the collector's settings (shared with the callback that wraps it); a bad
    one raises :class:`~pl_pruning.errors.PlPruningError` naming it."""
    check_int("num_bins", num_bins, 2)
    check_choice("condition_on", condition_on, CONDITIONS)
    check_int("calibration_batches", calibration_batches, 1)
    check_int("num_classes", num_classes, 1, optional=True)
    check_int("cpu_threads", cpu_threads, 1, optional=True)
    if not isinstance(output_module, str):
        raise PlPruningError(f"output_module must be a module name (str), got {output_module!r}")


class StatisticsCollector:
    r"""Collect per-filter activation statistics of ``model``'s convolutions (see the module
    docstring for what is counted and how).

    One collection is :meth:`start`, then per batch :meth:`begin_batch` / the forward pass /
    :meth:`end_batch` (or ``with collector.batch(labels): model(x)``), then :meth:`finish`.
    Hooks are attached by :meth:`start` and removed by :meth:`finish` or :meth:`stop`, so
    they cost nothing between collections and survive surgery (module names stay).

    Args:
        model: the network; layer names are as in ``model.named_modules()``.
        layers: names of the ``nn.Conv2d`` layers to read; ``None``: every ``nn.Conv2d``.
        num_bins: bins per filter, >= 2.
        num_classes: number of classes; ``None``: the width of the logits of ``output_module``.
        calibration_batches: batches that fix the bin edges (see above), >= 1.
        condition_on: ``"label"`` (labels given to :meth:`begin_batch`) or ``"prediction"``
            (the predicted class of ``output_module``'s logits, for data without labels).
        output_module: the module whose output holds the class logits (``""``: ``model``).
        example_inputs: an input for ``model`` (one sample is enough) to trace its graph,
            which tells the BatchNorm after each convolution; may instead be given to
            :meth:`start`.
        cpu_threads: torch threads for the collector's own operations on CPU tensors (the
            setting is restored right after; ``None`` leaves it alone). They are memory-bound
            reductions that gain little from more threads, and on an oversubscribed machine
            every parallel region can wait a scheduler tick.

    Raises:
        PlPruningError: bad settings (see :func:`check_options`), a model without
            ``nn.Conv2d``, a name in ``layers`` that is not one; during collection, labels
            that are missing or outside ``0..num_classes-1``, layers that produce no output.

    Example::

        >>> import torch
        >>> from pl_pruning import build_model
        >>> from pl_pruning.scoring import get_criterion
        >>> model = build_model("small_cnn", in_channels=1, width=0.5).eval()
        >>> x, y = torch.randn(64, 1, 8, 8), torch.arange(64) % 10
        >>> collector = StatisticsCollector(model, num_bins=16, example_inputs=x[:1])
        >>> collector.start()
        >>> with torch.no_grad():
        ...     for xb, yb in zip(x.split(16), y.split(16)):
        ...         with collector.batch(yb):
        ...             _ = model(xb)
        >>> stats = collector.finish()  # {"features.0": LayerStatistics, ...}
        >>> int(stats["features.0"].counts[0].sum())
        64
        >>> scores = get_criterion("conditional_entropy")(stats, normalize="none")
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, *, num_bins: int = 32,
                 num_classes: int | None = None, calibration_batches: int = 8,
                 condition_on: str = "label", output_module: str = "",
                 example_inputs: Any = None, cpu_threads: int | None = 1) -> None:
        check_options(num_bins, condition_on, calibration_batches, num_classes, output_module,
                      cpu_threads)
        convs = dict(conv_layers(model))
        if not convs:
            raise no_conv_error(model)
        if layers is not None:
            for name in check_names("layers", layers, allow_empty=False):
                if name not in convs:
                    raise choice_error("layer (an nn.Conv2d of the model)", name, convs)
        self.model, self.layer_names = model, list(layers) if layers is not None else list(convs)
        self.num_bins, self.num_classes = int(num_bins), num_classes
        self.calibration_batches, self.condition_on = int(calibration_batches), condition_on
        self.output_module, self.example_inputs, self.cpu_threads = output_module, example_inputs, cpu_threads
        self.taps: dict[str, TapPoint] | None = None
        self._epoch: Epoch | None = None

    # ------------------------------------------------------------------ one collection

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`finish` / :meth:`stop`."""
        return self._epoch is not None

    @property
    def batches_seen(self) -> int:
        """Batches counted since :meth:`start`."""
        return self._epoch.batches_seen if self._epoch is not None else 0

    def graph(self, example_inputs: Any = None) -> NetworkGraph:
        """The model's :class:`~pl_pruning.structure.graph.NetworkGraph` (traced once per
        architecture), with ``example_inputs`` or else the example given before.

        Raises:
            PlPruningError: no example input was ever given.
        """
        from pl_pruning.structure.graph import NetworkGraph

        example = example_inputs if example_inputs is not None else self.example_inputs
        if example is None:
            raise PlPruningError(
                "the network graph is traced with an example input: give example_inputs (the "
                "model's example_input_array, or one batch), or collect statistics first")
        self.example_inputs = example
        return NetworkGraph.of(self.model, example)

    def plan(self, example_inputs: Any = None) -> dict[str, TapPoint]:
        """Find the tap points (once: the topology survives surgery) and return them."""
        if self.taps is None:
            batchnorm_of = self.graph(example_inputs).batchnorm_of
            self.taps = plan_taps(self.model, self.layer_names, batchnorm_of)
            fallbacks = [n for n, t in self.taps.items() if t.how != "fx"]
            if fallbacks:
                log.info(f"torch.fx could not trace {len(fallbacks)} layer(s) ({fallbacks[:3]}...); "
                         "tap points from nn.Sequential siblings")
        return self.taps

    def start(self, *, num_classes: int | None = None, example_inputs: Any = None) -> None:
        """Begin a collection: fresh state for the current channel counts, hooks attached.

        Args:
            num_classes: overrides the constructor's ``num_classes`` for this collection.
            example_inputs: see the constructor (used the first time only).
        """
        self.stop()
        taps = self.plan(example_inputs)
        modules = {}
        for name in taps:
            try:
                modules[name] = self.model.get_submodule(name)
            except AttributeError:
                raise PlPruningError(f"layer {name!r} is no longer in the model") from None
        k = num_classes if num_classes is not None else self.num_classes
        device = next(self.model.parameters()).device
        ep = Epoch(list(modules), [int(m.out_channels) for m in modules.values()], device, k)
        self._epoch = ep
        for name, tap in taps.items():
            hook = self._make_hook(ep, name, tap.transform(self.model), tap.nonnegative)
            ep.handles.append(self.model.get_submodule(tap.module).register_forward_hook(hook))
        if self.condition_on == "prediction" or k is None:
            try:
                out = self.model.get_submodule(self.output_module) if self.output_module else self.model
            except AttributeError:
                names = [n for n, _ in self.model.named_modules() if n]
                raise choice_error("output_module", self.output_module, ["", *names]) from None
            ep.handles.append(out.register_forward_hook(self._make_output_hook(ep)))

    def begin_batch(self, labels: Tensor | None = None) -> None:
        """Record the next forward pass; ``labels [N]`` (integers) with ``condition_on="label"``."""
        ep = self._require_epoch()
        if self.condition_on == "label" and not isinstance(labels, Tensor):
            raise PlPruningError("condition_on='label' needs the batch's class labels: "
                                 "begin_batch(labels)")
        ep.recording = True
        ep.pooled = {name: [] for name in ep.names}
        ep.nonzero = {name: [] for name in ep.names}
        ep.outputs = []
        ep.labels = labels if self.condition_on == "label" else None

    def end_batch(self) -> bool:
        """Count what the forward passes since :meth:`begin_batch` produced; False when the
        network did not run (nothing to count)."""
        ep = self._require_epoch()
        if not ep.recording:
            return False
        ep.recording = False
        seen = [name for name in ep.names if ep.pooled[name]]
        if not seen:
            return False
        if len(seen) < len(ep.names):
            missing = [n for n in ep.names if n not in seen]
            raise PlPruningError(
                f"layers {missing} produced no output in batch {ep.batches_seen}; "
                "leave them out of the layers to read")
        with self._threads(ep.nonzero_acc):
            self._count_batch(ep)
        return True

    @contextlib.contextmanager
    def batch(self, labels: Tensor | None = None) -> Iterator[None]:
        """``with collector.batch(labels): model(x)``: :meth:`begin_batch`, then :meth:`end_batch`."""
        self.begin_batch(labels)
        try:
            yield
        except BaseException:
            self._require_epoch().recording = False
            raise
        self.end_batch()

    def finish(self) -> CollectedStatistics | None:
        """End the collection: hooks removed, states synchronised across ranks (a collective
        under DDP), statistics returned; None when no sample was counted."""
        ep = self._require_epoch()
        self.stop()
        if ep.histogram is None:  # not a single batch counted on this rank
            if ep.num_classes is None:
                return None
            ep.allocate(ep.num_classes, self.num_bins)
        with self._threads(ep.nonzero_acc):
            if not ep.calibrated:
                self._calibrate(ep)
            elements = torch.tensor([float(ep.elements[n]) for n in ep.names], dtype=torch.float64)
            ep.zero_count.update(ep.nonzero_acc, elements.repeat_interleave(torch.tensor(ep.channels)))
            state = {**ep.histogram.compute(), **ep.zero_count.compute()}  # synced
        state = {k: v.detach().cpu() for k, v in state.items()}
        if state["counts"][0].sum() == 0:
            return None
        return CollectedStatistics(
            names=ep.names, channels=ep.channels, offsets=ep.offsets, counts=state["counts"],
            activation_sum=state["activation_sum"], zeros=state["zeros"],
            elements=state["elements"], low=ep.low.cpu(), high=ep.high.cpu())

    def stop(self) -> None:
        """Remove the hooks and drop the running collection, if any (nothing is synchronised)."""
        if self._epoch is not None:
            for handle in self._epoch.handles:
                handle.remove()
            self._epoch = None

    # ------------------------------------------------------------------ internals

    def _require_epoch(self) -> Epoch:
        if self._epoch is None:
            raise RuntimeError("no collection is running: call start() first")
        return self._epoch

    @contextlib.contextmanager
    def _threads(self, like: Tensor) -> Iterator[None]:
        """Run the collector's own CPU operations on ``cpu_threads`` threads."""
        previous = torch.get_num_threads()
        if self.cpu_threads is None or like.device.type != "cpu" or previous == self.cpu_threads:
            yield
            return
        torch.set_num_threads(self.cpu_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _make_hook(self, ep: Epoch, name: str, transform, nonnegative: bool):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not ep.recording:
                return
            x = output if transform is None else transform(output)
            if not isinstance(x, Tensor) or x.dim() != 4:
                raise PlPruningError(
                    f"layer {name!r}: expected a 4-d (N, C, H, W) output at the tap "
                    f"{self.taps[name].module!r}, got {type(x).__name__} "
                    f"{tuple(x.shape) if isinstance(x, Tensor) else ''}")
            x = x.detach()
            area = x.shape[2] * x.shape[3]
            # Few, large operations here; the division by H*W, the zero counts' reduction and
            # all bookkeeping happen once per batch for all layers together.
            with self._threads(x):
                ep.pooled[name].append((x.sum((2, 3), dtype=torch.float32), area))
                ep.nonzero[name].append(ep.count_nonzero(x, nonnegative))
        return hook

    def _make_output_hook(self, ep: Epoch):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if ep.recording:
                ep.outputs.append(logits_of(output, self.output_module).detach())
        return hook

    def _count_batch(self, ep: Epoch) -> None:
        values = ep.take_batch()
        labels = self._batch_labels(ep)
        if ep.histogram is None:
            ep.allocate(self._num_classes_from_outputs(ep), self.num_bins)
        check_labels(labels, ep.num_classes)
        pieces = segments(ep, values, labels)
        ep.batches_seen += 1
        if ep.calibrated:
            for start, v, y in pieces:
                ep.histogram.update(v, y, start)
        else:
            for start, v, _ in pieces:
                ep.range.update(v, start)
            ep.buffer.extend(pieces)
            if self._classes_covered(ep, labels):
                self._calibrate(ep)

    def _classes_covered(self, ep: Epoch, labels: Tensor) -> bool:
        """Whether the calibration batches so far hold every class's share (summed over
        ranks; the same answer on every rank), or the cap is reached."""
        counts = torch.bincount(labels.long(), minlength=ep.num_classes).to(torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        ep.class_counts = counts if ep.class_counts is None else ep.class_counts + counts
        if ep.batches_seen < self.calibration_batches:
            return False
        need = max(1.0, float(ep.class_counts.sum()) / ep.num_classes / 2)
        if bool((ep.class_counts >= need).all()):
            return True
        if ep.batches_seen >= CALIBRATION_CAP * self.calibration_batches:
            missing = (ep.class_counts < need).nonzero().flatten().tolist()
            log.warning(f"bin ranges calibrated on {ep.batches_seen} batches in which classes {missing[:10]} "
                        "have fewer samples than their share: is the loader sorted by class? Shuffle it")
            return True
        return False

    def _calibrate(self, ep: Epoch) -> None:
        low, high = ep.range.compute()  # min / max across ranks
        ep.low, ep.high = low, high
        ep.histogram.set_edges(low, high)
        for start, v, y in ep.buffer:
            ep.histogram.update(v, y, start)
        ep.buffer.clear()
        ep.calibrated = True

    def _num_classes_from_outputs(self, ep: Epoch) -> int:
        if ep.num_classes is not None:
            return ep.num_classes
        if not ep.outputs:
            raise PlPruningError(
                "cannot tell the number of classes: set num_classes=..., give the datamodule a "
                "num_classes attribute, or set output_module to the module whose output holds "
                "the logits")
        return int(ep.outputs[0].shape[-1])

    def _batch_labels(self, ep: Epoch) -> Tensor:
        if self.condition_on == "label":
            return ep.labels
        if not ep.outputs:
            where = f"module {self.output_module!r}" if self.output_module else "the model"
            raise PlPruningError(
                f"condition_on='prediction' needs the model output, but {where} was not called "
                "in the batch; set output_module to the module that returns the logits")
        logits = torch.cat(ep.outputs) if len(ep.outputs) > 1 else ep.outputs[0]
        if ep.num_classes is not None and logits.shape[-1] != ep.num_classes:
            raise PlPruningError(
                f"the model output has {logits.shape[-1]} classes, num_classes is {ep.num_classes}")
        return logits.argmax(-1)


__all__ = ["CONDITIONS", "StatisticsCollector", "check_options"]
