"""PhaseController: two-phase filter pruning (global, then layer-wise) inside ``Trainer.fit``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from dataclasses import fields
from functools import partial
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from pl_pruning.callbacks import loops
from pl_pruning.callbacks.logs import info, log_record, warn_untraceable, write_report
from pl_pruning.callbacks.lookup import find_callback
from pl_pruning.checkpoint import adapt_shapes_on_load
from pl_pruning.errors import PlPruningError
from pl_pruning.measure import channel_counts
from pl_pruning.pruning import optimizer_state, run_state
from pl_pruning.pruning.latency import RETIME_SHARE, LatencyModel, LatencyTable
from pl_pruning.pruning.planner import MEAN_KEY
from pl_pruning.pruning.preflight import Preflight, preflight
from pl_pruning.pruning.pruner import Pruner
from pl_pruning.pruning.run_state import Phase, RunState, StepRecord
from pl_pruning.pruning.schedule import Decision, Network, Schedule, cosine_factor, target_in_macs
from pl_pruning.scoring import DEFAULT_CRITERION, get_criterion
from pl_pruning.structure.batches import example_input
from pl_pruning.structure.graph import resolve_ignored
from pl_pruning.validate import check_bool, check_choice, check_int, check_names, check_number

_SETTINGS = frozenset(f.name for f in fields(Schedule))


class PhaseController(Callback):
    r"""Drive two-phase pruning from validation to validation (the 2PFPCE loop).

    The baseline is the network as it comes to ``fit``: validated once before any training.
    After every validation the run advances **baseline -> global (Phase I) -> layerwise
    (Phase II) -> final -> done** (see :mod:`pl_pruning.pruning.schedule`): a step removes
    the lowest-scored filters (of all coupled groups together until a ``global_step`` share
    of the MACs, then of one group at a time, round-robin), is fine-tuned (the learning rate
    follows a cosine from its value down to zero in every fine-tuning window), and is
    accepted when ``monitor`` dropped at most ``max_drop`` from the baseline (the next step
    grows), else rolled back (the step halves). Rank 0 takes one
    :class:`~pl_pruning.pruning.schedule.Decision` per validation and broadcasts it once;
    every rank applies it (surgery, rollback, optimizers rebuilt with the state of the
    surviving channels, DDP wrapped again). The run state goes into checkpoints.

    Args:
        criterion: a name from :data:`pl_pruning.scoring.CRITERIA`.
        phases: ``["global"]``, ``["layerwise"]`` or ``["global", "layerwise"]``.
        global_step: share of the network's current MACs removed per Phase-I step.
        layer_step: share of a group's filters removed per Phase-II step.
        min_step: a phase (in Phase II, a group) ends when its step falls below this.
        grow: an accepted step makes the next one of its phase (group) ``grow`` times
            larger, at most half (:data:`~pl_pruning.pruning.schedule.MAX_STEP`); a
            rolled-back one halves it.
        max_drop: allowed drop of ``monitor`` from the baseline, absolute, in ``(0, 1)``. The
            final network is checked against it too; one that misses it is replaced by the
            last accepted network if that one did better (``report()["final_check"]``).
        reference: ``"baseline"`` (a step is accepted when the network is within ``max_drop``
            of the baseline) or ``"accepted"`` (within ``max_drop`` of the accepted network the
            step was cut from: each step may cost ``max_drop``; meant with ``target_macs``,
            where the target is what the run must reach and the final check reports the
            whole drop).
        recheck: a rejection within one standard error of the validation accuracy above
            ``max_drop`` is fine-tuned one more epoch and judged again.
        screen, screen_drop, screen_batches: the cheap screen (:mod:`pl_pruning.pruning.screen`):
            before a step's epoch, cut a copy, re-estimate its BatchNorm on ``screen_batches``
            training batches and, if it loses more than ``screen_drop`` accuracy on as many
            validation batches, halve the step (no epoch spent) and screen again.
        finetune_epochs: fine-tuning epochs after each surgery before the decision. With 0,
            every step is judged at once, before the first epoch: the cut network's BatchNorm
            is re-estimated on ``screen_batches`` training batches and it is validated (its
            statistics plan the next step), so the whole budget goes to the final fine-tune
            (with ``fill_budget``); ``max_drop`` then bounds the loss of an unfine-tuned cut.
        final_epochs: fine-tuning epochs of the final network.
        fill_budget: when pruning ends before ``max_epochs`` (a ``target_macs`` reached, no
            step left), the final fine-tune takes every epoch left (at least ``final_epochs``):
            a fixed training budget all spent, as pipelines that prune then fine-tune spend it.
        finetune_schedule: ``"cosine"`` (the LR from its value down to zero over every
            fine-tuning window) or ``"constant"``; off when the module has an LR scheduler.
        step_lr: the learning rate of a step's fine-tuning window as a share of the
            optimizer's own, in ``(0, 1]`` (the final fine-tune uses it whole). On a
            converged network one epoch at the full fine-tuning rate costs accuracy even
            with nothing pruned, which a step's judgment would then count as the cut's.
        monitor, mode: the metric and whether higher (``"max"``) or lower is better.
        normalize: ``"per-layer"``, ``"none"`` or ``"cost-aware"`` (global ranking).
        layer_order: a name in :data:`pl_pruning.pruning.planner.LAYER_ORDERS` (``by_score``,
            ``by_macs``, ``front_to_back``, ``back_to_front`` or one registered with
            :func:`~pl_pruning.pruning.planner.register_layer_order`).
        target_macs: stop at these MACs per sample (``<= 1``: a fraction of the baseline's).
        target_latency: stop at this latency on the ``latency`` runtime instead, in one of two
            explicit forms: ``"25ms"`` (milliseconds per batch) or ``"40%"`` (of the baseline's
            latency measured there); steps are then sized in milliseconds saved
            (:mod:`pl_pruning.pruning.latency`), and a step that runs more than 5% under the
            target is rolled back and halved (``past_target``), as is one timed no faster than
            the network it was cut from (``no_faster``). Not with ``target_macs``.
        latency: where latency is measured, for ``target_latency``, ``normalize="latency-aware"``
            and ``round_to="auto"`` (without one of them, or a ``table``, nothing is measured): ``runtime`` (``eager`` or ``onnxruntime``, on the CPU),
            ``batch_size`` (64), ``num_threads`` (1), ``min_run_time``, ``rounds``,
            ``memory_format`` (eager: ``contiguous`` or ``channels_last``); ``table``: a
            saved :class:`~pl_pruning.pruning.latency.LatencyTable` to use instead of measuring
            on this machine (its predictions only), ``save_table``: where to save the one
            measured here. The table is measured at the start of the fit (rank 0) and every
            network cut is timed on it, so the report shows the prediction's error.
        max_steps: at most this many surgeries (``max_epochs`` is a budget too: no step
            starts unless its fine-tuning and the final fine-tune still fit).
        compensate, ignored_layers, min_channels, round_to: the surgery's settings, as in
            :class:`~pl_pruning.pruning.pruner.Pruner` (bias compensation, layers never pruned, ...);
            ``round_to``: widths above it stay multiples of it, narrower ones are free;
            ``round_to="auto"``: the largest multiple the latency table measured to pay on its
            runtime (None when none does).
        report_dir: where the report goes (default ``trainer.default_root_dir``).
        on_unprunable: what a fit that cannot prune does (:meth:`preflight`: no group can
            lose a filter, ``target_macs`` out of reach, no epochs for a step):
            ``"error"`` refuses it before any epoch; ``"warn"`` warns, runs (the network
            is returned as it was, or as far as it can be pruned) and records why in
            ``report()["preflight"]``.

    Raises:
        PlPruningError: a bad argument (at construction); at setup, what the fit lacks (a
            validation loop, EntropyStatistics for a data criterion, a layer an
            ``ignored_layers`` entry matches), a fit that cannot prune (:meth:`preflight`,
            unless ``on_unprunable="warn"``); a ``monitor`` never logged.

    Example::

        controller = PhaseController(max_drop=0.02)
        trainer = Trainer(callbacks=[EntropyStatistics(), controller, MaxEntropyFreeze(0.1)])
        trainer.fit(model, datamodule=dm)
        controller.history
    """

    def __init__(self, criterion: str = DEFAULT_CRITERION, *, screen_batches: int = 4,
                 finetune_schedule: str = "cosine", step_lr: float = 1.0, monitor: str = "val_acc",
                 compensate: bool = True, ignored_layers: Iterable[str] = (), report_dir: str | None = None,
                 latency: Mapping[str, Any] | None = None, on_unprunable: str = "error", **settings: Any) -> None:
        # The decision rule's settings (phases ... round_to) are declared once, with their
        # defaults and checks, as the fields of Schedule; the signature lists them (below).
        unknown = sorted(set(settings) - _SETTINGS)
        if unknown:
            raise PlPruningError(f"PhaseController takes no argument {unknown[0]!r}; its arguments: "
                                 + ", ".join(inspect.signature(type(self)).parameters))
        self.criterion_name = get_criterion(criterion).name  # validates the name
        self.monitor, self.report_dir = monitor, report_dir
        self.on_unprunable = check_choice("on_unprunable", on_unprunable, ("error", "warn"))
        self.preflight_result: Preflight | None = None
        self.finetune_schedule = check_choice("finetune_schedule", finetune_schedule, ("cosine", "constant"))
        self.step_lr = check_number("step_lr", step_lr, 0, high=1, low_open=True)
        auto_round = settings.get("round_to") == "auto"  # the latency table picks it
        self.schedule = Schedule(**{**settings, "round_to": None} if auto_round else settings)
        normalize = self.schedule.normalize
        self.latency_settings = self._latency_settings(latency, auto_round)
        self.latency_model: LatencyModel | None = None
        if "global" not in self.schedule.phases and self.schedule.normalize != "per-layer":
            rank_zero_warn(f"[PhaseController] normalize={normalize!r} has no effect: it puts the layers' "
                           f"scores on one scale for the global phase's ranking, and phases="
                           f"{self.schedule.phases} has no global phase")
        self.screen_batches = check_int("screen_batches", screen_batches, 1)
        mode = self.schedule.mode
        backwards = {"max": ("loss", "err"), "min": ("acc", "f1", "auroc", "precision", "recall")}[mode]
        if any(word in monitor.lower() for word in backwards):
            rank_zero_warn(f"[PhaseController] mode={mode!r} with monitor={monitor!r}: {monitor} reads as a "
                           f"metric where {'lower' if mode == 'max' else 'higher'} is better, so every step "
                           f"would be judged backwards; set mode={'min' if mode == 'max' else 'max'!r}")
        self.pruner = Pruner(check_names("ignored_layers", ignored_layers), self.schedule.min_channels,
                             self.schedule.round_to, check_bool("compensate", compensate))
        self._tracked = {self.criterion_name}
        self._statistics = None  # the fit's EntropyStatistics (found at setup), or None
        self._restored = False  # rank 0 restored the accepted network while deciding
        self._before_training = False  # the baseline validation, before the first epoch
        self._last_epoch: int | None = None  # the fit's last epoch, once the final fine-tune is planned
        self.run = RunState(step=self.schedule.global_step)

    # ------------------------------------------------------------------ public

    def __getattr__(self, name: str) -> Any:
        """The schedule's settings read as the controller's own (``controller.max_drop``)."""
        schedule = self.__dict__.get("schedule")
        if schedule is not None and name in _SETTINGS:
            return getattr(schedule, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _latency_settings(self, latency: Mapping[str, Any] | None, auto_round: bool) -> dict[str, Any] | None:
        """The latency model's settings, checked; None when nothing asks for latency."""
        if latency is not None and not isinstance(latency, Mapping):
            raise PlPruningError(f"latency must be a mapping of settings (runtime, batch_size, num_threads, ...), "
                                 f"got {latency!r}")
        settings = dict(latency or {})
        _, files = LatencyModel.split(settings)  # a bad setting fails now
        wanted = (auto_round or self.schedule.target_latency is not None or any(files.values())
                  or self.schedule.normalize == "latency-aware")
        return {**settings, "auto_round": auto_round} if wanted else None

    ignored_layers = property(lambda self: self.pruner.ignored_layers)
    compensate = property(lambda self: self.pruner.compensate)

    @property
    def state(self) -> str:
        return self.run.phase.value

    @property
    def history(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.run.history]

    @property
    def is_finetuning(self) -> bool:
        """True in the epochs after a surgery and in the final fine-tune."""
        return self.run.phase in (*run_state.PRUNING, Phase.FINAL) and self.run.baseline is not None

    def track_criterion(self, name: str) -> None:
        """Keep scores of ``name`` for the current filters (used by MaxEntropyFreeze)."""
        self._tracked.add(get_criterion(name).name)

    def current_scores(self, criterion: str | None = None) -> dict[str, Tensor]:
        """Latest known raw scores of the current filters, by layer (NaN if never scored)."""
        key = criterion or self.criterion_name
        return self.run.scores.current(key if key == MEAN_KEY else get_criterion(key).name)

    # ------------------------------------------------------------------ setup & checks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from pl_pruning.callbacks.entropy_statistics import EntropyStatistics

        self._statistics = find_callback(trainer, EntropyStatistics)
        needs_data = sorted(c for c in self._tracked if get_criterion(c).needs_data)
        if needs_data and self._statistics is None:
            raise PlPruningError(
                f"criterion {needs_data[0]!r} is computed from activation statistics: add "
                "EntropyStatistics() to the Trainer's callbacks, or choose a data-free criterion (l1, random)")
        loops.require_validation_every_epoch(trainer, pl_module)
        resolve_ignored(pl_module, self.ignored_layers)  # a bad entry fails now, not after an epoch
        if example_input(pl_module) is not None and self.preflight_result is None:
            self.preflight(pl_module, trainer.max_epochs)
        adapt_shapes_on_load(pl_module)  # fit(ckpt_path=...) after a surgery: the pruned shapes first

    def preflight(self, pl_module: nn.Module, max_epochs: int | None = None) -> Preflight:
        """What this run can prune of ``pl_module`` (as given, with ``example_input_array``),
        checked before any training: every coupled group and the filters it can lose under
        ``min_channels`` and ``round_to``, whether ``target_macs`` is within reach and
        whether ``max_epochs`` leaves room for one step. ``fit`` calls it in ``setup``
        (or at the first validation batch, for a module without ``example_input_array``);
        the app calls it before the baseline trains.

        Raises:
            PlPruningError: the run cannot prune (the reason named: the grouped convolution,
                the ``min_channels``, the target, the budget), unless ``on_unprunable="warn"``;
                an ``ignored_layers`` entry that matches nothing.
        """
        resolve_ignored(pl_module, self.ignored_layers)
        graph = self.pruner.graph(pl_module)
        warn_untraceable(graph.untraceable)
        s = self.schedule
        result = preflight(graph, min_channels=s.min_channels, round_to=s.round_to,
                           target_macs=target_in_macs(s.target_macs, graph.macs))
        if (result.reason is None and max_epochs is not None and max_epochs > 0 and s.finetune_epochs > 0
                and s.finetune_epochs + s.final_epochs > max_epochs):
            result.reason = (f"max_epochs={max_epochs} leaves no room for a step: each needs finetune_epochs="
                             f"{s.finetune_epochs} and then the final fine-tune final_epochs={s.final_epochs}")
        self.preflight_result = result
        if result.reason is not None:
            if self.on_unprunable == "error":
                raise PlPruningError(f"{result.reason}; to run anyway, set on_unprunable='warn'")
            rank_zero_warn(f"[PhaseController] nothing will be pruned: {result.reason}")
        else:
            summary = result.summary()
            info(f"[PhaseController] pre-flight: {summary['prunable_groups']} of {summary['groups']} "
                 f"coupled groups prunable, up to {summary['filters_removable']} of {summary['filters']} filters")
        return result

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if example_input(pl_module) is None:  # no example_input_array: the first batch's input
            pl_module.example_input_array = example_input(pl_module, batch)
            if self.preflight_result is None:
                self.preflight(pl_module, trainer.max_epochs)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loops.monitored_value(trainer, self.monitor)  # fails early, before any training, on a wrong key

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = self.run
        if run.phase is Phase.DONE:  # resumed from the checkpoint of a finished run
            trainer.should_stop = True
            return
        if not run.base_lrs:
            run.base_lrs = [[g["lr"] for g in o.param_groups] for o in trainer.optimizers]
        if self._sets_lr and trainer.lr_scheduler_configs:
            rank_zero_warn("[PhaseController] the module configures an LR scheduler: it sets the fine-tuning "
                           "learning rate (finetune_schedule='cosine' and step_lr are left out)")
        if self.latency_settings is not None and self.latency_model is None:
            self._build_latency_model(trainer, pl_module)
        if run.phase is Phase.BASELINE and trainer.global_step == 0:
            self._before_training = True  # the baseline is the network given, before any epoch
            try:
                loops.validate_now(trainer)
                while run.pending is not None and self.schedule.window(run) == 0:  # finetune_epochs=0
                    loops.reestimate_batchnorm_now(trainer, pl_module, self.screen_batches)
                    loops.validate_now(trainer)  # judges the step, cuts the next one
            finally:
                self._before_training = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._sets_lr or not self.is_finetuning or trainer.lr_scheduler_configs:
            return
        factor = self.step_lr if self.run.phase in run_state.PRUNING else 1.0
        if self.finetune_schedule == "cosine":
            factor *= cosine_factor(self.run.epochs_since_surgery, batch_idx,
                                    trainer.num_training_batches, self.schedule.window(self.run))
        loops.scale_learning_rates(trainer, self.run.base_lrs, factor)

    def _build_latency_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0 measures the latency table (or loads it; a resumed run takes its own from the
        checkpoint and times against its accepted network); every rank gets the table, and
        with ``round_to="auto"`` the multiple it chose."""
        settings = {k: v for k, v in self.latency_settings.items() if k != "auto_round"}
        table, model = self.run.latency_table, None
        if trainer.is_global_zero:
            if table is None:
                info("[PhaseController] measuring the latency table ...")
                model = LatencyModel.build(pl_module, settings, self.ignored_layers)
                table = model.table.to_dict()
                info(f"[PhaseController] latency table measured in {model.table.fit_s:.0f} s: "
                     f"{model.table.reference_ms:.2f} ms per batch on {model.runtime.name}")
            else:
                accepted = self.run.accepted["record"].get("latency_ms") if self.run.accepted else None
                here = accepted is not None and not settings.get("table")
                model = LatencyModel(LatencyTable.from_dict(table), pl_module if here else None, accepted)
        table = trainer.strategy.broadcast(table, src=0)
        self.run.latency_table = table
        self.latency_model = model or LatencyModel(LatencyTable.from_dict(table))
        if self.latency_settings["auto_round"]:
            measured = self.latency_model.table
            chosen = self.schedule.round_to = self.pruner.round_to = measured.multiple()
            info(f"[PhaseController] round_to=auto: {chosen} (the largest multiple that paid on "
                 f"{table['runtime']['name']}, of {', '.join(map(str, measured.paying())) or 'none'}; widths at or "
                 "below it stay free)")

    def _latency_now(self, pl_module: L.LightningModule, shift: float = 0.0,
                     before: float | None = None) -> tuple[float | None, float]:
        """The network's latency as it is: timed (None with a table of another machine) and
        predicted, plus ``shift`` (a cut's prediction is anchored on the timing of the network
        it was cut from, whose latency is ``before``). A timing more than ``RETIME_SHARE`` off
        the prediction, or not under ``before``, is taken twice more and the median stands
        (:meth:`LatencyModel.measure`); the log says so."""
        model = self.latency_model
        predicted = model.table.predict(self.pruner.graph(pl_module)) + shift
        measured, readings = model.measure(pl_module, expected=predicted, before=before), model.readings
        if len(readings) > 1:
            why = (f"more than {RETIME_SHARE:.0%} off" if abs(readings[0] / predicted - 1) > RETIME_SHARE
                   else f"no faster than the {before:.2f} ms it was cut from")
            info(f"[PhaseController] the network timed {readings[0]:.2f} ms against {predicted:.2f} ms predicted, "
                 f"{why}: timed twice more ({readings[1]:.2f}, {readings[2]:.2f} ms), the median stands")
        return measured, predicted

    @property
    def _sets_lr(self) -> bool:
        """Whether the controller sets the learning rate while fine-tuning."""
        return self.finetune_schedule == "cosine" or self.step_lr != 1.0

    def planned_epochs(self, trainer: L.Trainer) -> int | None:
        """The epochs the fit will have run when it ends, as far as known now (a progress
        bar's total): ``trainer.max_epochs`` until the final fine-tune is planned, then the
        epoch it ends on; ``None`` without ``max_epochs``."""
        if self.run.phase is Phase.DONE:
            return trainer.current_epoch + 1
        if self._last_epoch is not None and self.run.phase is Phase.FINAL:
            return self._last_epoch + 1 if trainer.max_epochs is None else min(self._last_epoch + 1, trainer.max_epochs)
        return trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None

    # ------------------------------------------------------------------ the loop

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.run.phase is Phase.DONE:
            return
        metric = loops.monitored_value(trainer, self.monitor)
        if not math.isfinite(metric):
            rank_zero_warn(f"[PhaseController] {self.monitor}={metric}: the step is rolled back")
        if self.run.phase is Phase.BASELINE:
            self._warn_if_out_of_scale(metric)
            self.run.noise = loops.noise_at_bound(trainer, metric, self.schedule.max_drop, self.schedule.mode, self.monitor)
        self.pruner.refresh(self.run.scores, pl_module, self._tracked,
                            self._statistics.collected if self._statistics is not None else None)
        decision = None
        if trainer.is_global_zero:  # one decision, taken where the model is restored first
            screen = loops.screen_for(trainer, pl_module, self.pruner, lambda: self.run.scores,
                                      self.screen_batches) if self.schedule.screen else None
            net = Network(lambda: self.pruner.scored(pl_module, self.current_scores()),
                          lambda: self.pruner.cost(pl_module),
                          lambda: self._restore_accepted(pl_module, mark=True), screen)
            if self.latency_model is not None:
                net.latency = lambda: self._latency_now(pl_module)
                net.latency_per_filter = partial(self.latency_model.table.per_filter, round_to=self.schedule.round_to)
            done = 0 if self._before_training else trainer.current_epoch + 1
            decision = self.schedule.decide(self.run, metric, net, done, trainer.max_epochs)
        self._apply(trainer, pl_module, trainer.strategy.broadcast(decision, src=0))

    def _warn_if_out_of_scale(self, metric: float) -> None:
        """A metric outside [0, 1] (accuracy in percent) with a fractional ``max_drop``: every
        step's drop would be measured in other units than the bound."""
        if math.isfinite(metric) and not 0.0 <= metric <= 1.0 and "loss" not in self.monitor.lower():
            rank_zero_warn(f"[PhaseController] {self.monitor}={metric:.4g} is outside [0, 1] while max_drop="
                           f"{self.schedule.max_drop} is a fraction: a drop of 1 point in percent already "
                           f"exceeds it, so every step would be rolled back; log {self.monitor} as a fraction")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = self.run
        if run.phase in (*run_state.PRUNING, Phase.FINAL) and run.accepted is not None:
            rank_zero_warn("[PhaseController] training ended before pruning finished (max_epochs?); "
                           "restoring the last accepted network")
            if run.pending is not None:
                self._restore_accepted(pl_module)
            run.phase = Phase.DONE
            self._write_report(trainer, pl_module, interrupted=True)

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, d: Decision) -> None:
        """Every rank: record the judged step, keep or restore the network, cut the plan."""
        run = self.run
        if d.judged is None or d.judged.phase != Phase.BASELINE.value:
            run.epochs_since_surgery += 1
        if d.judged is not None:
            self._record(trainer, d.judged)
            run.pending = None
            if d.judged.phase == Phase.BASELINE.value:
                run.baseline_cost = {"macs": d.judged.macs, "params": d.judged.params}
                if d.judged.latency is not None:
                    run.baseline_cost["latency_ms"] = d.judged.latency
                run.baseline_channels = channel_counts(pl_module, convs_only=True)
            if d.judged.accepted:
                run.accepted = {**self.pruner.snapshot(pl_module, trainer.optimizers, run.scores),
                                "record": d.judged.to_dict()}
            else:
                if not self._restored:
                    self._restore_accepted(pl_module)
                self._restored = False
                optimizer_state.rebuild(trainer, pl_module, saved=run.accepted["optimizers"])
        for key, value in d.machine.items():
            setattr(run, key, value)
        if d.plan:
            self._prune(trainer, pl_module, d)
        elif d.judged is not None and run.phase is Phase.FINAL:
            run.epochs_since_surgery = 0
            window = self.schedule.window(run)
            # the last epoch of the fit: the next ``window`` epochs (from epoch 0 when judged before training)
            self._last_epoch = trainer.current_epoch + window - (1 if self._before_training else 0)
            done = 0 if self._before_training else trainer.current_epoch + 1
            left = window if not trainer.max_epochs or trainer.max_epochs < 0 else min(window, trainer.max_epochs - done)
            cut = f", {window - left} cut by max_epochs={trainer.max_epochs}" if left < window else ""
            info(f"[PhaseController] final fine-tune of the accepted network: {left} "
                 f"epoch{'s' if left != 1 else ''} left{cut}")
            short = self.schedule.short_of_target(run)
            if short is not None:
                rank_zero_warn(f"[PhaseController] {short}")
        if d.finish:
            self._finish(trainer, pl_module, d.metric if d.judged is None else run.accepted["record"]["metric"])

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, metric: float | None) -> None:
        """The run ends; a final network that misses ``max_drop`` gives way to the last
        accepted one (:meth:`~pl_pruning.pruning.schedule.Schedule.final_check`)."""
        run = self.run
        if not self.schedule.final_check(run, metric):
            self._restore_accepted(pl_module)
            rank_zero_warn(f"[PhaseController] the final network's {self.monitor}={metric:.4f} misses max_drop; "
                           "returning the last accepted network")
        elif not run.final_check["within_max_drop"]:
            rank_zero_warn(f"[PhaseController] the final network's {self.monitor}={metric:.4f} misses max_drop; "
                           "it is kept: the last accepted network did no better")
        run.final_metric = metric
        final = StepRecord(Phase.FINAL.value, None, 0.0, *self.pruner.cost(pl_module), metric=metric,
                           drop=run.final_check["drop"], accepted=run.final_check["within_max_drop"])
        if self.latency_model is not None and trainer.is_global_zero:
            final.latency_ms, final.predicted_latency_ms = self._latency_now(pl_module)
        self._record(trainer, final)
        run.phase = Phase.DONE
        trainer.should_stop = True
        self._write_report(trainer, pl_module)

    # ------------------------------------------------------------------ surgery & rollback

    def _prune(self, trainer: L.Trainer, pl_module: L.LightningModule, d: Decision) -> None:
        run, (phase, layer, step) = self.run, d.planned
        carried = optimizer_state.capture(trainer.optimizers, [c.scheduler for c in trainer.lr_scheduler_configs])
        timed = self.latency_model is not None and trainer.is_global_zero
        before = self.latency_model.table.predict(self.pruner.graph(pl_module)) if timed else None
        result = self.pruner.cut(pl_module, d.plan, run.scores)
        self._statistics_stale()
        optimizer_state.rebuild(trainer, pl_module, carried, result.parameter_changes)
        run.surgeries += 1
        run.epochs_since_surgery = 0
        run.pending = StepRecord(phase, layer, step, *self.pruner.cost(pl_module),
                                 removed=int(result.filters_removed), surgery_s=round(result.seconds, 4),
                                 epoch=trainer.current_epoch, screened_out=d.screened_out)
        if timed:  # the prediction anchored on the network it was cut from (timed then), then timed itself
            anchor = StepRecord(**run.accepted["record"]).latency if run.accepted else None
            run.pending.latency_ms, run.pending.predicted_latency_ms = self._latency_now(
                pl_module, 0.0 if anchor is None else anchor - before,
                anchor if self.schedule.target_latency is not None else None)
            if len(self.latency_model.readings) > 1:
                run.pending.latency_readings = [round(r, 4) for r in self.latency_model.readings]

    def _restore_accepted(self, pl_module: L.LightningModule, mark: bool = False) -> None:
        self._restored = mark  # rank 0 restores while deciding; the others when applying
        self.run.scores = self.pruner.restore(pl_module, self.run.accepted)
        self._statistics_stale()

    def _statistics_stale(self) -> None:
        """The network changed: the statistics collected on it are collected again."""
        if self._statistics is not None:
            self._statistics.invalidate()

    # ------------------------------------------------------------------ reporting & checkpoints

    def _record(self, trainer: L.Trainer, record: StepRecord) -> None:
        self.run.history.append(record)
        log_record(trainer, record, self.monitor,
                   "latency" if self.schedule.target_latency is not None else "MACs")

    def report(self) -> dict[str, Any]:
        """The run's summary: baseline, final network, reductions and every step."""
        latency = {}
        if self.schedule.target_latency is not None:
            latency = {"target_latency": str(self.schedule.target_latency),
                       "target_latency_ms": self.schedule.latency_target_ms(self.run)}
        if self.run.latency_table is not None:
            rt = self.run.latency_table["runtime"]
            latency["latency_runtime"] = {k: rt[k] for k in ("name", "batch_size", "num_threads")}
        report = run_state.summarize(self.run, monitor=self.monitor, mode=self.schedule.mode,
                                     criterion=self.criterion_name, phases=self.schedule.phases,
                                     max_drop=self.schedule.max_drop, target_macs=self.schedule.target_macs, **latency)
        if self.preflight_result is not None:
            report["preflight"] = self.preflight_result.summary()
        return report

    def _write_report(self, trainer: L.Trainer, pl_module: L.LightningModule, interrupted: bool = False) -> None:
        channels = {"before": self.run.baseline_channels, "after": channel_counts(pl_module, convs_only=True)}
        write_report(trainer, {**self.report(), "interrupted": interrupted, "channels": channels}, self.report_dir,
                     latency_table=self.run.latency_table)

    def state_dict(self) -> dict[str, Any]:
        return {**run_state.run_state_dict(self.run), "tracked": sorted(self._tracked)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run = run_state.load_run_state(state_dict, RunState(step=self.schedule.global_step))
        self._tracked |= set(state_dict.get("tracked", []))


def _signature() -> inspect.Signature:
    """PhaseController's signature: ``criterion``, the decision rule's settings (the fields
    of :class:`~pl_pruning.pruning.schedule.Schedule`, with their defaults), then its own."""
    own = inspect.signature(PhaseController.__init__)
    this, criterion, *rest = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    settings = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                  annotation="int | str | None" if f.name == "round_to" else f.type)
                for f in fields(Schedule)]  # round_to="auto": the latency table picks it
    return own.replace(parameters=[this, criterion, *settings, *rest])


PhaseController.__init__.__signature__ = _signature()
