"""pl_pruning: two-phase filter pruning by conditional entropy, as Lightning callbacks.

The three callbacks (and the optional ``Distillation``) go into any ``lightning.Trainer``; the rest works without one:
``prune_filters`` / ``pruning_groups`` (physical removal), ``measure_cost`` (MACs,
parameters, latency; more in :mod:`pl_pruning.measure`), ``save_pruned`` /
``load_pruned`` (pruned networks back into their original classes), ``build_model``
and ``ImageClassifier`` (the model zoo and a LightningModule around it).
"""

import importlib.util as _importlib_util
import sys as _sys
from pathlib import Path as _Path

from pl_pruning.callbacks import Distillation, EntropyStatistics, MaxEntropyFreeze, PhaseController
from pl_pruning.callbacks.logs import console_if_unconfigured as _console_if_unconfigured
from pl_pruning.checkpoint import load_pruned, save_pruned
from pl_pruning.errors import PlPruningError
from pl_pruning.measure import Cost, measure_cost
from pl_pruning.models import available_models, build_model
from pl_pruning.module import ImageClassifier
from pl_pruning.pruning.surgery import prune_filters, pruning_groups


def _find_checkout_conf() -> None:
    """Make the Hydra configs importable as ``pl_pruning.conf`` from a source checkout.

    They live in ``conf/`` at the repository root; an installed wheel carries them as the
    ``pl_pruning.conf`` package (``package-dir`` in pyproject.toml). A checkout on ``sys.path``
    (or installed editable) has no ``pl_pruning/conf``, so its ``conf/`` is registered under that
    name here: the configs come from the same tree as the code.
    """
    package = _Path(__file__).resolve().parent
    conf = package.parent / "conf"
    if (package / "conf" / "__init__.py").is_file() or not (conf / "__init__.py").is_file():
        return
    spec = _importlib_util.spec_from_file_location(
        f"{__name__}.conf", conf / "__init__.py", submodule_search_locations=[str(conf)])
    module = _importlib_util.module_from_spec(spec)
    _sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    globals()["conf"] = module


_find_checkout_conf()
_console_if_unconfigured()

__version__ = "0.1.0"

__all__ = [
    "Cost",
    "Distillation",
    "EntropyStatistics",
    "ImageClassifier",
    "MaxEntropyFreeze",
    "PhaseController",
    "PlPruningError",
    "available_models",
    "build_model",
    "load_pruned",
    "measure_cost",
    "prune_filters",
    "pruning_groups",
    "save_pruned",
]
