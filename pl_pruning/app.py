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
controller's summary). ``pruning=none`` keeps the baseline only.

**Objective.** The task function returns one number for sweepers (Optuna, Nevergrad,
...), also written to ``results.json`` as ``objective``; higher is better
(``direction: maximize``)::

    value = results[objective.metric]                 if acc_drop <= objective.max_drop
            objective.penalty - (acc_drop - max_drop) otherwise

``objective.metric`` is ``macs_reduction`` (default) or ``params_reduction``, at least
1.0 for any pruned network; ``acc_drop`` is the *test* accuracy drop, which the
controller never sees; ``objective.max_drop`` defaults to ``pruning.max_drop``. With the
default penalty 0.0 every run over the bound scores below every run within it, and a
smaller excess scores higher, so the sampler still learns from infeasible trials.
Without pruning the value is 1.0 (no reduction, no drop). Ranks other than 0 return
``None``.

**DDP inside Hydra.** With ``trainer=ddp`` Lightning starts the other ranks of a job by
running the script again. Its Hydra-aware command replays ``sys.argv`` with
``hydra.run.dir`` set; inside a multirun that replays ``-m`` and the whole sweep (each
child would start a sweep of its own into other folders), and inside a submitit job it
re-runs submitit's worker. :func:`_ddp_ranks_join_this_job` replaces that command, for
the duration of one job, with ``python -m pl_pruning <this job's overrides>
hydra.run.dir=<this job's folder> hydra.mode=RUN``, so every rank works in the same run
folder; only rank 0 writes ``results.json``, ``pruned_model.pt`` and the reports. After
the job it tears the process group down and restores the environment Lightning changed
(``MASTER_PORT``, ``LOCAL_RANK``, ...), so the next job of a sweep in the same process
starts its own ranks instead of waiting for the old ones.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from pl_pruning.checkpoints import load_weights
from pl_pruning.errors import PlPruningError, choice_error
from pl_pruning.measure import measure
from pl_pruning.module import ImageClassifier
from pl_pruning.pruned_checkpoint import save_pruned

log = logging.getLogger("pl_pruning")


def _instantiate(cfg: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our own errors through unwrapped."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, PlPruningError):
            raise cause from None
        raise


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    if not group:
        return []
    return [_instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def build_classifier(cfg: DictConfig, datamodule: L.LightningDataModule) -> ImageClassifier:
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    checkpoint = model_cfg.pop("checkpoint", None)
    net = _instantiate(OmegaConf.create(model_cfg), num_classes=datamodule.num_classes,
                       in_channels=datamodule.in_channels)
    if checkpoint:
        load_weights(net, checkpoint, what=f"model={model_cfg['name']} width={model_cfg['width']}")
    return ImageClassifier(net, num_classes=datamodule.num_classes,
                           input_shape=datamodule.input_shape, **cfg.optim)


def _test_and_measure(trainer: L.Trainer, classifier: ImageClassifier, datamodule: L.LightningDataModule,
                      cfg: DictConfig, ckpt_path: str | None) -> dict[str, Any]:
    tested = trainer.test(classifier, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    block: dict[str, Any] = {"test_acc": float(tested[0]["test_acc"])}
    if trainer.is_global_zero:
        shape = (cfg.measure.batch_size, *datamodule.input_shape)
        cost = measure(classifier.net, torch.zeros(shape), num_threads=cfg.measure.num_threads,
                       latency=cfg.measure.latency)
        block.update(macs=cost.macs, params=cost.params, latency_ms=cost.latency_ms,
                     latency_batch_size=cost.batch_size, latency_threads=cost.num_threads)
    return block


def _prune(cfg: DictConfig, classifier: ImageClassifier, datamodule: L.LightningDataModule,
           out_dir: Path, callbacks: list[Any]) -> tuple[L.Trainer, Any]:
    """The pruning fit: EntropyStatistics, PhaseController, MaxEntropyFreeze in a new Trainer."""
    from pl_pruning.callbacks import PhaseController

    pruning = cfg.pruning
    callbacks = list(callbacks)
    # The latest epoch (with the controller's state) for resuming; "best" means nothing
    # across architectures, so nothing is ranked.
    callbacks += [ModelCheckpoint(dirpath=out_dir / "pruning_checkpoints", save_last=True,
                                  save_top_k=1, monitor=None)]
    callbacks += [c for c in _instantiate_all(cfg.get("callbacks")) if not isinstance(c, ModelCheckpoint)]
    # Fine-tuning has its own learning rate; the schedule is rebuilt after every surgery.
    classifier.hparams.lr = pruning.finetune_lr
    classifier.hparams.scheduler = pruning.finetune_scheduler
    trainer: L.Trainer = _instantiate(cfg.trainer, callbacks=callbacks, max_epochs=pruning.max_epochs,
                                      logger=_instantiate_all(cfg.get("logger")) or False,
                                      num_sanity_val_steps=0)
    trainer.fit(classifier, datamodule=datamodule)
    controller = next(c for c in trainer.callbacks if isinstance(c, PhaseController))
    return trainer, controller


OBJECTIVE_METRICS = ("macs_reduction", "params_reduction")


def _objective_settings(cfg: DictConfig) -> tuple[str, float, float]:
    """``objective.metric``, ``max_drop`` and ``penalty``, validated (defaults if absent)."""
    node = cfg.get("objective") or {}
    metric = node.get("metric", "macs_reduction")
    if metric not in OBJECTIVE_METRICS:
        raise choice_error("objective.metric", metric, OBJECTIVE_METRICS)
    max_drop = node.get("max_drop", 0.02)
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 <= max_drop < 1:
        raise PlPruningError(f"objective.max_drop must be in [0, 1), got {max_drop!r}")
    penalty = node.get("penalty", 0.0)
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not math.isfinite(penalty):
        raise PlPruningError(f"objective.penalty must be a finite number, got {penalty!r}")
    return metric, float(max_drop), float(penalty)


def objective(results: dict[str, Any], metric: str = "macs_reduction", max_drop: float = 0.02,
              penalty: float = 0.0) -> float:
    """The number a sweeper maximises (see the module docstring).

    ``metric`` (default: MACs reduction) when the test accuracy drop is at most
    ``max_drop``, else ``penalty`` minus the excess drop; 1.0 for a run without pruning.
    """
    if "pruned" not in results:
        return 1.0
    excess = results["acc_drop"] - max_drop
    return float(results[metric]) if excess <= 0 else float(penalty - excess)


def run(cfg: DictConfig) -> dict[str, Any]:
    """One job of the app; returns what it writes to ``results.json``."""
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    datamodule = _instantiate(cfg.data)
    classifier = build_classifier(cfg, datamodule)
    # Built before any training, so that a bad pruning option fails at once.
    pruning_callbacks = _instantiate_all(cfg.pruning.get("callbacks")) if cfg.get("pruning") else []
    metric, max_drop, penalty = _objective_settings(cfg)
    trainer: L.Trainer = _instantiate(cfg.trainer, callbacks=_instantiate_all(cfg.get("callbacks")),
                                      logger=_instantiate_all(cfg.get("logger")) or False)
    if not cfg.model.get("checkpoint"):
        trainer.fit(classifier, datamodule=datamodule)
    ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    if best:  # continue from the best epoch, not the last
        classifier.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    results: dict[str, Any] = {"baseline": _test_and_measure(trainer, classifier, datamodule, cfg, None)}
    results["baseline"]["checkpoint"] = best or cfg.model.get("checkpoint")
    if pruning_callbacks:
        trainer, controller = _prune(cfg, classifier, datamodule, out_dir, pruning_callbacks)
        pruned = _test_and_measure(trainer, classifier, datamodule, cfg, None)
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
        value = objective(results, metric, max_drop, penalty)
        results["objective"] = {"value": value, "metric": metric, "max_drop": max_drop,
                                "within_max_drop": "pruned" not in results or results["acc_drop"] <= max_drop}
        results["config"] = OmegaConf.to_container(cfg, resolve=True)
        path = out_dir / cfg.results_file
        path.write_text(json.dumps(results, indent=2))
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


# Environment variables Lightning's launcher sets in the process that starts the ranks.
_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _quote(value: str) -> str:
    """A value for a Hydra override, quoted so that any path parses."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """The command that starts rank ``local_rank`` of the running Hydra job.

    Lightning's own (``lightning.fabric.strategies.launchers.subprocess_script.
    _hydra_subprocess_cmd``) replays ``sys.argv``: ``-m`` and the whole sweep in a
    multirun, submitit's worker under submitit. This one runs exactly this job: its
    overrides, its config sources, its folder, in run mode.
    """
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    command = [sys.executable, "-m", "pl_pruning", f"--config-name={hc.job.config_name}"]
    for source in hc.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            command.append(f"--config-dir={source.path}")
        elif source.provider == "main" and (source.schema, source.path) != ("pkg", "pl_pruning.conf"):
            path = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
            command.append(f"--config-path={path}")
    command += list(hc.overrides.task)
    command += [f"hydra.run.dir={_quote(str(hc.runtime.output_dir))}", "hydra.mode=RUN",
                f"hydra.job.chdir={bool(hc.job.chdir)}", f"hydra.job.name=train_ddp_process_{local_rank}",
                "hydra.output_subdir=null"]  # rank 0 already wrote .hydra/
    return command, get_original_cwd()


@contextmanager
def _ddp_ranks_join_this_job() -> Iterator[None]:
    """Ranks started by Lightning join this job's run folder; clean up after the job.

    Lightning imports ``_hydra_subprocess_cmd`` by name into its launcher modules, so it is
    replaced there for the duration of the job only.
    """
    import lightning.fabric.strategies.launchers.subprocess_script as fabric_launcher
    import lightning.pytorch.strategies.launchers.subprocess_script as pytorch_launcher

    starts_ranks = "LOCAL_RANK" not in os.environ  # not a child rank, not under SLURM/torchrun
    env_before = dict(os.environ)
    patched = [(m, m._hydra_subprocess_cmd) for m in (fabric_launcher, pytorch_launcher)
               if hasattr(m, "_hydra_subprocess_cmd")]
    for module, _ in patched:
        module._hydra_subprocess_cmd = _ddp_child_command
    try:
        yield
    finally:
        for module, original in patched:
            module._hydra_subprocess_cmd = original
        if starts_ranks:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key in _DIST_ENV:
                if key in env_before:
                    os.environ[key] = env_before[key]
                else:
                    os.environ.pop(key, None)


def task(cfg: DictConfig) -> float | None:
    """The Hydra task function: one job; returns the objective (``None`` on ranks > 0)."""
    try:
        with _ddp_ranks_join_this_job():
            results = run(cfg)
    except PlPruningError as err:
        # Bad input: one line that names the value, not a traceback.
        print(f"pl-prune: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return results.get("objective", {}).get("value")


def check_overrides(args: Sequence[str]) -> None:
    """Check every ``pruning.criterion`` value of the command line before any job starts.

    Hydra checks group options (``pruning=foo``) for the whole sweep before launching;
    values are only checked inside each job, so a sweep over a misspelt criterion would
    fail after the jobs before it had run for minutes.

    Raises:
        PlPruningError: an unknown criterion (the message lists the known ones).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pl_pruning.criteria import CRITERIA

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "criterion" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
            if override.key_or_group != "pruning.criterion" or override.is_delete():
                continue
            values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                      else [override.value()])
        except Exception:  # noqa: BLE001 - Hydra reports malformed overrides itself
            continue
        for value in values:
            if isinstance(value, str) and value not in CRITERIA:
                raise choice_error("criterion", value, CRITERIA)


_hydra_main = hydra.main(version_base="1.3", config_path="conf", config_name="config")(task)


def main() -> None:
    """``pl-prune`` / ``python -m pl_pruning``: Hydra's command line around :func:`task`."""
    try:
        check_overrides(sys.argv[1:])
    except PlPruningError as err:
        print(f"pl-prune: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    _hydra_main()


if __name__ == "__main__":
    main()
