"""What the callbacks log and write: the controller's judged steps, warnings and report, the
statistics' score summaries.

Messages go through Python logging, logger ``pl_pruning``, on rank 0 (:func:`info`): the
``pl-prune`` app hands them to Hydra's handlers (the console and the run folder's ``app.log``);
used from Python without any logging set up, ``pl_pruning`` prints them itself
(:func:`console_if_unconfigured`). The console handler writes to ``sys.stdout``/``sys.stderr``
as they are at each record (:class:`ConsoleHandler`), so that a progress bar that redirects
them (rich's) prints the line above the bar instead of drawing over it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor

__all__ = ["LOG_PREFIX", "ConsoleHandler", "console_if_unconfigured", "info", "log_record", "log_scores", "logger",
           "warn_untraceable", "write_report"]

logger = logging.getLogger("pl_pruning")


def info(message: str) -> None:
    """One line to the ``pl_pruning`` logger, from rank 0 only."""
    if rank_zero_only.rank == 0:
        logger.info(message)


class ConsoleHandler(logging.StreamHandler):
    """A stream handler that looks ``sys.<name>`` up at every record instead of keeping the
    stream it was given: rich's progress bar swaps ``sys.stdout``/``sys.stderr`` for proxies
    that print above the bar while it is drawn."""

    def __init__(self, name: str = "stderr") -> None:
        self._stream_name = name
        super().__init__()

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value: Any) -> None:  # the stream is always the current sys.<name>
        pass


def console_if_unconfigured() -> None:
    """Used from Python with no logging configured, print ``pl_pruning``'s INFO lines to
    stderr (as Lightning does for its own); where the root logger has handlers (the
    ``pl-prune`` app's Hydra, pytest, an application's own setup) they receive the records
    instead, as every record still propagates."""
    if not any(isinstance(h, _WhenUnconfigured) for h in logger.handlers):
        logger.setLevel(logging.INFO)
        logger.addHandler(_WhenUnconfigured("stderr"))


class _WhenUnconfigured(ConsoleHandler):
    """Prints only while the root logger has no handler of its own."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


LOG_PREFIX = "entropy_stats"  # EntropyStatistics' keys: entropy_stats/<layer>/<criterion>_<mean|min|max>


def log_record(trainer: L.Trainer, record: Any, monitor: str, sized_by: str = "MACs") -> None:
    """A judged step (:class:`~pl_pruning.pruning.run_state.StepRecord`) to every logger as
    ``pruning/<field>`` and, except the final record, as one log line (``sized_by``: what a
    global step's share is of)."""
    metrics = {f"pruning/{k}": float(v) for k, v in record.to_dict().items()
               if isinstance(v, (int, float, bool)) and k != "epoch"}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
    if record.phase != "final":
        info(f"[PhaseController] {record.describe(monitor, sized_by)}")


def write_report(trainer: L.Trainer, report: dict[str, Any], folder: str | None,
                 latency_table: dict[str, Any] | None = None) -> None:
    """The controller's report (JSON, markdown, PNG) into ``folder`` (default: the
    Trainer's ``default_root_dir``), on rank 0, with the run's latency table (JSON and
    markdown) when it had one."""
    if trainer.is_global_zero:
        from pl_pruning.pruning.latency import LatencyTable
        from pl_pruning.reports.pruning_report import write_pruning_report

        paths = write_pruning_report(report, Path(folder or trainer.default_root_dir))
        if latency_table is not None:
            from pl_pruning.files import write_text_atomic

            table = LatencyTable.from_dict(latency_table)
            paths.append(table.save(Path(folder or trainer.default_root_dir) / "latency_table.json"))
            paths.append(paths[-1].with_suffix(".md"))
            write_text_atomic(paths[-1], table.to_markdown())
        info(f"[PhaseController] report: {', '.join(str(p) for p in paths)}")


def warn_untraceable(layers: list[str]) -> None:
    if layers:
        rank_zero_warn(f"[PhaseController] left out of pruning: {', '.join(layers)}: their channels are coupled "
                       "through an operation the dependency graph cannot follow (such as a zero-padding "
                       "shortcut); every other layer is pruned")


def log_scores(trainer: L.Trainer, pl_module: L.LightningModule, scores: dict[str, Tensor], criterion: str) -> None:
    """Per layer the mean, min and max score (``pl_module.log_dict``), and on rank 0 a
    histogram per layer for TensorBoard loggers."""
    metrics = {}
    for name, s in scores.items():
        for stat, value in (("mean", s.mean()), ("min", s.min()), ("max", s.max())):
            metrics[f"{LOG_PREFIX}/{name}/{criterion}_{stat}"] = float(value)
    pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=False)
    if trainer.is_global_zero:
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for name, s in scores.items():
                    logger.experiment.add_histogram(f"{LOG_PREFIX}/{name}/{criterion}", s,
                                                    global_step=trainer.global_step)
