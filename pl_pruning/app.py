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
"""

from __future__ import annotations

import json
import logging
import sys
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
from pl_pruning.errors import PlPruningError
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """One job of the app; returns what it writes to ``results.json``."""
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    datamodule = _instantiate(cfg.data)
    classifier = build_classifier(cfg, datamodule)
    # Built before any training, so that a bad pruning option fails at once.
    pruning_callbacks = _instantiate_all(cfg.pruning.get("callbacks")) if cfg.get("pruning") else []
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


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except PlPruningError as err:
        # Bad input: one line that names the value, not a traceback.
        print(f"pl-prune: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
