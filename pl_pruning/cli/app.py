"""The Hydra app behind ``pl-prune`` and ``python -m pl_pruning``.

Flow: data module -> network -> ``ImageClassifier`` -> Trainer; train the baseline
(unless ``model.checkpoint`` is given), test it, measure it, prune it, test and measure
the pruned network, write ``results.json`` into the run folder::

    {"baseline": {"test_acc", "macs", "params", "latency_ms", ...}, "config": {...}}

With a pruning preset (``pruning=two_phase``, the default; ``global``; ``layerwise``) a
second fit prunes the baseline with EntropyStatistics, PhaseController and
MaxEntropyFreeze, and the file gains ``pruned`` (same keys as ``baseline``),
``macs_reduction`` and ``params_reduction`` (baseline / pruned: 4.0 = 4x fewer),
``acc_drop`` (baseline test accuracy minus pruned, a fraction) and ``pruning`` (the
controller's summary). ``pruning=none`` keeps the baseline only. The task function
returns the objective (:mod:`pl_pruning.cli.objective`), also written to
``results.json``; ranks other than 0 return ``None``.

**The ``pruning`` node.** One node per callback, each holding its constructor's arguments
as they are passed (:data:`PRUNING_CALLBACKS`): ``pruning.controller`` -> ``PhaseController``,
``pruning.statistics`` -> ``EntropyStatistics``, ``pruning.freeze`` -> ``MaxEntropyFreeze``,
``pruning.distill`` -> ``Distillation`` (``null``/``false``: left out); ``pruning.fit`` the
pruning fit's own settings (``max_epochs``, ``lr``, ``scheduler``).

**Errors.** Bad input (:class:`~pl_pruning.errors.PlPruningError`) ends the run with
one line on stderr and exit status 2; any other exception is a failure of the program
and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from pl_pruning.callbacks import PhaseController
from pl_pruning.callbacks.logs import ConsoleHandler
from pl_pruning.callbacks.progress import EpochLines
from pl_pruning.checkpoint import load_weights, read_state_dict, save_pruned
from pl_pruning.cli.checks import (
    MonitorIsLogged,
    check_output_folders,
    check_pruning_fit,
    check_run_config,
    check_run_folder,
)
from pl_pruning.cli.ddp_hydra import ddp_ranks_join_this_job
from pl_pruning.cli.keys import keyed
from pl_pruning.cli.objective import Objective
from pl_pruning.cli.pruning_node import pruning_callbacks
from pl_pruning.errors import PlPruningError, choice_error
from pl_pruning.files import write_text_atomic
from pl_pruning.measure import measure_cost
from pl_pruning.module import ImageClassifier


def _instantiate(cfg: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our own errors through unwrapped, and
    Lightning's refusals of a setting (``trainer.devices=0``) as ours, in one line."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, PlPruningError):
            raise cause from None
        if isinstance(cause, MisconfigurationException):
            raise PlPruningError(" ".join(str(cause).split())) from None
        raise


def _route_logs() -> None:
    """Lightning's and pl_pruning's log records to Hydra's handlers (the console and the run
    folder's ``app.log``), the console one writing to ``sys.stdout`` as it is at each record so
    that rich's progress bar prints the line above itself instead of drawing over it; Python
    warnings (the callbacks' ``rank_zero_warn``) still print to ``sys.stderr`` as Python prints
    them, and go to ``app.log`` too."""
    logging.captureWarnings(True)
    warned = logging.getLogger("py.warnings")
    warned.propagate = False
    stderr = ConsoleHandler("stderr")
    stderr.setFormatter(logging.Formatter("%(message)s"))
    warned.handlers = [stderr, *(h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler))]
    for name in ("pl_pruning", "lightning.pytorch", "lightning.fabric"):
        library = logging.getLogger(name)
        for handler in list(library.handlers):  # their own, added when no logging was configured
            library.removeHandler(handler)
        library.propagate = True
    root = logging.getLogger()
    for i, handler in enumerate(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr):
            console = ConsoleHandler("stdout" if handler.stream is sys.stdout else "stderr")
            console.setFormatter(handler.formatter)
            console.setLevel(handler.level)
            root.handlers[i] = console


def _with_progress(callbacks: list[Any]) -> dict[str, Any]:
    """A Trainer's ``callbacks`` (and ``enable_progress_bar``): as configured in a terminal;
    elsewhere (SLURM, nohup, a pipe) the bar gives way to one plain line per epoch."""
    if sys.stdout.isatty():
        return {"callbacks": callbacks}
    return {"callbacks": [c for c in callbacks if not isinstance(c, ProgressBar)] + [EpochLines()],
            "enable_progress_bar": False}


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Every node of a group (``callbacks``, ``logger``); ``null`` nodes are left out."""
    if not group:
        return []
    return [_instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def build_classifier(cfg: DictConfig, datamodule: L.LightningDataModule) -> ImageClassifier:
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    checkpoint = model_cfg.pop("checkpoint", None)
    net = _instantiate(OmegaConf.create(model_cfg), num_classes=datamodule.num_classes,
                       in_channels=datamodule.in_channels)
    if checkpoint:
        load_weights(net, checkpoint, what=f"model={model_cfg['name']} width={model_cfg['width']}",
                     name="model.checkpoint")
    return ImageClassifier(net, num_classes=datamodule.num_classes,
                           input_shape=datamodule.input_shape, **cfg.optim)


def _test_and_measure(trainer: L.Trainer, classifier: ImageClassifier, datamodule: L.LightningDataModule,
                      cfg: DictConfig) -> dict[str, Any]:
    tested = trainer.test(classifier, datamodule=datamodule, verbose=False)
    block: dict[str, Any] = {"test_acc": float(tested[0]["test_acc"])}
    if trainer.is_global_zero:
        shape = (cfg.measure.batch_size, *datamodule.input_shape)
        cost = measure_cost(classifier.net, torch.zeros(shape), num_threads=cfg.measure.num_threads,
                            latency=cfg.measure.latency)
        block.update(macs=cost.macs, params=cost.params, latency_ms=cost.latency_ms,
                     latency_batch_size=cost.batch_size, latency_threads=cost.num_threads)
    return block


def _prune(cfg: DictConfig, classifier: ImageClassifier, datamodule: L.LightningDataModule,
           out_dir: Path, callbacks: list[Any]) -> L.Trainer:
    """The pruning fit: the pruning callbacks in a new Trainer, with the fit's own settings."""
    pruning = cfg.pruning
    callbacks = list(callbacks)
    # The latest epoch (with the controller's state) for resuming; "best" means nothing
    # across architectures, so nothing is ranked.
    folder = out_dir / "pruning_checkpoints"
    callbacks += [ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=1, monitor=None,
                                  enable_version_counter=False)]
    callbacks += [c for c in _instantiate_all(cfg.get("callbacks")) if not isinstance(c, ModelCheckpoint)]
    # Fine-tuning has its own learning rate (checked by check_pruning_fit); the schedule is
    # rebuilt after every surgery.
    classifier.hparams.lr = pruning.fit.lr
    classifier.hparams.scheduler = pruning.fit.scheduler
    trainer: L.Trainer = _instantiate(cfg.trainer, **_with_progress(callbacks), max_epochs=pruning.fit.max_epochs,
                                      logger=_instantiate_all(cfg.get("logger")) or False,
                                      num_sanity_val_steps=0)
    with keyed(pruning.controller, ["monitor"], only_these=True):  # with model.checkpoint, the first check of monitor
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=_resume_from(folder))
    return trainer


def _resume_from(folder: Path) -> str | None:
    """``folder/last.ckpt`` when an earlier run in this folder left one (a rerun of the same
    command, a requeued SLURM job): the fit continues from it instead of starting again."""
    last = folder / "last.ckpt"
    if last.is_file():
        print(f"pl-prune: resuming from {last}", file=sys.stderr)
        return str(last)
    return None


def run(cfg: DictConfig) -> dict[str, Any]:
    """One job of the app; returns what it writes to ``results.json``."""
    # Everything is checked before any training, through the objects the run builds.
    check_run_config(cfg)
    _route_logs()
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    with keyed(cfg.data):
        datamodule = _instantiate(cfg.data)
    with keyed(cfg.model):
        classifier = build_classifier(cfg, datamodule)
    pruners = pruning_callbacks(cfg.get("pruning"), cfg.get("measure"))
    checks: list[Any] = []
    if pruners:
        check_pruning_fit(cfg.pruning.fit)
        controller = next(c for c in pruners if isinstance(c, PhaseController))
        # before the baseline trains; its reasons name the controller's keys and the fit's epochs
        with keyed("pruning", {**{str(k): f"controller.{k}" for k in cfg.pruning.controller},
                               "max_epochs": "fit.max_epochs"}):
            controller.preflight(classifier, cfg.pruning.fit.max_epochs)
        checks.append(MonitorIsLogged(controller.monitor, cfg.pruning.controller))
    objective = Objective.from_config(cfg.get("objective"))
    with keyed(cfg.data):  # the data module's own checks (a scan of the images), before any training
        datamodule.prepare_data()
        datamodule.setup("fit")
    with keyed(cfg.trainer):
        trainer: L.Trainer = _instantiate(cfg.trainer, **_with_progress(_instantiate_all(cfg.get("callbacks")) + checks),
                                          logger=_instantiate_all(cfg.get("logger")) or False,
                                          **({"num_sanity_val_steps": 1} if checks and
                                             cfg.trainer.get("num_sanity_val_steps") == 0 else {}))
    check_run_folder(out_dir, cfg, classifier)
    # The best epoch is the monitored checkpoint's; last.ckpt (written every epoch) is in the same folder.
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    ckpt = next((c for c in checkpoints if c.monitor), checkpoints[0] if checkpoints else None)
    if not cfg.model.get("checkpoint"):
        resume = _resume_from(Path(ckpt.dirpath)) if ckpt is not None and ckpt.dirpath else None
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=resume)
    best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    if best:  # continue from the best epoch, not the last (a checkpoint this run wrote)
        classifier.load_state_dict(read_state_dict(best, classifier, weights_only=False))
    results: dict[str, Any] = {"baseline": _test_and_measure(trainer, classifier, datamodule, cfg)}
    results["baseline"]["checkpoint"] = best or cfg.model.get("checkpoint")
    if pruners:
        trainer = _prune(cfg, classifier, datamodule, out_dir, pruners)
        pruned = _test_and_measure(trainer, classifier, datamodule, cfg)
        results["pruned"] = pruned
        if trainer.is_global_zero:
            base = results["baseline"]
            results["macs_reduction"] = base["macs"] / pruned["macs"]
            results["params_reduction"] = base["params"] / pruned["params"]
            results["acc_drop"] = base["test_acc"] - pruned["test_acc"]
            results["pruning"] = {k: v for k, v in controller.report().items() if k != "history"}
            results["pruning"]["steps"] = len(controller.history)
            save_pruned(classifier.net, out_dir / "pruned_model.pt")
    if trainer.is_global_zero:
        results["objective"] = objective.summary(results)
        results["config"] = OmegaConf.to_container(cfg, resolve=True)
        path = out_dir / cfg.results_file
        write_text_atomic(path, json.dumps(results, indent=2))
        _print_summary(results, path)
    return results


def _print_summary(results: dict[str, Any], path: Path) -> None:
    table = Table(title="pl-prune", show_header=True)
    table.add_column("network")
    for col in ("test acc", "MACs", "params", "latency (ms/batch)"):
        table.add_column(col, justify="right")
    for name in ("baseline", "pruned"):
        r = results.get(name)
        if r is None:
            continue
        latency = f"{r['latency_ms']:.2f}" if r.get("latency_ms") is not None else "-"
        table.add_row(name, f"{r['test_acc']:.4f}", f"{r['macs'] / 1e6:.2f} M",
                      f"{r['params'] / 1e6:.3f} M", latency)
    console = Console()
    console.print(table)
    if "pruned" in results:
        console.print(f"{results['macs_reduction']:.2f}x fewer MACs, {results['params_reduction']:.2f}x fewer "
                      f"parameters, test accuracy drop {results['acc_drop'] * 100:+.2f} points")
    console.print(f"results: {path}")


def _bad_input(err: PlPruningError) -> SystemExit:
    """Bad input: one line that names the value, no traceback, exit status 2."""
    print(f"pl-prune: error: {err}", file=sys.stderr)
    return SystemExit(2)


def task(cfg: DictConfig) -> float | None:
    """The Hydra task function: one job; returns the objective (``None`` on ranks > 0).

    Raises:
        SystemExit: status 2 after one line on stderr, for bad input. Any other
            exception propagates with its traceback.
    """
    try:
        with ddp_ranks_join_this_job():
            results = run(cfg)
    except PlPruningError as err:
        raise _bad_input(err) from None
    return results.get("objective", {}).get("value")


def check_overrides(args: Sequence[str]) -> None:
    """Check every ``pruning.controller.criterion`` value of the command line before any job starts.

    Hydra checks group options (``pruning=foo``) for the whole sweep before launching;
    values are only checked inside each job, so a sweep over a misspelt criterion would
    fail after the jobs before it had run for minutes.

    Raises:
        PlPruningError: an unknown criterion (the message lists the known ones).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pl_pruning.scoring import CRITERIA

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "criterion" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
            if override.key_or_group != "pruning.controller.criterion" or override.is_delete():
                continue
            values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                      else [override.value()])
        except Exception:  # noqa: BLE001 - Hydra reports malformed overrides itself
            continue
        for value in values:
            if isinstance(value, str) and value not in CRITERIA:
                raise choice_error("pruning.controller.criterion", value, CRITERIA)


_hydra_main = hydra.main(version_base="1.3", config_path="pkg://pl_pruning.conf", config_name="config")(task)


def main() -> None:
    """``pl-prune`` / ``python -m pl_pruning``: Hydra's command line around :func:`task`."""
    try:
        check_overrides(sys.argv[1:])
        check_output_folders(sys.argv[1:])
    except PlPruningError as err:
        raise _bad_input(err) from None
    _hydra_main()


if __name__ == "__main__":
    main()
