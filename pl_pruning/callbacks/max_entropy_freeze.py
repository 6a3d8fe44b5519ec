"""MaxEntropyFreeze: keep the most informative filters of each layer fixed while the rest adapt."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from pl_pruning.callbacks.logs import info
from pl_pruning.callbacks.lookup import find_callback
from pl_pruning.errors import PlPruningError
from pl_pruning.scoring.criteria import get_criterion
from pl_pruning.structure.batches import example_input
from pl_pruning.validate import check_bool, check_fraction


class MaxEntropyFreeze(Callback):
    r"""Keep the top ``fraction`` highest-entropy filters of every layer bit-identical
    during fine-tuning (the 2PFPCE "maximum-entropy freeze", against over-fitting).

    A frozen filter's convolution weights and bias and the affine weight and bias of the
    BatchNorm that directly follows the convolution are saved when an epoch starts and
    written back after every optimizer step, so they stay bit-identical whatever the
    optimizer does (momentum, weight decay and Adam all move a parameter whose gradient
    is zero; masking gradients alone is not enough). Their gradients are zeroed too, so
    that optimizer state does not build up for them. BatchNorm running statistics are
    not parameters and keep updating.

    When to freeze:

    * with a :class:`~pl_pruning.PhaseController` among the callbacks: in fine-tuning
      epochs only (after each surgery and in the final fine-tune), never while the
      baseline is being measured. The frozen sets are recomputed after every surgery and
      rollback from the controller's scores of the surviving filters.
    * on its own: in every training epoch once statistics exist (after the first real
      validation epoch), recomputed from fresh statistics at each epoch start.

    Scores come from :class:`~pl_pruning.EntropyStatistics` (criterion ``"entropy"``). The
    BatchNorm of each convolution is :attr:`~pl_pruning.structure.graph.NetworkGraph.batchnorm_of`,
    traced once with the module's ``example_input_array`` or else the first training batch.

    Args:
        fraction: share of each layer's filters to freeze, in ``[0, 1)``; ``ceil`` of
            ``fraction * filters`` per layer, at most all but one filter.
        criterion: a registered criterion name (:data:`pl_pruning.scoring.CRITERIA`) that
            ranks the filters (``"entropy"``, the paper's choice).
        enabled: switch the freeze off without removing it from a config.

    Raises:
        PlPruningError: ``fraction`` outside ``[0, 1)``, an unknown ``criterion``, an
            ``enabled`` that is not a bool; at setup, no EntropyStatistics among the callbacks.

    Example::

        stats = EntropyStatistics()
        trainer = Trainer(callbacks=[stats, PhaseController(), MaxEntropyFreeze(fraction=0.1)])
    """

    def __init__(self, fraction: float = 0.1, criterion: str = "entropy", enabled: bool = True) -> None:
        self.fraction = check_fraction("fraction", fraction, zero_ok=True)
        self.criterion = get_criterion(criterion).name
        self.enabled = check_bool("enabled", enabled)
        self.frozen: dict[str, Tensor] = {}
        self._announced = ""  # the last freeze message, logged again only when it changes
        self._saved: list[tuple[nn.Parameter, Tensor, Tensor]] = []
        self._pending = False  # frozen sets chosen, values not saved yet (waiting for a batch)
        self._bn_of: dict[str, str] | None = None  # names survive surgery: traced once
        self._stats: Any = None
        self._controller: Any = None

    # ------------------------------------------------------------------ setup

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        from pl_pruning.callbacks.entropy_statistics import EntropyStatistics
        from pl_pruning.callbacks.phase_controller import PhaseController

        self._stats = find_callback(trainer, EntropyStatistics)
        if self._stats is None:
            raise PlPruningError("MaxEntropyFreeze needs an EntropyStatistics callback among the "
                                 "Trainer's callbacks (it ranks filters by their entropy)")
        self._controller = find_callback(trainer, PhaseController)
        if self._controller is not None:
            self._controller.track_criterion(self.criterion)

    # ------------------------------------------------------------------ hooks

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved = []
        active = self.enabled and self.fraction > 0 and self._should_freeze()
        self.frozen = self._top_filters(self._scores()) if active else {}
        self._pending = bool(self.frozen)
        if self._pending and (self._bn_of is not None or example_input(pl_module) is not None):
            self._save(pl_module, None)  # else at the first batch, which brings an example input

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending:
            self._save(pl_module, batch)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        for p, idx, _ in self._saved:
            if p.grad is not None:
                p.grad[idx] = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._restore()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # No restore here: the epoch's validation (and with it any surgery or rollback) runs
        # before this hook, so the saved values may no longer belong to these parameters.
        # The last training batch has restored them already.
        self._saved = []
        self._pending = False

    # ------------------------------------------------------------------ helpers

    def _save(self, pl_module: L.LightningModule, batch: Any) -> None:
        """Save the frozen filters' values: convolution and BatchNorm weight and bias."""
        if self._bn_of is None:
            from pl_pruning.structure.graph import NetworkGraph

            example = example_input(pl_module, batch)
            if example is None:
                raise PlPruningError(
                    "MaxEntropyFreeze traces the network with an example input: set "
                    "example_input_array on the LightningModule, or use training batches whose "
                    "first element (or 'x' / 'input' key) is the model input")
            self._bn_of = dict(NetworkGraph.of(pl_module, example).batchnorm_of)
        self._pending = False
        for layer, idx in self.frozen.items():
            targets = [pl_module.get_submodule(layer)]
            if layer in self._bn_of:
                targets.append(pl_module.get_submodule(self._bn_of[layer]))
            for module in targets:
                for pname in ("weight", "bias"):
                    p = getattr(module, pname, None)
                    if isinstance(p, nn.Parameter):
                        i = idx.to(p.device)
                        self._saved.append((p, i, p.detach()[i].clone()))
        message = f"[MaxEntropyFreeze] freezing {sum(len(i) for i in self.frozen.values())} filters in {len(self.frozen)} layers"
        if message != self._announced:  # once per change, not every epoch
            self._announced = message
            info(message)

    def _restore(self) -> None:
        with torch.no_grad():
            for p, idx, values in self._saved:
                p[idx] = values

    def _should_freeze(self) -> bool:
        if self._controller is not None:
            return bool(self._controller.is_finetuning)
        return self._stats is not None and self._stats.has_statistics

    def _scores(self) -> dict[str, Tensor]:
        if self._controller is not None:
            return self._controller.current_scores(self.criterion)
        return self._stats.scores(self.criterion)

    def _top_filters(self, scores: dict[str, Tensor]) -> dict[str, Tensor]:
        frozen = {}
        for layer, s in scores.items():
            n = s.numel()
            k = min(n - 1, math.ceil(self.fraction * n))
            if k <= 0:
                continue
            s = torch.nan_to_num(s.float(), nan=-math.inf)
            frozen[layer] = torch.sort(torch.topk(s, k).indices).values
        return frozen

    def state_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "criterion": self.criterion, "enabled": self.enabled}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fraction = check_fraction("fraction", state_dict.get("fraction", self.fraction), zero_ok=True)
        self.criterion = get_criterion(state_dict.get("criterion", self.criterion)).name
        self.enabled = check_bool("enabled", state_dict.get("enabled", self.enabled))
