"""The Hydra app behind ``pl-prune`` and ``python -m pl_pruning``.

Flow: data module -> network -> ``ImageClassifier`` -> Trainer; train the baseline
(unless ``model.checkpoint`` is given), test it, measure it, write ``results.json``
into the run folder::

    {"baseline": {"test_acc", "macs", "params", "latency_ms", ...}, "config": {...}}

The file is shaped to grow: pruning adds its own blocks beside ``baseline``.
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """One job of the app; returns what it writes to ``results.json``."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = _instantiate(cfg.data)
    classifier = build_classifier(cfg, datamodule)
    trainer: L.Trainer = _instantiate(cfg.trainer, callbacks=_instantiate_all(cfg.get("callbacks")),
                                      logger=_instantiate_all(cfg.get("logger")) or False)
    if not cfg.model.get("checkpoint"):
        trainer.fit(classifier, datamodule=datamodule)
    ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    tested = trainer.test(classifier, datamodule=datamodule, ckpt_path=best, verbose=False)
    baseline = {"test_acc": float(tested[0]["test_acc"])}
    results: dict[str, Any] = {"baseline": baseline}
    if trainer.is_global_zero:
        shape = (cfg.measure.batch_size, *datamodule.input_shape)
        cost = measure(classifier.net.cpu(), torch.zeros(shape), num_threads=cfg.measure.num_threads,
                       latency=cfg.measure.latency)
        baseline.update(macs=cost.macs, params=cost.params, latency_ms=cost.latency_ms,
                        latency_batch_size=cost.batch_size, latency_threads=cost.num_threads,
                        checkpoint=best or cfg.model.get("checkpoint"))
        results["config"] = OmegaConf.to_container(cfg, resolve=True)
        out = Path(HydraConfig.get().runtime.output_dir) / cfg.results_file
        out.write_text(json.dumps(results, indent=2))
        _print_summary(results, out)
    return results


def _print_summary(results: dict[str, Any], path: Path) -> None:
    table = Table(title="pl-prune", show_header=True)
    table.add_column("network")
    for col in ("test acc", "MACs", "params", "latency (ms/batch)"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        if not isinstance(r, dict) or "test_acc" not in r:
            continue
        latency = f"{r['latency_ms']:.2f}" if r.get("latency_ms") is not None else "-"
        table.add_row(name, f"{r['test_acc']:.4f}", f"{r['macs'] / 1e6:.2f} M",
                      f"{r['params'] / 1e6:.3f} M", latency)
    console = Console()
    console.print(table)
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
