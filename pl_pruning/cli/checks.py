"""The command line's values that would fail only after minutes of work, or give a result
that looks real and is not, checked before anything is built or trained; the checks of the
run folder (writable, holding this configuration's checkpoints) and of the logged metric;
the pruning fit's own settings."""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from pl_pruning.callbacks import loops
from pl_pruning.checkpoint import load_weights
from pl_pruning.cli.keys import keyed
from pl_pruning.cli.pruning_node import pruning_on
from pl_pruning.errors import PlPruningError
from pl_pruning.files import write_text_atomic
from pl_pruning.validate import check_int, is_int

__all__ = ["RUN_RECORD", "MonitorIsLogged", "check_output_folders", "check_pruning_fit", "check_run_config",
           "check_run_folder"]

RUN_RECORD = "run_config.yaml"  # the configuration a run folder's checkpoints belong to
# Keys that do not change what the checkpoints hold: a rerun may change them and resume.
# callbacks: progress bars, checkpointing and any extra callback (the pruning callbacks are under pruning)
_NOT_RECORDED = ("hydra", "measure", "objective", "results_file", "logger", "callbacks")
_OUTPUT_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def check_pruning_fit(node: DictConfig) -> None:
    """The pruning fit's own settings (``pruning.fit``), checked as ``ImageClassifier`` checks
    its optimizer settings (the fit sets them on it).

    Raises:
        PlPruningError: ``lr`` <= 0 or ``scheduler`` not one of its choices, named by key."""
    from pl_pruning.module import ImageClassifier

    with keyed(node):
        ImageClassifier.check_optimization(lr=node.get("lr"), scheduler=node.get("scheduler"))


class MonitorIsLogged(Callback):
    """In the baseline fit's sanity check, before any training: the metric the pruning fit
    will judge its steps by is logged (the check PhaseController makes in its own fit).

    Args:
        monitor: the controller's ``monitor``.
        node: its config node, to name the key.
    """

    def __init__(self, monitor: str, node: DictConfig) -> None:
        self.monitor, self.node = monitor, node

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with keyed(self.node, ["monitor"]):
            loops.monitored_value(trainer, self.monitor)


def check_output_folders(args: Sequence[str]) -> None:
    """The run (or sweep) folder given on the command line can be written, checked before
    Hydra creates it (Hydra's own failure is a traceback).

    Raises:
        PlPruningError: the folder is a file, or cannot be created or written."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key not in _OUTPUT_KEYS or not value or "${" in value:
            continue
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise PlPruningError(f"{key}={value!r} is a file, not a folder; give a folder for the run's outputs")
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise PlPruningError(f"{key}={value!r} cannot be written ({err.strerror or err}); "
                                 "give a folder you can write") from None


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _recorded(cfg: DictConfig) -> dict[str, Any]:
    tree = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in tree.items() if k not in _NOT_RECORDED}


def check_run_folder(folder: Path, cfg: DictConfig, classifier: L.LightningModule) -> None:
    """A run folder records its configuration (:data:`RUN_RECORD`); a rerun in a folder
    whose ``last.ckpt`` it would resume from must be of the same configuration, and the
    checkpoints must fit the network (checked before anything loads them). Then the
    record is written.

    Raises:
        PlPruningError: the folder's checkpoints belong to another configuration (the keys
            that differ named, with both values), or do not fit the network."""
    record, current = folder / RUN_RECORD, _recorded(cfg)
    lasts = sorted(folder.glob("*/last.ckpt"))
    if lasts and record.is_file():
        there, here = _flat(yaml.safe_load(record.read_text()) or {}), _flat(current)
        differ = [k for k in sorted(set(there) | set(here)) if there.get(k, "(unset)") != here.get(k, "(unset)")]
        if differ:
            shown = "; ".join(f"{k}={there.get(k, '(unset)')!r} there, {here.get(k, '(unset)')!r} here"
                              for k in differ[:3])
            more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
            raise PlPruningError(f"run folder {str(folder)!r} holds the checkpoints of another configuration "
                                 f"({record.name}): {shown}{more}; run in another folder (hydra.run.dir=...) "
                                 "or remove this one to start again")
    elif lasts:  # a folder without a record: its checkpoints must at least fit the network
        for last in lasts:
            try:
                load_weights(copy.deepcopy(classifier.net), last, what="this configuration's network",
                             name=f"{last.parent.name}/{last.name}")
            except PlPruningError as err:
                raise PlPruningError(f"run folder {str(folder)!r} holds the checkpoints of another configuration: "
                                     f"{err}; run in another folder (hydra.run.dir=...) or remove this one") from None
    write_text_atomic(record, yaml.safe_dump(current, sort_keys=False))


def check_run_config(cfg: DictConfig) -> None:
    """Check a composed ``pl-prune`` config.

    Raises:
        PlPruningError: the first bad value, named: a mandatory value not given (``???``),
            a seed that is not an integer, a baseline fit of no epochs or of endless ones
            (``trainer.max_epochs`` < 1 without ``model.checkpoint``: an untrained network
            would be "pruned"), a pruning fit of no epochs, a measurement batch of no
            samples, or ``trainer=gpu`` where no GPU is visible.
    """
    missing = []
    for key in cfg:
        if key == "hydra":
            continue
        if OmegaConf.is_missing(cfg, key):
            missing.append(str(key))
        elif OmegaConf.is_config(cfg[key]):
            missing += sorted(OmegaConf.missing_keys(cfg[key]))  # full keys: "data.root"
    if missing:
        hint = " (the folder or .tar.gz of the images)" if missing[0] == "data.root" else ""
        raise PlPruningError(f"{missing[0]} must be given{hint}: add {missing[0]}=... to the command line")
    check_int("seed", cfg.get("seed"))
    if not cfg.model.get("checkpoint"):
        epochs = cfg.trainer.get("max_epochs")
        if not is_int(epochs) or epochs < 1:
            raise PlPruningError(f"trainer.max_epochs must be an integer >= 1 to train the baseline, got {epochs!r} "
                                 "(to prune a trained network instead, give model.checkpoint=...)")
    pruning = cfg.get("pruning")
    if pruning_on(pruning):
        check_int("pruning.fit.max_epochs", pruning.fit.get("max_epochs"), 1)
    check_int("measure.batch_size", cfg.measure.get("batch_size"), 1)
    check_int("measure.num_threads", cfg.measure.get("num_threads"), 1)
    if cfg.trainer.get("accelerator") in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise PlPruningError("trainer=gpu needs a CUDA GPU, and none is visible here; use trainer=cpu")
