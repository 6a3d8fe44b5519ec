r"""
Entropy statistics
^^^^^^^^^^^^^^^^^^

Collect per-filter activation statistics on validation batches and score every filter
(conditional entropy by default; see :mod:`pl_pruning.criteria`).

"""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.utilities.rank_zero import rank_prefixed_message, rank_zero_warn
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from pl_pruning.criteria import (
    CRITERIA,
    DEFAULT_CRITERION,
    DEFAULT_NORMALIZE,
    Criterion,
    LayerStatistics,
    check_normalize,
    compute_scores,
    conditional_entropy_from_counts,
    conv_layers,
    entropy_from_counts,
    get_criterion,
    mutual_information_from_counts,
    no_conv_error,
)
from pl_pruning.errors import PlPruningError, choice_error
from pl_pruning.stats_metric import ActivationRange, FilterHistogram
from pl_pruning.taps import TapPoint, plan_taps

log = logging.getLogger(__name__)

CONDITIONS = ("label", "prediction")
LABEL_KEYS = ("y", "label", "labels", "target", "targets")
LOG_PREFIX = "entropy_stats"
CSV_COLUMNS = ("layer", "filter", "entropy", "conditional_entropy", "mutual_information", "apoz",
               "mean_activation", "l1")
# zero counting goes through a scratch buffer of at most this many elements (16 MiB of
# float32), reused for every layer and batch: no large temporaries
SCRATCH_ELEMENTS = 1 << 22
# take_batch's key for every layer's pooled values side by side (not a module name)
FUSED = "\0all layers"


class EntropyStatistics(Callback):
    r"""Per-filter activation statistics of every prunable convolution, from validation data.

    During each validation epoch (never the sanity check, never training) forward hooks
    read, per sample, each filter's **pooled activation** ``A``: the mean over H x W (a
    float32 sum divided by H*W) of the feature map at the *tap point*, which is after the
    BatchNorm and activation that follow the convolution where there are such, else the
    convolution's output (in a ResNet block, ``conv2`` is read at ``bn2``'s output, before
    the residual addition and the block's final ReLU; the rule and its fallbacks are in
    :mod:`pl_pruning.taps`, the result in :attr:`taps`).

    The statistics are streaming and bounded by filters x bins x classes: a joint histogram
    of ``A`` (``num_bins`` bins) and the class ``Y`` per filter, the sum of ``A`` (mean
    activation) and the number of exactly-zero elements of the tapped map (APoZ, counted
    over every element N x H x W, not on the pooled value). Entropies are in nats.

    **Bin edges.** Per filter, ``num_bins`` equal-width bins from the minimum to the maximum
    of ``A`` over a calibration set: the first ``calibration_batches`` validation batches of
    the epoch on every rank, reduced across ranks with min/max (so under DDP it is the union
    of the ranks' first batches). Those batches are held back (bounded memory:
    ``calibration_batches x batch x filters`` floats), then counted with the fixed edges
    like all later batches; a value outside the range falls into the first or last bin. The
    histogram is a sum over samples, so given the calibration set the result does not
    depend on the order of the batches; with ``calibration_batches`` at least the number
    of validation batches the calibration set is the whole epoch and nothing depends on
    order. Edges are recomputed every epoch, so they always match the current weights.

    Under DDP every state is a torchmetrics state (``dist_reduce_fx="sum"``, ``"min"``,
    ``"max"``): ranks that each see half of the data end with the histograms of one process
    that sees all of it. Every rank must run the same number of validation batches
    (Lightning's ``DistributedSampler`` ensures it; note it pads by repeating samples when
    the data set does not divide by the number of ranks).

    The statistics are finalised in ``on_validation_epoch_end``, so other callbacks can use
    them from ``on_validation_end`` on. After surgery call :meth:`invalidate`; the next
    validation epoch allocates state for the new channel counts (hooks are attached at the
    start of every validation epoch and removed at its end, so they survive surgery and
    cost nothing during training).

    Args:
        num_bins: bins per filter, >= 2.
        condition_on: ``"label"`` (the batch's class labels; batches ``(inputs, labels)`` or
            dicts with a ``"y"``/``"label"``/``"target"`` key) or ``"prediction"`` (the
            model's predicted class, for calibration data without labels).
        max_batches: validation batches per rank that are counted (``None``: all).
        layers: names of the ``nn.Conv2d`` layers to read, relative to the LightningModule
            as in ``pl_module.named_modules()`` (e.g. ``"net.features.0"``); ``None``: every
            ``nn.Conv2d``.
        num_classes: number of classes; ``None`` reads ``num_classes`` from the datamodule,
            then the LightningModule's hyperparameters, then the width of the model output.
        calibration_batches: batches per rank that fix the bin edges (see above), >= 1.
        output_module: the module whose output holds the class logits (``""``: the
            LightningModule itself); used for ``condition_on="prediction"``.
        log_criterion: the criterion whose per-layer mean/min/max are logged after each
            epoch (plus a TensorBoard histogram per layer with a ``TensorBoardLogger``);
            ``None`` logs nothing.
        csv_path: if set, :meth:`write_csv` writes there after every epoch (global rank 0).
        save_statistics: keep the finished statistics in checkpoints (``state_dict``).
        cpu_threads: torch threads for the collector's own operations on CPU tensors (the
            setting is restored right after; ``None`` leaves it alone). They are memory-bound
            reductions that gain little from more threads, and on an oversubscribed machine
            (several DDP ranks per node, other jobs) every parallel region can wait a
            scheduler tick: one thread keeps the overhead small and predictable.

    Raises:
        PlPruningError: ``num_bins < 2``, an unknown ``condition_on`` or ``log_criterion``,
            ``max_batches`` or ``calibration_batches < 1``; at setup, a model without any
            ``nn.Conv2d`` or a name in ``layers`` that is not one; during validation,
            batches without integer labels while ``condition_on="label"``, or a label
            outside ``0..num_classes-1``.

    Example::

        >>> import lightning as L
        >>> from pl_pruning import ImageClassifier, build_model
        >>> from pl_pruning.callbacks import EntropyStatistics
        >>> from pl_pruning.data import DigitsDataModule
        >>> stats = EntropyStatistics(num_bins=16)
        >>> trainer = L.Trainer(callbacks=[stats], logger=False, enable_progress_bar=False)
        >>> model = ImageClassifier(build_model("small_cnn", in_channels=1))
        >>> _ = trainer.validate(model, DigitsDataModule(), verbose=False)
        >>> stats.has_statistics
        True
        >>> scores = stats.scores("conditional_entropy")  # {"net.features.0": tensor([...]), ...}
    """

    def __init__(self, num_bins: int = 32, condition_on: str = "label",
                 max_batches: int | None = None, layers: Sequence[str] | None = None,
                 num_classes: int | None = None, calibration_batches: int = 8,
                 output_module: str = "", log_criterion: str | None = DEFAULT_CRITERION,
                 csv_path: str | Path | None = None, save_statistics: bool = True,
                 cpu_threads: int | None = 1) -> None:
        super().__init__()
        if not _is_int(num_bins) or num_bins < 2:
            raise PlPruningError(f"num_bins must be an integer >= 2, got {num_bins!r}")
        if condition_on not in CONDITIONS:
            raise choice_error("condition_on", condition_on, CONDITIONS)
        if max_batches is not None and (not _is_int(max_batches) or max_batches < 1):
            raise PlPruningError(f"max_batches must be None or an integer >= 1, got {max_batches!r}")
        if not _is_int(calibration_batches) or calibration_batches < 1:
            raise PlPruningError(
                f"calibration_batches must be an integer >= 1, got {calibration_batches!r}")
        if num_classes is not None and (not _is_int(num_classes) or num_classes < 1):
            raise PlPruningError(f"num_classes must be None or an integer >= 1, got {num_classes!r}")
        if layers is not None:
            if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
                raise PlPruningError(
                    f"layers must be None or a list of module names, got {layers!r}")
            if len(layers) == 0:
                raise PlPruningError("layers must be None (every nn.Conv2d) or a non-empty list, got []")
        if log_criterion is not None and log_criterion not in CRITERIA:
            raise choice_error("log_criterion", log_criterion, [*CRITERIA, None])
        if cpu_threads is not None and (not _is_int(cpu_threads) or cpu_threads < 1):
            raise PlPruningError(f"cpu_threads must be None or an integer >= 1, got {cpu_threads!r}")
        if not isinstance(output_module, str):
            raise PlPruningError(f"output_module must be a module name (str), got {output_module!r}")
        self.num_bins = int(num_bins)
        self.condition_on = condition_on
        self.max_batches = max_batches
        self.layers = list(layers) if layers is not None else None
        self.num_classes = num_classes
        self.calibration_batches = int(calibration_batches)
        self.output_module = output_module
        self.log_criterion = log_criterion
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.save_statistics = save_statistics
        self.cpu_threads = cpu_threads
        #: set to False to skip collection (e.g. in epochs whose statistics nobody reads)
        self.enabled = True

        self._model: nn.Module | None = None
        self._taps: dict[str, TapPoint] = {}
        self._epoch: _EpochState | None = None
        self._result: _Result | None = None

    # ------------------------------------------------------------------ public API

    @property
    def state_key(self) -> str:
        return self._generate_state_key(num_bins=self.num_bins, condition_on=self.condition_on,
                                        layers=self.layers)

    @property
    def layer_names(self) -> list[str]:
        """The convolutions read, as named in ``pl_module.named_modules()``."""
        if self._taps:
            return list(self._taps)
        return list(self.layers or [])

    @property
    def taps(self) -> dict[str, TapPoint]:
        """Where each layer is read (module, kind, activation applied); see :mod:`pl_pruning.taps`."""
        return dict(self._taps)

    @property
    def has_statistics(self) -> bool:
        """True once a real validation epoch has filled the statistics of the current
        architecture (False after :meth:`invalidate` or when channel counts changed)."""
        result = self._result
        if result is None:
            return False
        if self._model is not None:
            for name, n in zip(result.names, result.channels, strict=True):
                try:
                    module = self._model.get_submodule(name)
                except AttributeError:
                    return False
                if getattr(module, "out_channels", None) != n:
                    return False
        return True

    def invalidate(self) -> None:
        """Mark the statistics stale (call after surgery); the next validation epoch
        collects them again for the new channel counts."""
        self._result = None
        if self._epoch is not None:
            self._epoch.discard = True

    def statistics(self) -> dict[str, LayerStatistics]:
        """``{layer: LayerStatistics}`` (CPU tensors) of the last finished epoch."""
        self._require_statistics()
        return self._result.layer_statistics()

    def scores(self, criterion: str | Criterion = DEFAULT_CRITERION,
               normalize: str = DEFAULT_NORMALIZE, layers: Sequence[str] | None = None,
               **criterion_options: Any) -> dict[str, Tensor]:
        """``{layer: CPU float Tensor[out_channels]}``, higher = keep.

        Args:
            criterion: a name in :data:`pl_pruning.criteria.CRITERIA` or a ``Criterion``.
            normalize: ``"none"``, ``"per-layer"`` (default) or ``"cost-aware"``; see
                :mod:`pl_pruning.criteria`.
            layers: a subset of :attr:`layer_names` (default: all).
            criterion_options: passed to the criterion (e.g. ``seed`` for ``"random"``).

        Data-free criteria (``l1``, ``random``) work without statistics, on the model this
        callback last saw.
        """
        crit = get_criterion(criterion, **criterion_options)
        check_normalize(normalize)
        names = self.layer_names
        if layers is not None:
            for name in layers:
                if name not in names:
                    raise choice_error("layer", name, names)
            names = list(layers)
        stats = None
        if crit.needs_data or normalize == "cost-aware":
            stats = self.statistics()
        elif self.has_statistics:
            stats = self._result.layer_statistics()
        modules = None
        if self._model is not None:
            modules = {n: self._model.get_submodule(n) for n in names}
        elif not crit.needs_data:
            raise PlPruningError(
                f"criterion {crit.name!r} needs the model, and this callback has not seen one "
                "yet; call the criterion with the model instead: get_criterion(name)(model)")
        return compute_scores(crit, names, modules, stats, normalize)

    def mean_activation(self) -> dict[str, Tensor]:
        """Per-filter mean of the pooled activation at the tap point (after BN and
        activation where they follow the convolution, *before* any pooling layer between
        this layer and the next), over the samples seen. For bias compensation."""
        return {name: s.mean_activation for name, s in self.statistics().items()}

    def bin_edges(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{layer: (low, high)}``: the per-filter range the bins span."""
        return {name: (s.low, s.high) for name, s in self.statistics().items()}

    def write_csv(self, path: str | Path) -> Path:
        """Write ``filter_stats.csv``-style rows: layer, filter, entropy, conditional entropy,
        mutual information, APoZ (fraction of zeros), mean activation, L1 norm (raw values,
        nats)."""
        stats = self.statistics()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for name, s in stats.items():
                marginal = s.counts.to(torch.float64).sum(-1)
                columns = [
                    entropy_from_counts(marginal), conditional_entropy_from_counts(s.counts),
                    mutual_information_from_counts(s.counts), s.zero_fraction, s.mean_activation,
                ]
                module = self._model.get_submodule(name) if self._model is not None else None
                l1 = (module.weight.detach().abs().flatten(1).sum(1).cpu() if module is not None
                      else torch.full((s.num_filters,), float("nan")))
                for f in range(s.num_filters):
                    writer.writerow([name, f, *(f"{float(c[f]):.8g}" for c in columns),
                                     f"{float(l1[f]):.8g}"])
        return path

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._prepare(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop_epoch()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._stop_epoch()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_epoch()
        if trainer.sanity_checking or not self.enabled:
            return
        if self._model is not pl_module or not self._taps:
            self._prepare(pl_module)
        modules = {}
        for name in self._taps:
            try:
                modules[name] = pl_module.get_submodule(name)
            except AttributeError:
                raise PlPruningError(f"layer {name!r} is no longer in the model") from None
        channels = [int(m.out_channels) for m in modules.values()]
        num_classes = self._known_num_classes(trainer, pl_module)
        ep = _EpochState(names=list(modules), channels=channels, device=pl_module.device,
                         num_classes=num_classes)
        self._epoch = ep
        for name, tap in self._taps.items():
            hook = self._make_hook(ep, name, tap.transform(pl_module), tap.nonnegative)
            ep.handles.append(pl_module.get_submodule(tap.module).register_forward_hook(hook))
        if self.condition_on == "prediction" or num_classes is None:
            try:
                out = pl_module.get_submodule(self.output_module) if self.output_module else pl_module
            except AttributeError:
                names = [n for n, _ in pl_module.named_modules() if n]
                raise choice_error("output_module", self.output_module, ["", *names]) from None
            ep.handles.append(out.register_forward_hook(self._make_output_hook(ep)))

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                  batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        ep = self._epoch
        if ep is None:
            return
        ep.recording = self.max_batches is None or ep.batches_seen < self.max_batches
        if not ep.recording:
            return
        ep.pooled = {name: [] for name in ep.names}
        ep.nonzero = {name: [] for name in ep.names}
        ep.outputs = []
        ep.labels = labels_from_batch(batch) if self.condition_on == "label" else None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        ep = self._epoch
        if ep is None or not ep.recording:
            return
        ep.recording = False
        seen = [name for name in ep.names if ep.pooled[name]]
        if not seen:  # the step did not run the network (nothing to count)
            return
        if len(seen) < len(ep.names):
            missing = [n for n in ep.names if n not in seen]
            raise PlPruningError(
                f"layers {missing} produced no output in validation batch {batch_idx}; "
                "exclude them with EntropyStatistics(layers=[...])")
        with self._threads(ep.nonzero_acc):
            self._count_batch(ep, batch_idx)

    def _count_batch(self, ep: _EpochState, batch_idx: int) -> None:
        values = ep.take_batch()
        labels = self._batch_labels(ep)
        if ep.histogram is None:
            ep.allocate(self._num_classes_from_outputs(ep), self.num_bins)
        self._check_labels(labels, ep.num_classes)
        segments = self._segments(ep, values, labels)
        ep.batches_seen += 1
        if ep.calibrated:
            for start, v, y in segments:
                ep.histogram.update(v, y, start)
        else:
            for start, v, _ in segments:
                ep.range.update(v, start)
            ep.buffer.extend(segments)
            if ep.batches_seen >= self.calibration_batches:
                self._calibrate(ep)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ep = self._epoch
        if ep is None:
            return
        for handle in ep.handles:
            handle.remove()
        ep.handles.clear()
        if ep.histogram is None:  # not a single batch counted on this rank
            if ep.num_classes is None:
                rank_zero_warn("EntropyStatistics: no validation batch was counted; no statistics")
                self._epoch = None
                return
            ep.allocate(ep.num_classes, self.num_bins)
        if not ep.calibrated:
            with self._threads(ep.nonzero_acc):
                self._calibrate(ep)
        elements = torch.tensor([float(ep.elements[n]) for n in ep.names], dtype=torch.float64)
        elements = elements.repeat_interleave(torch.tensor(ep.channels)).to(ep.histogram.elements)
        ep.histogram.elements += elements
        ep.histogram.zeros += elements - ep.nonzero_acc.to(ep.histogram.zeros)
        state = {k: v.detach().cpu() for k, v in ep.histogram.compute().items()}  # synced
        self._epoch = None
        if ep.discard:
            return
        if state["counts"][0].sum() == 0:
            rank_zero_warn("EntropyStatistics: no validation samples were counted; no statistics")
            return
        self._result = _Result(
            names=ep.names, channels=ep.channels, offsets=ep.offsets, counts=state["counts"],
            activation_sum=state["activation_sum"], zeros=state["zeros"],
            elements=state["elements"], low=ep.low.cpu(), high=ep.high.cpu(),
            macs_per_filter=self._macs_per_filter(ep, pl_module))
        self._log(trainer, pl_module)
        if self.csv_path is not None and trainer.is_global_zero:
            self.write_csv(self.csv_path)

    def state_dict(self) -> dict[str, Any]:
        result = self._result if self.save_statistics else None
        return {"version": 1, "num_bins": self.num_bins, "condition_on": self.condition_on,
                "result": result.as_dict() if result is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("result")
        self._result = _Result.from_dict(saved) if saved is not None else None

    # ------------------------------------------------------------------ internals

    def _prepare(self, pl_module: nn.Module) -> None:
        """Find the layers and their tap points (static: the topology survives surgery)."""
        convs = dict(conv_layers(pl_module))
        if not convs:
            raise no_conv_error(pl_module)
        if self.layers is not None:
            for name in self.layers:
                if name not in convs:
                    raise choice_error("layer (an nn.Conv2d of the LightningModule)", name, convs)
            names = list(self.layers)
        else:
            names = list(convs)
        self._taps = plan_taps(pl_module, names)
        self._model = pl_module
        fallbacks = [n for n, t in self._taps.items() if t.how != "fx"]
        if fallbacks:
            log.info(rank_prefixed_message(
                f"EntropyStatistics: torch.fx could not trace {len(fallbacks)} layer(s) "
                f"({fallbacks[:3]}...); tap points from nn.Sequential siblings", _rank()))

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

    def _stop_epoch(self) -> None:
        if self._epoch is not None:
            for handle in self._epoch.handles:
                handle.remove()
            self._epoch = None

    def _make_hook(self, ep: _EpochState, name: str, transform, nonnegative: bool):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not ep.recording:
                return
            x = output if transform is None else transform(output)
            if not isinstance(x, Tensor) or x.dim() != 4:
                raise PlPruningError(
                    f"layer {name!r}: expected a 4-d (N, C, H, W) output at the tap "
                    f"{self._taps[name].module!r}, got {type(x).__name__} "
                    f"{tuple(x.shape) if isinstance(x, Tensor) else ''}")
            x = x.detach()
            area = x.shape[2] * x.shape[3]
            # Few, large operations here; the division by H*W, the zero counts' reduction and
            # all bookkeeping happen once per batch for all layers together.
            with self._threads(x):
                ep.pooled[name].append((x.sum((2, 3), dtype=torch.float32), area))
                ep.nonzero[name].append(ep.count_nonzero(x, nonnegative))
            ep.spatial[name] = (x.shape[2], x.shape[3])
        return hook

    def _make_output_hook(self, ep: _EpochState):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if ep.recording:
                ep.outputs.append(_logits(output, self.output_module).detach())
        return hook

    def _known_num_classes(self, trainer: pl.Trainer, pl_module: nn.Module) -> int | None:
        if self.num_classes is not None:
            return self.num_classes
        datamodule = getattr(trainer, "datamodule", None)
        k = getattr(datamodule, "num_classes", None)
        if _is_int(k) and k >= 1:
            return int(k)
        hparams = getattr(pl_module, "hparams", {})
        k = hparams.get("num_classes") if isinstance(hparams, Mapping) else None
        return int(k) if _is_int(k) and k >= 1 else None

    def _num_classes_from_outputs(self, ep: _EpochState) -> int:
        if ep.num_classes is not None:
            return ep.num_classes
        if not ep.outputs:
            raise PlPruningError(
                "EntropyStatistics cannot tell the number of classes: set num_classes=..., give "
                "the datamodule a num_classes attribute, or set output_module to the module "
                "whose output holds the logits")
        return int(ep.outputs[0].shape[-1])

    def _batch_labels(self, ep: _EpochState) -> Tensor:
        if self.condition_on == "label":
            return ep.labels
        if not ep.outputs:
            where = f"module {self.output_module!r}" if self.output_module else "the LightningModule"
            raise PlPruningError(
                f"condition_on='prediction' needs the model output, but {where} was not called "
                "in the validation step; set output_module to the module that returns the logits")
        logits = torch.cat(ep.outputs) if len(ep.outputs) > 1 else ep.outputs[0]
        if ep.num_classes is not None and logits.shape[-1] != ep.num_classes:
            raise PlPruningError(
                f"the model output has {logits.shape[-1]} classes, num_classes is {ep.num_classes}")
        return logits.argmax(-1)

    def _check_labels(self, labels: Tensor, num_classes: int) -> None:
        if labels.numel() == 0:
            return
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise PlPruningError(
                f"class label {bad} is outside the allowed range 0..{num_classes - 1} "
                f"(num_classes={num_classes})")

    def _segments(self, ep: _EpochState, values: dict[str, Tensor], labels: Tensor
                  ) -> list[tuple[int, Tensor, Tensor]]:
        """(first filter, values [M, filters], labels [M]) pieces: one piece for the whole
        network when every layer saw the same samples (the common case), else one per layer."""
        def repeat(m: int, name: str) -> Tensor:
            if m == labels.shape[0]:
                return labels
            if labels.shape[0] == 0 or m % labels.shape[0]:
                raise PlPruningError(
                    f"layer {name!r} saw {m} samples in a batch with {labels.shape[0]} labels")
            return labels.repeat(m // labels.shape[0])
        if FUSED in values:  # fused by take_batch: every layer saw the same samples
            fused = values[FUSED]
            return [(0, fused, repeat(fused.shape[0], ep.names[0]))]
        return [(ep.offsets[i], values[name], repeat(values[name].shape[0], name))
                for i, name in enumerate(ep.names)]

    def _calibrate(self, ep: _EpochState) -> None:
        low, high = ep.range.compute()  # min / max across ranks
        ep.low, ep.high = low, high
        ep.histogram.set_edges(low, high)
        for start, v, y in ep.buffer:
            ep.histogram.update(v, y, start)
        ep.buffer.clear()
        ep.calibrated = True

    def _macs_per_filter(self, ep: _EpochState, pl_module: nn.Module) -> list[float | None]:
        """MACs per sample that one filter costs: its own kernel over its output map, plus
        one input channel of each convolution that consumes it directly."""
        def per_output(name: str) -> float | None:
            conv, hw = pl_module.get_submodule(name), ep.spatial.get(name)
            if hw is None:
                return None
            kh, kw = conv.kernel_size
            return conv.in_channels // conv.groups * kh * kw * hw[0] * hw[1]

        def per_input(name: str) -> float:
            conv, hw = pl_module.get_submodule(name), ep.spatial.get(name)
            if hw is None:  # a consumer we do not read: its output size is unknown
                return 0.0
            kh, kw = conv.kernel_size
            return conv.out_channels // conv.groups * kh * kw * hw[0] * hw[1]

        out = []
        for name in ep.names:
            own = per_output(name)
            out.append(None if own is None else float(own + sum(
                per_input(c) for c in self._taps[name].consumers)))
        return out

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_criterion is None or not trainer.loggers:
            return
        scores = self.scores(self.log_criterion, normalize="none")
        metrics = {}
        for name, s in scores.items():
            for stat, value in (("mean", s.mean()), ("min", s.min()), ("max", s.max())):
                metrics[f"{LOG_PREFIX}/{name}/{self.log_criterion}_{stat}"] = float(value)
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=False)
        if trainer.is_global_zero:
            from lightning.pytorch.loggers import TensorBoardLogger

            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    for name, s in scores.items():
                        logger.experiment.add_histogram(
                            f"{LOG_PREFIX}/{name}/{self.log_criterion}", s,
                            global_step=trainer.global_step)

    def _require_statistics(self) -> None:
        if self._result is None:
            raise PlPruningError(
                "EntropyStatistics has no statistics: they are collected in validation epochs "
                "(not the sanity check) and dropped by invalidate(); run a validation epoch first")
        if not self.has_statistics:
            raise PlPruningError(
                "EntropyStatistics holds statistics of another architecture (channel counts "
                "changed); call invalidate() after surgery and run a validation epoch")


# ---------------------------------------------------------------------- helpers


def labels_from_batch(batch: Any) -> Tensor:
    """The integer class labels of a validation batch: ``batch[1]`` of a tuple or list,
    or ``batch[key]`` of a mapping for ``key`` in :data:`LABEL_KEYS`."""
    labels = None
    if isinstance(batch, Mapping):
        labels = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        labels = batch[1]
    ok = (isinstance(labels, Tensor) and labels.dim() == 1 and not labels.is_floating_point()
          and not labels.is_complex() and labels.dtype != torch.bool)
    if not ok:
        raise PlPruningError(
            f"condition_on='label' needs validation batches with integer class labels, "
            f"(inputs, labels) or a dict with one of the keys {list(LABEL_KEYS)}; got "
            f"{_describe(batch)}. Allowed: labelled batches, or condition_on='prediction' "
            "for data without labels")
    return labels


def _describe(batch: Any) -> str:
    if isinstance(batch, Tensor):
        return f"a single Tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a dict with keys {sorted(map(str, batch))}"
    if isinstance(batch, (tuple, list)):
        parts = [f"Tensor{tuple(b.shape)}/{str(b.dtype).replace('torch.', '')}"
                 if isinstance(b, Tensor) else type(b).__name__ for b in batch]
        return f"a {type(batch).__name__} of [{', '.join(parts)}]"
    return f"a {type(batch).__name__}"


def _logits(output: Any, where: str) -> Tensor:
    if isinstance(output, Mapping):
        output = output.get("logits", output.get("out"))
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, Tensor) or output.dim() != 2:
        raise PlPruningError(
            f"condition_on='prediction': the output of {where or 'the LightningModule'!r} is not "
            f"(N, classes) logits: got {_describe(output)}; set output_module to the module "
            "that returns them")
    return output


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _rank() -> int:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


@dataclass
class _EpochState:
    """Everything one validation epoch needs; dropped at its end."""

    names: list[str]
    channels: list[int]
    device: torch.device
    num_classes: int | None
    offsets: list[int] = field(init=False)
    handles: list[RemovableHandle] = field(default_factory=list)
    recording: bool = False
    discard: bool = False
    calibrated: bool = False
    batches_seen: int = 0
    pooled: dict[str, list[tuple[Tensor, int]]] = field(default_factory=dict)
    nonzero: dict[str, list[Tensor]] = field(default_factory=dict)
    outputs: list[Tensor] = field(default_factory=list)
    labels: Tensor | None = None
    buffer: list[tuple[int, Tensor, Tensor]] = field(default_factory=list)
    spatial: dict[str, tuple[int, int]] = field(default_factory=dict)
    histogram: FilterHistogram | None = None
    range: ActivationRange | None = None
    low: Tensor | None = None
    high: Tensor | None = None

    def __post_init__(self) -> None:
        self.offsets = [0]
        for c in self.channels:
            self.offsets.append(self.offsets[-1] + c)
        total = self.offsets[-1]
        self.nonzero_acc = torch.zeros(total, dtype=torch.float64, device=self.device)
        self.elements = dict.fromkeys(self.names, 0)  # elements of the tapped map per filter
        self.range = ActivationRange(total).to(self.device)
        self._scratch: Tensor | None = None
        self._areas: tuple[tuple[int, ...], Tensor] | None = None
        if self.num_classes is not None:
            self.num_classes = int(self.num_classes)

    def take_batch(self) -> dict[str, Tensor]:
        """This batch's pooled activations per layer ``[M, filters]``; folds the zero
        counts into the epoch totals."""
        sums, areas, nonzero = {}, [], []
        for name in self.names:
            calls = self.pooled[name]
            area = calls[0][1]
            if all(a == area for _, a in calls):
                sums[name] = calls[0][0] if len(calls) == 1 else torch.cat([v for v, _ in calls])
            else:  # calls with different spatial sizes: divide each by its own area
                sums[name], area = torch.cat([v / a for v, a in calls]), 1
            areas.append(area)
            self.elements[name] += sum(v.shape[0] * a for v, a in calls)
            parts = self.nonzero[name]
            nonzero.append(parts[0] if len(parts) == 1 else torch.cat(parts))
        if len({v.shape[0] for v in nonzero}) == 1:
            self.nonzero_acc += torch.cat(nonzero, dim=1).sum(0, dtype=torch.float64)
        else:
            for i, part in enumerate(nonzero):
                self.nonzero_acc[self.offsets[i]:self.offsets[i + 1]] += part.sum(0, dtype=torch.float64)
        if len({v.shape[0] for v in sums.values()}) == 1:  # one division for all layers
            key = tuple(areas)
            if self._areas is None or self._areas[0] != key:
                per_filter = torch.tensor(areas, dtype=torch.float32).repeat_interleave(
                    torch.tensor(self.channels))
                self._areas = (key, per_filter.to(self.device))
            fused = torch.cat(list(sums.values()), dim=1).div_(self._areas[1])
            return {FUSED: fused}
        return {name: v.div_(a) if v.dtype == torch.float32 else v / a
                for (name, v), a in zip(sums.items(), areas, strict=True)}

    def allocate(self, num_classes: int, num_bins: int) -> None:
        self.num_classes = num_classes
        self.histogram = FilterHistogram(self.offsets[-1], num_bins, num_classes).to(self.device)

    def count_nonzero(self, x: Tensor, nonnegative: bool) -> Tensor:
        """Non-zero elements per sample and channel of ``x [N, C, H, W]``: float32 [N, C].

        ``sign`` into a reused scratch buffer, then a sum: several times faster on CPU than
        ``count_nonzero`` or a boolean mask, and no large temporary. Chunks over N keep
        the buffer small.
        """
        n, c, h, w = x.shape
        per_sample = c * h * w
        chunk = max(1, min(n, SCRATCH_ELEMENTS // max(1, per_sample)))
        need = chunk * per_sample
        if (self._scratch is None or self._scratch.numel() < need
                or self._scratch.dtype != x.dtype or self._scratch.device != x.device):
            self._scratch = torch.empty(max(need, 1), dtype=x.dtype, device=x.device)
        parts = []
        for i in range(0, n, chunk):
            part = x[i:i + chunk]
            buf = self._scratch[:part.numel()].view(part.shape)
            torch.sign(part, out=buf)
            if not nonnegative:
                buf.abs_()
            parts.append(buf.sum((2, 3), dtype=torch.float32))  # exact: < 2**24 per entry
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass
class _Result:
    """The finished, synchronised statistics of one epoch (CPU)."""

    names: list[str]
    channels: list[int]
    offsets: list[int]
    counts: Tensor  # [filters, bins, classes]
    activation_sum: Tensor
    zeros: Tensor
    elements: Tensor
    low: Tensor
    high: Tensor
    macs_per_filter: list[float | None]

    def layer_statistics(self) -> dict[str, LayerStatistics]:
        out = {}
        for i, name in enumerate(self.names):
            sl = slice(self.offsets[i], self.offsets[i + 1])
            out[name] = LayerStatistics(
                counts=self.counts[sl], activation_sum=self.activation_sum[sl],
                zeros=self.zeros[sl], elements=self.elements[sl], low=self.low[sl],
                high=self.high[sl], macs_per_filter=self.macs_per_filter[i])
        return out

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _Result:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


__all__ = ["EntropyStatistics", "labels_from_batch"]
