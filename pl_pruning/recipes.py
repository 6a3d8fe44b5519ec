"""The app's pruning presets for a Trainer of your own: the same YAML, the same callbacks.

    recipe = pl_pruning.recipes.recipe("at_once", "controller.target_macs=0.3333")
    trainer = L.Trainer(max_epochs=recipe.max_epochs, callbacks=recipe.callbacks)

``"at_once"`` is the recommended path, ``"two_phase"`` the paper's method (``conf/pruning/``;
docs/CONFIGURATION.md lists every key). Overrides are Hydra's, relative to the ``pruning``
node: ``"controller.max_drop=0.01"``, ``"freeze.enabled=false"``, ``"fit.max_epochs=60"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch.callbacks import Callback

__all__ = ["Recipe", "recipe"]


@dataclass
class Recipe:
    """A preset's callbacks (in hook order) and its pruning fit's settings."""

    callbacks: list[Callback] = field(default_factory=list)
    max_epochs: int = 0  # the pruning fit's whole budget (steps and final fine-tune)
    lr: float = 0.0  # the fine-tuning learning rate
    scheduler: str = "none"  # the fine-tuning schedule the app gives the module
    settings: dict[str, Any] = field(default_factory=dict)  # the composed ``pruning`` node


def recipe(preset: str = "at_once", *overrides: str) -> Recipe:
    """The callbacks and fit settings of ``conf/pruning/<preset>.yaml`` with ``overrides``.

    Raises:
        PlPruningError: a bad value (the constructors' checks).
        hydra.errors.MissingConfigException: an unknown preset (the message lists them).
    """
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from pl_pruning.cli.pruning_node import pruning_callbacks

    with initialize_config_module(version_base="1.3", config_module="pl_pruning.conf"):
        cfg = compose(config_name="config", overrides=[f"pruning={preset}", *(f"pruning.{o}" for o in overrides)])
    node = cfg.pruning
    return Recipe(callbacks=pruning_callbacks(node), max_epochs=int(node.fit.max_epochs), lr=float(node.fit.lr),
                  scheduler=str(node.fit.scheduler), settings=OmegaConf.to_container(node, resolve=True))
