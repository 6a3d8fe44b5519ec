"""PhaseController: two-phase filter pruning (global, then layer-wise) inside ``Trainer.fit``."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from pl_pruning.callbacks.lookup import find_callback
from pl_pruning.criteria import (
    DEFAULT_CRITERION,
    NORMALIZATIONS,
    get_criterion,
    per_layer_normalize,
)
from pl_pruning.errors import PlPruningError, choice_error
from pl_pruning.measure import count_macs, count_params

PHASES = ("global", "layerwise")
LAYER_ORDERS = ("by_score", "by_macs", "front_to_back", "back_to_front")
MODES = ("max", "min")
MEAN_KEY = "__mean_activation__"


class PhaseController(Callback):
    r"""Drive two-phase pruning from validation to validation (the 2PFPCE loop).

    After every validation epoch (``on_validation_end``) it advances a state machine:

    * **baseline**: the first validation's ``monitor`` value is the reference;
    * **Phase I, global** (``"global"``): rank the filters of all layers together by
      ``criterion`` (normalised per ``normalize``), remove the lowest ``global_step``
      share of those remaining, fine-tune ``finetune_epochs``, validate. A step is
      accepted when the drop from the baseline is at most ``max_drop``; otherwise the
      network rolls back to the last accepted one and the step halves. The phase ends
      when the step falls below ``min_step``;
    * **Phase II, layer-wise** (``"layerwise"``): greedily, one layer (coupled group) at
      a time in ``layer_order``, the same prune / fine-tune / accept loop with its own
      step (starting at ``layer_step``) per layer;
    * **final**: restore the last accepted network, fine-tune ``final_epochs``, stop.

    Filters that can only go together (convolutions feeding one residual addition, a
    depthwise convolution and the layer before it) form one group; a group's filter is
    scored by the mean of its layers' scores. Removal goes through
    :func:`pl_pruning.prune_filters` (Torch-Pruning's dependency graph), with bias
    compensation from the removed filters' mean activations when ``compensate``.

    After every surgery and rollback the optimizer and LR scheduler are rebuilt through
    ``trainer.strategy.setup_optimizers``; the momentum / Adam state of surviving
    channels and the scheduler's progress carry over. Under DDP the module is wrapped
    again, and every decision (plan, accept or roll back) is taken on rank 0 and
    broadcast, so all ranks remove the same filters.

    The controller's state (phase, steps, baseline, history, the accepted network) is
    saved in Lightning checkpoints; ``trainer.fit(ckpt_path=...)`` resumes where it
    stopped. ``history`` lists every step. A report (JSON, markdown) and plots (PNG) are
    written to ``report_dir`` when the run ends.

    Args:
        criterion: a name from :data:`pl_pruning.criteria.CRITERIA`.
        phases: ``["global"]``, ``["layerwise"]`` or ``["global", "layerwise"]``.
        global_step: share of the remaining prunable filters removed per Phase-I step.
        layer_step: share of a layer's remaining filters removed per Phase-II step.
        min_step: a phase (or, in Phase II, a layer) ends when its step falls below this.
        max_drop: allowed drop of ``monitor`` from the baseline, absolute, in ``(0, 1)``.
        finetune_epochs: fine-tuning epochs after each surgery before the decision.
        final_epochs: fine-tuning epochs of the final network.
        monitor, mode: the metric and whether higher (``"max"``) or lower is better.
        normalize: ``"per-layer"`` (default), ``"none"`` or ``"cost-aware"``; see
            :mod:`pl_pruning.criteria`.
        layer_order: Phase II order: ``"by_score"`` (layers whose filters score lowest
            on average first), ``"by_macs"`` (layers that cost the most MACs first: under
            a tight epoch budget the steps go where they save the most), ``"front_to_back"``
            or ``"back_to_front"``.
        target_macs: stop pruning once the MACs per sample are at most this; a value
            ``<= 1`` is a fraction of the baseline's MACs.
        max_steps: at most this many surgeries in all. The Trainer's ``max_epochs`` is a
            budget too: no step starts unless its fine-tuning and the final fine-tune
            still fit, so a capped run ends with a fine-tuned, accepted network.
        compensate: fold removed filters' mean activations into the consumers' biases.
        ignored_layers: layer names or regular expressions never pruned.
        min_channels: filters every layer keeps at least.
        round_to: channel counts a multiple of this (for fast kernels).
        report_dir: where the report and plots go (default ``trainer.default_root_dir``).

    Raises:
        PlPruningError: at construction for a bad value (named, with what is allowed);
            at setup for a missing validation loop, a data-driven criterion without an
            EntropyStatistics callback, or a module without ``example_input_array``;
            after the sanity check (or the first validation) for a ``monitor`` that is
            never logged.

    Example::

        trainer = Trainer(max_epochs=200, callbacks=[
            EntropyStatistics(), PhaseController(max_drop=0.02), MaxEntropyFreeze(0.1)])
        trainer.fit(model, datamodule=dm)
        controller.history
    """

    def __init__(self, criterion: str = DEFAULT_CRITERION,
                 phases: Sequence[str] = ("global", "layerwise"), global_step: float = 0.2,
                 layer_step: float = 0.25, min_step: float = 0.05, max_drop: float = 0.02,
                 finetune_epochs: int = 1, final_epochs: int = 2, monitor: str = "val_acc",
                 mode: str = "max", normalize: str = "per-layer", layer_order: str = "by_score",
                 target_macs: float | None = None, max_steps: int | None = None,
                 compensate: bool = True, ignored_layers: Iterable[str] = (), min_channels: int = 1,
                 round_to: int | None = None, report_dir: str | None = None) -> None:
        self.criterion_name = get_criterion(criterion).name  # validates the name
        phases = list(phases) if not isinstance(phases, str) else [phases]
        if not phases or any(p not in PHASES for p in phases) or len(set(phases)) != len(phases):
            raise PlPruningError(f"phases must be a non-empty list of distinct names from {list(PHASES)}, "
                                 f"got {phases!r}")
        for name, value in (("global_step", global_step), ("layer_step", layer_step), ("min_step", min_step)):
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise PlPruningError(f"{name} must be in (0, 1), got {value!r}")
        if not isinstance(max_drop, (int, float)) or not 0 < max_drop < 1:
            raise PlPruningError(f"max_drop must be in (0, 1), got {max_drop!r}")
        for name, value in (("finetune_epochs", finetune_epochs), ("final_epochs", final_epochs)):
            if not isinstance(value, int) or value < (1 if name == "finetune_epochs" else 0):
                raise PlPruningError(f"{name} must be an integer >= {1 if name == 'finetune_epochs' else 0}, "
                                     f"got {value!r}")
        if mode not in MODES:
            raise choice_error("mode", mode, MODES)
        if normalize not in NORMALIZATIONS:
            raise choice_error("normalize", normalize, NORMALIZATIONS)
        if layer_order not in LAYER_ORDERS:
            raise choice_error("layer_order", layer_order, LAYER_ORDERS)
        if target_macs is not None and not target_macs > 0:
            raise PlPruningError(f"target_macs must be > 0 or None, got {target_macs!r}")
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
            raise PlPruningError(f"max_steps must be an integer >= 1 or None, got {max_steps!r}")
        if not isinstance(min_channels, int) or min_channels < 1:
            raise PlPruningError(f"min_channels must be an integer >= 1, got {min_channels!r}")
        self.phases = phases
        self.global_step, self.layer_step, self.min_step = float(global_step), float(layer_step), float(min_step)
        self.max_drop = float(max_drop)
        self.finetune_epochs, self.final_epochs = finetune_epochs, final_epochs
        self.monitor, self.mode = monitor, mode
        self.normalize, self.layer_order = normalize, layer_order
        self.target_macs, self.max_steps = target_macs, max_steps
        self.compensate = compensate
        self.ignored_layers = list(ignored_layers)
        self.min_channels, self.round_to = min_channels, round_to
        self.report_dir = report_dir
        self._tracked = {self.criterion_name}
        self._stats: Any = None
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        self.state = "baseline"          # baseline | global | layerwise | final | done
        self.baseline: float | None = None
        self.step = self.global_step     # Phase I step size
        self.layer_queue: list[str] = []  # Phase II: group roots still to prune
        self.layer_steps: dict[str, float] = {}
        self.epochs_since_surgery = 0
        self.pending: dict[str, Any] | None = None
        self.surgeries = 0
        self.history: list[dict[str, Any]] = []
        self.final_metric: float | None = None
        self.baseline_cost: dict[str, int] | None = None
        self.baseline_channels: dict[str, int] = {}
        self._ids: dict[str, Tensor] = {}
        self._cache: dict[str, dict[str, Tensor]] = {}
        self._accepted: dict[str, Any] | None = None

    # ------------------------------------------------------------------ public

    @property
    def is_finetuning(self) -> bool:
        """True in the epochs after a surgery and in the final fine-tune."""
        return self.state in ("global", "layerwise", "final") and self.baseline is not None

    def track_criterion(self, name: str) -> None:
        """Keep scores of ``name`` for the current filters (used by MaxEntropyFreeze)."""
        self._tracked.add(get_criterion(name).name)

    def current_scores(self, criterion: str | None = None) -> dict[str, Tensor]:
        """Latest known raw scores of the current filters, by layer (NaN if never scored)."""
        key = criterion or self.criterion_name
        cache = self._cache.get(key if key == MEAN_KEY else get_criterion(key).name, {})
        return {layer: cache[layer][ids] for layer, ids in self._ids.items() if layer in cache}

    # ------------------------------------------------------------------ setup & checks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from pl_pruning.callbacks.entropy_statistics import EntropyStatistics

        self._stats = find_callback(trainer, EntropyStatistics)
        needs_data = [c for c in self._tracked if get_criterion(c).needs_data]
        if needs_data and self._stats is None:
            raise PlPruningError(
                f"criterion {sorted(needs_data)[0]!r} is computed from activation statistics: add "
                "EntropyStatistics() to the Trainer's callbacks, or choose a data-free criterion (l1, random)")
        if not is_overridden("validation_step", pl_module):
            raise PlPruningError("PhaseController needs a validation loop: "
                                 f"{type(pl_module).__name__} defines no validation_step")
        if trainer.limit_val_batches == 0:
            raise PlPruningError("PhaseController needs a validation loop, but limit_val_batches=0")
        if trainer.check_val_every_n_epoch != 1 or trainer.val_check_interval != 1.0:
            raise PlPruningError(
                "PhaseController decides after every epoch's validation: use check_val_every_n_epoch=1 "
                f"and val_check_interval=1.0, got {trainer.check_val_every_n_epoch} and "
                f"{trainer.val_check_interval}")
        if not isinstance(getattr(pl_module, "example_input_array", None), Tensor):
            raise PlPruningError("PhaseController needs pl_module.example_input_array (a Tensor) "
                                 "to trace the network and count MACs")

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._monitor_value(trainer)  # fails early, before any training, on a wrong key

    def _monitor_value(self, trainer: L.Trainer) -> float:
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            keys = ", ".join(sorted(metrics)) or "none"
            raise PlPruningError(f"monitor={self.monitor!r} is not logged; the logged keys are: {keys}")
        return float(metrics[self.monitor])

    # ------------------------------------------------------------------ the loop

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.state == "done":
            return
        metric = self._monitor_value(trainer)
        self._refresh_cache(pl_module)
        if self.state == "baseline":
            self._take_baseline(trainer, pl_module, metric)
            self._next_step(trainer, pl_module)
            return
        self.epochs_since_surgery += 1
        if self.state == "final":
            if self.epochs_since_surgery >= self.final_epochs:
                self._finish(trainer, pl_module, metric)
            return
        if self.epochs_since_surgery < self.finetune_epochs:
            return
        drop = self._drop(metric)
        accept = bool(trainer.strategy.broadcast(drop <= self.max_drop + 1e-12, src=0))
        entry = dict(self.pending or {}, metric=metric, drop=drop, accepted=accept)
        self.history.append(entry)
        self._log_step(trainer, entry)
        rank_zero_info(f"[PhaseController] {entry['phase']} step {entry['step']:.3f}"
                       f"{' on ' + entry['layer'] if entry.get('layer') else ''}: {self.monitor}={metric:.4f} "
                       f"drop={drop:+.4f} MACs={entry['macs'] / 1e6:.2f}M -> "
                       f"{'accepted' if accept else 'rolled back'}")
        self.pending = None
        if accept:
            self._accepted = self._snapshot(trainer, pl_module, entry)
        else:
            self._rollback(trainer, pl_module)
            if self.state == "global":
                self.step /= 2
            else:
                layer = self.layer_queue[0]
                self.layer_steps[layer] = self.layer_steps.get(layer, self.layer_step) / 2
        self._next_step(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.state in ("global", "layerwise", "final") and self._accepted is not None:
            rank_zero_warn("[PhaseController] training ended before pruning finished (max_epochs?); "
                           "restoring the last accepted network")
            if self.pending is not None:
                self._rollback(trainer, pl_module, rebuild=False)
            self.state = "done"
            self._write_report(trainer, pl_module, interrupted=True)

    # ------------------------------------------------------------------ state machine

    def _drop(self, metric: float) -> float:
        assert self.baseline is not None
        return self.baseline - metric if self.mode == "max" else metric - self.baseline

    def _take_baseline(self, trainer: L.Trainer, pl_module: L.LightningModule, metric: float) -> None:
        self.baseline = metric
        macs, params = self._cost(pl_module)
        self.baseline_cost = {"macs": macs, "params": params}
        self.baseline_channels = self._channels(pl_module)
        entry = {"phase": "baseline", "layer": None, "step": 0.0, "metric": metric, "drop": 0.0,
                 "macs": macs, "params": params, "accepted": True, "removed": 0}
        self.history.append(entry)
        self._log_step(trainer, entry)
        self._accepted = self._snapshot(trainer, pl_module, entry)
        self.state = self.phases[0]
        if self.state == "layerwise":
            self._enter_layerwise(pl_module)
        rank_zero_info(f"[PhaseController] baseline {self.monitor}={metric:.4f}, MACs={macs / 1e6:.2f}M")

    def _next_phase(self, pl_module: L.LightningModule) -> None:
        idx = self.phases.index(self.state) if self.state in self.phases else len(self.phases)
        if idx + 1 < len(self.phases):
            self.state = self.phases[idx + 1]
            if self.state == "layerwise":
                self._enter_layerwise(pl_module)
        else:
            self.state = "final"

    def _budget_left(self, trainer: L.Trainer) -> bool:
        if self.max_steps is not None and self.surgeries >= self.max_steps:
            return False
        # Another step must leave room for its fine-tuning and the final fine-tune.
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            if trainer.current_epoch + 1 + self.finetune_epochs + self.final_epochs > max_epochs:
                return False
        if self.target_macs is not None and self._accepted is not None and self.baseline_cost:
            target = self.target_macs * self.baseline_cost["macs"] if self.target_macs <= 1 else self.target_macs
            if self._accepted["entry"]["macs"] <= target:
                return False
        return True

    def _next_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the next surgery, or move on to the next phase / the final fine-tune."""
        while self.state in ("global", "layerwise"):
            if not self._budget_left(trainer):
                self.state = "final"
                break
            if self.state == "global":
                plan = self._global_plan(pl_module, self.step) if self.step >= self.min_step else {}
                if plan and self._prune(trainer, pl_module, plan, "global", None, self.step):
                    return
                self._next_phase(pl_module)
                continue
            if not self.layer_queue:
                self._next_phase(pl_module)
                continue
            layer = self.layer_queue[0]
            step = self.layer_steps.setdefault(layer, self.layer_step)
            plan = self._layer_plan(pl_module, layer, step) if step >= self.min_step else {}
            if plan and self._prune(trainer, pl_module, plan, "layerwise", layer, step):
                return
            self.layer_queue.pop(0)
        if self.state == "final":
            self.epochs_since_surgery = 0
            rank_zero_info(f"[PhaseController] final fine-tune of the accepted network ({self.final_epochs} epochs)")
            if self.final_epochs == 0:
                self._finish(trainer, pl_module, self._accepted["entry"]["metric"] if self._accepted else None)

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, metric: float | None) -> None:
        self.final_metric = metric
        macs, params = self._cost(pl_module)
        entry = {"phase": "final", "layer": None, "step": 0.0, "metric": metric,
                 "drop": self._drop(metric) if metric is not None else None, "macs": macs,
                 "params": params, "accepted": True, "removed": 0}
        self.history.append(entry)
        self._log_step(trainer, entry)
        self.state = "done"
        trainer.should_stop = True
        self._write_report(trainer, pl_module)

    # ------------------------------------------------------------------ planning

    def _groups(self, pl_module: L.LightningModule) -> list[tuple[Any, Tensor]]:
        """Prunable groups with one raw score per group filter (mean over the group's layers)."""
        from pl_pruning.surgery import pruning_groups

        scores = self.current_scores(self.criterion_name)
        out = []
        for group in pruning_groups(pl_module, pl_module.example_input_array, ignored_layers=self.ignored_layers):
            member = [scores[c] for c in group.convs if c in scores and scores[c].numel() == group.channels]
            if not member:
                continue
            s = torch.stack(member).mean(0)
            out.append((group, torch.nan_to_num(s, nan=float("inf"))))
        return out

    def _normalised(self, pl_module: L.LightningModule, groups: list[tuple[Any, Tensor]]) -> list[Tensor]:
        if self.normalize == "none":
            return [s for _, s in groups]
        normed = [per_layer_normalize(s) for _, s in groups]
        if self.normalize == "cost-aware":
            per_filter = self._macs_per_filter(pl_module)
            costs = [sum(per_filter.get(c, 0.0) for c in g.convs) or 1.0 for g, _ in groups]
            mean_cost = sum(costs) / len(costs)
            normed = [s * (mean_cost / c) for s, c in zip(normed, costs)]
        return normed

    def _global_plan(self, pl_module: L.LightningModule, step: float) -> dict[str, list[int]]:
        groups = self._groups(pl_module)
        if not groups:
            return {}
        total = sum(g.channels for g, _ in groups)
        k = int(step * total)
        if k < 1:
            return {}
        candidates = []
        for (group, _), s in zip(groups, self._normalised(pl_module, groups)):
            for i, v in enumerate(s.tolist()):
                candidates.append((v, group.root, i))
        candidates.sort()
        budget = {g.root: g.channels - self.min_channels for g, _ in groups}
        plan: dict[str, list[int]] = {}
        for _, root, i in candidates:
            if k == 0:
                break
            if budget[root] > 0:
                plan.setdefault(root, []).append(i)
                budget[root] -= 1
                k -= 1
        return plan

    def _layer_plan(self, pl_module: L.LightningModule, layer: str, step: float) -> dict[str, list[int]]:
        for group, s in self._groups(pl_module):
            if group.root != layer:
                continue
            k = min(int(step * group.channels), group.channels - self.min_channels)
            if k < 1:
                return {}
            return {layer: torch.argsort(s, stable=True)[:k].tolist()}
        return {}

    def _enter_layerwise(self, pl_module: L.LightningModule) -> None:
        groups = self._groups(pl_module)
        if self.layer_order == "by_score":
            groups = sorted(groups, key=lambda gs: float(gs[1][torch.isfinite(gs[1])].mean()))
        elif self.layer_order == "by_macs":
            per_filter = self._macs_per_filter(pl_module)
            groups = sorted(groups, key=lambda gs: -gs[0].channels * sum(per_filter.get(c, 0.0)
                                                                          for c in gs[0].convs))
        elif self.layer_order == "back_to_front":
            groups = groups[::-1]
        self.layer_queue = [g.root for g, _ in groups]
        self.layer_steps = {}

    # ------------------------------------------------------------------ surgery & rollback

    def _prune(self, trainer: L.Trainer, pl_module: L.LightningModule, plan: dict[str, list[int]],
               phase: str, layer: str | None, step: float) -> bool:
        from pl_pruning.surgery import prune_filters

        plan = trainer.strategy.broadcast(plan, src=0)
        means = self.current_scores(MEAN_KEY) if self.compensate else None
        old_state = self._optimizer_state(trainer)
        result = prune_filters(pl_module, plan, pl_module.example_input_array,
                               ignored_layers=self.ignored_layers, min_channels=self.min_channels,
                               round_to=self.round_to, channel_means=means, compensate=self.compensate)
        if result.filters_removed == 0:
            return False
        for name, removed in result.removed.items():
            if name in self._ids:
                keep = torch.ones(len(self._ids[name]), dtype=torch.bool)
                keep[torch.as_tensor(removed, dtype=torch.long)] = False
                self._ids[name] = self._ids[name][keep]
        self._rebuild(trainer, pl_module, old_state, result.parameter_changes)
        if self._stats is not None:
            self._stats.invalidate()
        self.surgeries += 1
        self.epochs_since_surgery = 0
        macs, params = self._cost(pl_module)
        self.pending = {"phase": phase, "layer": layer, "step": step, "macs": macs, "params": params,
                        "removed": int(result.filters_removed), "surgery_s": round(result.seconds, 4),
                        "epoch": trainer.current_epoch}
        return True

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, entry: dict) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
            "optimizers": [copy.deepcopy(o.state_dict()) for o in trainer.optimizers],
            "ids": {k: v.clone() for k, v in self._ids.items()},
            "entry": dict(entry),
        }

    def _rollback(self, trainer: L.Trainer, pl_module: L.LightningModule, rebuild: bool = True) -> None:
        from pl_pruning.checkpoint import restore_pruned_shapes

        assert self._accepted is not None
        state = self._accepted["model"]
        restore_pruned_shapes(pl_module, state)
        for name, module in pl_module.named_modules():  # biases that compensation created since
            for key, param in list(module._parameters.items()):
                if param is not None and f"{name}.{key}".lstrip(".") not in state:
                    module._parameters[key] = None
        pl_module.load_state_dict(state)
        self._ids = {k: v.clone() for k, v in self._accepted["ids"].items()}
        if self._stats is not None:
            self._stats.invalidate()
        if rebuild:
            self._rebuild(trainer, pl_module, self._optimizer_state(trainer), None,
                          saved_optimizers=self._accepted["optimizers"])

    # ------------------------------------------------------------------ optimizers

    @staticmethod
    def _optimizer_state(trainer: L.Trainer) -> dict[str, Any]:
        return {
            "state": {id(p): st for o in trainer.optimizers for p, st in o.state.items()},
            "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
        }

    def _rebuild(self, trainer: L.Trainer, pl_module: L.LightningModule, old: dict[str, Any],
                 changes: dict[str, Any] | None, saved_optimizers: list[dict] | None = None) -> None:
        """New optimizers and schedulers for the changed parameters; DDP wrapped again."""
        from torch.nn.parallel import DistributedDataParallel

        strategy = trainer.strategy
        pl_module.to(strategy.root_device)
        if isinstance(strategy.model, DistributedDataParallel):
            strategy.model = pl_module
            strategy.configure_ddp()
        strategy.setup_optimizers(trainer)
        by_new = {id(c.new): c for c in (changes or {}).values()}
        for i, opt in enumerate(trainer.optimizers):
            if saved_optimizers is not None and i < len(saved_optimizers):
                opt.load_state_dict(saved_optimizers[i])
                continue
            for group in opt.param_groups:
                for p in group["params"]:
                    change = by_new.get(id(p))
                    if change is None:
                        st = old["state"].get(id(p))
                        if st:
                            opt.state[p] = st
                    elif change.old is not None and old["state"].get(id(change.old)):
                        opt.state[p] = {k: _slice(v, change.kept, change.old.shape)
                                        for k, v in old["state"][id(change.old)].items()}
        for config, sched_state in zip(trainer.lr_scheduler_configs, old["schedulers"]):
            config.scheduler.load_state_dict(sched_state)
            for group, lr in zip(config.scheduler.optimizer.param_groups, config.scheduler.get_last_lr()):
                group["lr"] = lr

    # ------------------------------------------------------------------ measurements

    def _refresh_cache(self, pl_module: L.LightningModule) -> None:
        """Remember the latest scores of every current filter, by its original index."""
        if not self._ids:
            self._ids = {n: torch.arange(c) for n, c in self._channels(pl_module).items()}
        fresh: dict[str, dict[str, Tensor]] = {}
        stats_ready = self._stats is not None and self._stats.has_statistics
        for name in self._tracked:
            criterion = get_criterion(name)
            if criterion.needs_data:
                if stats_ready:
                    fresh[name] = self._stats.scores(name, normalize="none")
            else:
                fresh[name] = criterion(pl_module, normalize="none")
        if stats_ready:
            fresh[MEAN_KEY] = self._stats.mean_activation()
        for name, scores in fresh.items():
            cache = self._cache.setdefault(name, {})
            for layer, values in scores.items():
                ids = self._ids.get(layer)
                if ids is None or values.numel() != ids.numel():
                    continue
                if layer not in cache:
                    cache[layer] = torch.full((int(ids.max()) + 1 if ids.numel() else 0,), float("nan"))
                cache[layer][ids] = values.detach().float().cpu()

    @staticmethod
    def _channels(pl_module: nn.Module) -> dict[str, int]:
        return {n: m.out_channels for n, m in pl_module.named_modules() if isinstance(m, nn.Conv2d)}

    @staticmethod
    def _cost(pl_module: L.LightningModule) -> tuple[int, int]:
        example = pl_module.example_input_array.to(pl_module.device)
        return count_macs(pl_module, example), count_params(pl_module)

    @staticmethod
    def _macs_per_filter(pl_module: L.LightningModule) -> dict[str, float]:
        """MACs one output filter of each Conv2d costs at the example input's size."""
        out: dict[str, float] = {}
        handles = []
        for name, m in pl_module.named_modules():
            if isinstance(m, nn.Conv2d):
                def hook(module, args, output, name=name):
                    out[name] = float(output.shape[-1] * output.shape[-2] * module.weight[0].numel())
                handles.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                pl_module(pl_module.example_input_array.to(pl_module.device))
        finally:
            for h in handles:
                h.remove()
        return out

    # ------------------------------------------------------------------ reporting

    def _log_step(self, trainer: L.Trainer, entry: dict[str, Any]) -> None:
        metrics = {f"pruning/{k}": float(v) for k, v in entry.items()
                   if isinstance(v, (int, float, bool)) and v is not None and k != "epoch"}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def report(self) -> dict[str, Any]:
        """The run's summary: baseline, final network, reductions and every step."""
        final = next((e for e in reversed(self.history) if e["phase"] == "final"), None)
        last = final or (self._accepted["entry"] if self._accepted else None)
        base = self.baseline_cost or {}
        out: dict[str, Any] = {"monitor": self.monitor, "mode": self.mode, "criterion": self.criterion_name,
                               "phases": self.phases, "max_drop": self.max_drop,
                               "baseline": {"metric": self.baseline, **base}, "history": self.history}
        if last is not None and base:
            out["final"] = {"metric": last["metric"], "macs": last["macs"], "params": last["params"]}
            out["macs_reduction"] = base["macs"] / max(1, last["macs"])
            out["params_reduction"] = base["params"] / max(1, last["params"])
        return out

    def _write_report(self, trainer: L.Trainer, pl_module: L.LightningModule, interrupted: bool = False) -> None:
        if not trainer.is_global_zero:
            return
        from pl_pruning.reports.pruning_report import write_pruning_report

        folder = Path(self.report_dir or trainer.default_root_dir)
        report = self.report()
        report["interrupted"] = interrupted
        report["channels"] = {"before": self.baseline_channels, "after": self._channels(pl_module)}
        paths = write_pruning_report(report, folder)
        rank_zero_info(f"[PhaseController] report: {', '.join(str(p) for p in paths)}")

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "state": self.state, "baseline": self.baseline, "step": self.step,
            "layer_queue": list(self.layer_queue), "layer_steps": dict(self.layer_steps),
            "epochs_since_surgery": self.epochs_since_surgery, "pending": self.pending,
            "surgeries": self.surgeries, "history": list(self.history),
            "final_metric": self.final_metric, "baseline_cost": self.baseline_cost,
            "baseline_channels": self.baseline_channels, "ids": self._ids, "cache": self._cache,
            "accepted": self._accepted, "tracked": sorted(self._tracked),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state = state_dict["state"]
        self.baseline = state_dict["baseline"]
        self.step = state_dict["step"]
        self.layer_queue = list(state_dict["layer_queue"])
        self.layer_steps = dict(state_dict["layer_steps"])
        self.epochs_since_surgery = state_dict["epochs_since_surgery"]
        self.pending = state_dict["pending"]
        self.surgeries = state_dict["surgeries"]
        self.history = list(state_dict["history"])
        self.final_metric = state_dict["final_metric"]
        self.baseline_cost = state_dict["baseline_cost"]
        self.baseline_channels = state_dict["baseline_channels"]
        self._ids = state_dict["ids"]
        self._cache = state_dict["cache"]
        self._accepted = state_dict["accepted"]
        self._tracked |= set(state_dict.get("tracked", []))


def _slice(value: Any, kept: tuple[Tensor | None, ...], shape: torch.Size) -> Any:
    """Optimizer state of a surviving slice: ``value[kept[0]][:, kept[1]]`` for per-element state."""
    if not isinstance(value, Tensor) or value.shape != shape:
        return value
    for dim, idx in enumerate(kept):
        if idx is not None:
            value = value.index_select(dim, idx.to(value.device))
    return value.clone()

