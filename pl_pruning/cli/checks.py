"""The command line's values that would fail only after minutes of work, or give a result
that looks real and is not, checked before anything is built or trained."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from pl_pruning.cli.pruning_node import pruning_on
from pl_pruning.errors import PlPruningError
from pl_pruning.validate import check_int, is_int

__all__ = ["check_run_config"]


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
