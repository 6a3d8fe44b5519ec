"""EntropyStatistics: per-filter activation statistics on validation batches, and scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from pl_pruning.callbacks.logs import log_scores
from pl_pruning.errors import PlPruningError
from pl_pruning.scoring.criteria import (
    CRITERIA,
    DEFAULT_CRITERION,
    Criterion,
    compute_scores,
    get_criterion,
)
from pl_pruning.scoring.normalize import DEFAULT_NORMALIZE, check_normalize
from pl_pruning.scoring.table import write_filter_table
from pl_pruning.statistics.collector import StatisticsCollector, check_options
from pl_pruning.statistics.result import CollectedStatistics, LayerStatistics
from pl_pruning.statistics.taps import TapPoint
from pl_pruning.structure.batches import example_input, labels_from_batch
from pl_pruning.validate import check_bool, check_choice, check_int, check_names, is_int


class EntropyStatistics(Callback):
    r"""Per-filter activation statistics of every prunable convolution, from validation data.

    In each validation epoch (not the sanity check) a
    :class:`~pl_pruning.statistics.StatisticsCollector` reads each filter's pooled
    activation per sample at its tap point (:attr:`taps`) and keeps, bounded by filters x
    bins x classes, its joint histogram with the class, its mean and its zero count (APoZ);
    bin edges come from the epoch's first ``calibration_batches`` batches. Under DDP the
    ranks end with the statistics of one process that saw all the data (each rank must run
    the same number of validation batches, as Lightning's ``DistributedSampler`` ensures).

    The statistics are final from ``on_validation_end`` on. After surgery call
    :meth:`invalidate`; the next epoch collects them for the new channel counts. The network
    graph (:class:`~pl_pruning.structure.graph.NetworkGraph`: each convolution's BatchNorm, the
    MACs per filter for ``normalize="cost-aware"``) is traced with the module's
    ``example_input_array`` at setup, or else with the input of the first validation batch
    (one forward pass in eval mode without gradients, once per architecture).

    Args:
        num_bins, calibration_batches, output_module, cpu_threads: as in
            :class:`~pl_pruning.statistics.StatisticsCollector` (calibration batches per rank).
        condition_on: ``"label"`` (the batch's class labels: batches ``(inputs, labels)`` or
            dicts with a ``"y"``/``"label"``/``"target"`` key) or ``"prediction"`` (the
            model's predicted class, for calibration data without labels).
        max_batches: validation batches per rank that are counted (``None``: all).
        layers: names of the ``nn.Conv2d`` layers to read, as in ``pl_module.named_modules()``
            (e.g. ``"net.features.0"``); ``None``: every ``nn.Conv2d``.
        num_classes: number of classes; ``None`` reads ``num_classes`` from the datamodule,
            then the LightningModule's hyperparameters, then the width of the model output.
        log_criterion: the criterion whose per-layer mean/min/max are logged after each
            epoch (and a TensorBoard histogram per layer); ``None`` logs nothing.
        csv_path: if set, :meth:`write_csv` writes there after every epoch (global rank 0).
        save_statistics: keep the finished statistics in checkpoints (``state_dict``).

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
        check_options(num_bins, condition_on, calibration_batches, num_classes, output_module,
                      cpu_threads)
        check_int("max_batches", max_batches, 1, optional=True)
        if layers is not None:
            layers = check_names("layers", layers, allow_empty=False)
        if log_criterion is not None:
            check_choice("log_criterion", log_criterion, [*CRITERIA, None])
        self.num_bins = int(num_bins)
        self.condition_on = condition_on
        self.max_batches = max_batches
        self.layers = layers
        self.num_classes = num_classes
        self.calibration_batches = int(calibration_batches)
        self.output_module = output_module
        self.log_criterion = log_criterion
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.save_statistics = check_bool("save_statistics", save_statistics)
        self.cpu_threads = cpu_threads

        self._model: nn.Module | None = None
        self._collector: StatisticsCollector | None = None
        self._classes: int | None = None  # this epoch's number of classes, if known
        self._waiting = False  # the epoch's collection waits for a first batch (example input)
        self._discard = False
        self._result: CollectedStatistics | None = None

    # ------------------------------------------------------------------ public API

    @property
    def state_key(self) -> str:
        return self._generate_state_key(num_bins=self.num_bins, condition_on=self.condition_on,
                                        layers=self.layers)

    @property
    def layer_names(self) -> list[str]:
        """The convolutions read, as named in ``pl_module.named_modules()``."""
        if self._collector is not None:
            return list(self._collector.layer_names)
        return list(self.layers or [])

    @property
    def taps(self) -> dict[str, TapPoint]:
        """Where each layer is read (module, kind, activation applied); see :mod:`pl_pruning.statistics.taps`."""
        return dict(self._collector.taps or {}) if self._collector is not None else {}

    @property
    def has_statistics(self) -> bool:
        """True once a real validation epoch has filled the statistics of the current
        architecture (False after :meth:`invalidate` or when channel counts changed)."""
        return self._result is not None and (self._model is None or self._result.fits(self._model))

    @property
    def collected(self) -> CollectedStatistics | None:
        """The finished statistics of the current architecture (what :attr:`has_statistics`
        says exists), or None."""
        return self._result if self.has_statistics else None

    def invalidate(self) -> None:
        """Mark the statistics stale (call after surgery); the next validation epoch
        collects them again for the new channel counts."""
        self._result = None
        self._discard = True  # a collection running now saw the old network

    def statistics(self) -> dict[str, LayerStatistics]:
        """``{layer: LayerStatistics}`` (CPU tensors) of the last finished epoch."""
        self._require_statistics()
        return dict(self._result.items())

    def scores(self, criterion: str | Criterion = DEFAULT_CRITERION,
               normalize: str = DEFAULT_NORMALIZE, layers: Sequence[str] | None = None,
               **criterion_options: Any) -> dict[str, Tensor]:
        """``{layer: CPU float Tensor[out_channels]}``, higher = keep.

        Args:
            criterion: a name in :data:`pl_pruning.scoring.CRITERIA` or a ``Criterion``.
            normalize: ``"none"``, ``"per-layer"`` (default) or ``"cost-aware"``; see
                :mod:`pl_pruning.scoring.normalize`.
            layers: a subset of :attr:`layer_names` (default: all).
            criterion_options: passed to the criterion (e.g. ``seed`` for ``"random"``).

        Data-free criteria (``l1``, ``random``) work without statistics, on the model this
        callback last saw.
        """
        crit = get_criterion(criterion, **criterion_options)
        check_normalize(normalize)
        names = self.layer_names
        if layers is not None:
            names = [check_choice("layer", name, names) for name in layers]
        stats = self.statistics() if crit.needs_data or self.has_statistics else None
        if self._model is None and not crit.needs_data:
            raise PlPruningError(
                f"criterion {crit.name!r} needs the model, and this callback has not seen one "
                "yet; call the criterion with the model instead: get_criterion(name)(model)")
        modules = {n: self._model.get_submodule(n) for n in names} if self._model is not None else None
        macs = None
        if normalize == "cost-aware":  # the MACs per filter of the network graph
            if self._collector is None:
                raise PlPruningError("normalize='cost-aware' needs the model: run a validation epoch first")
            macs = self._collector.graph(example_input(self._model)).macs_per_filter
        return compute_scores(crit, names, modules, stats, normalize, macs)

    def mean_activation(self) -> dict[str, Tensor]:
        """Per-filter mean of the pooled activation at the tap point (after BN and
        activation where they follow the convolution, *before* any pooling layer between
        this layer and the next), over the samples seen. For bias compensation."""
        return {name: s.mean_activation for name, s in self.statistics().items()}

    def write_csv(self, path: str | Path) -> Path:
        """Write one row per filter: layer, filter, entropy, conditional entropy, mutual
        information, APoZ (fraction of zeros), mean activation, L1 norm (raw values, nats)."""
        self._require_statistics()
        return write_filter_table(self._result, path, self._model)

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._prepare(pl_module)
        example = example_input(pl_module)
        if example is not None:  # trace now, not inside a validation epoch
            self._collector.plan(example)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._stop()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()
        if trainer.sanity_checking:
            return
        if self._model is not pl_module or self._collector is None:
            self._prepare(pl_module)
        self._discard = False
        self._classes = self._known_num_classes(trainer, pl_module)
        self._waiting = True
        example = example_input(pl_module)
        if example is not None or self._collector.taps is not None:
            self._start(example)  # else at the first batch, which brings an example input

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                  batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._waiting:
            example = example_input(pl_module, batch)
            if example is None:
                raise PlPruningError(
                    "EntropyStatistics traces the network with an example input: set "
                    "example_input_array on the LightningModule, or use validation batches "
                    "whose first element (or 'x' / 'input' key) is the model input")
            self._start(example)
        collector = self._collector
        if collector is None or not collector.running:
            return
        if self.max_batches is not None and collector.batches_seen >= self.max_batches:
            return
        collector.begin_batch(labels_from_batch(batch) if self.condition_on == "label" else None)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._collector is not None and self._collector.running:
            self._collector.end_batch()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._waiting = False
        if self._collector is None or not self._collector.running:
            return
        result = self._collector.finish()  # a collective under DDP: every rank gets here
        if result is None:
            rank_zero_warn("EntropyStatistics: no validation sample was counted; no statistics")
            return
        if self._discard:
            return
        self._result = result
        self._log(trainer, pl_module)
        if self.csv_path is not None and trainer.is_global_zero:
            self.write_csv(self.csv_path)

    def state_dict(self) -> dict[str, Any]:
        result = self._result if self.save_statistics else None
        return {"version": 2, "num_bins": self.num_bins, "condition_on": self.condition_on,
                "result": result.to_state() if result is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("result")  # version 1 also held macs_per_filter: ignored
        self._result = CollectedStatistics.from_state(saved) if saved is not None else None

    # ------------------------------------------------------------------ internals

    def _prepare(self, pl_module: nn.Module) -> None:
        """Check the layers and get a collector for this module (taps follow at the first
        validation epoch, once an example input is known)."""
        self._stop()
        self._collector = StatisticsCollector(
            pl_module, self.layers, num_bins=self.num_bins, calibration_batches=self.calibration_batches,
            condition_on=self.condition_on, output_module=self.output_module,
            cpu_threads=self.cpu_threads)
        self._model = pl_module

    def _start(self, example: Tensor | None) -> None:
        self._waiting = False
        self._collector.start(num_classes=self._classes, example_inputs=example)

    def _stop(self) -> None:
        self._waiting = False
        if self._collector is not None:
            self._collector.stop()

    def _known_num_classes(self, trainer: pl.Trainer, pl_module: nn.Module) -> int | None:
        if self.num_classes is not None:
            return self.num_classes
        k = getattr(getattr(trainer, "datamodule", None), "num_classes", None)
        if is_int(k) and k >= 1:
            return int(k)
        hparams = getattr(pl_module, "hparams", {})
        k = hparams.get("num_classes") if isinstance(hparams, Mapping) else None
        return int(k) if is_int(k) and k >= 1 else None

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_criterion is not None and trainer.loggers:
            log_scores(trainer, pl_module, self.scores(self.log_criterion, normalize="none"), self.log_criterion)

    def _require_statistics(self) -> None:
        if self._result is None:
            raise PlPruningError(
                "EntropyStatistics has no statistics: they are collected in validation epochs "
                "(not the sanity check) and dropped by invalidate(); run a validation epoch first")
        if not self.has_statistics:
            raise PlPruningError(
                "EntropyStatistics holds statistics of another architecture (channel counts "
                "changed); call invalidate() after surgery and run a validation epoch")


__all__ = ["EntropyStatistics"]
