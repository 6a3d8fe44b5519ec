"""The two-phase schedule: phases, the record of each step, the run state, and the rule
that turns one validation result into one :class:`Decision`.

Lightning-free: :class:`~pl_pruning.callbacks.PhaseController` calls
:meth:`Schedule.decide` after every validation (on rank 0) and applies the decision
(records, rollback, surgery, optimizer rebuild) on every rank. The run, step by step::

    baseline -> global (Phase I) -> layerwise (Phase II) -> final -> done

Phase I removes the lowest ``step`` share of all group filters, ranked together; a step
whose drop from the baseline exceeds ``max_drop`` is rolled back and the step halves; the
phase ends when the step falls below ``min_step``. Phase II does the same one group at a
time, in the layer order, each group with its own step. The budget (``max_steps``,
``target_macs``, the epochs left) can end pruning early; the final fine-tune follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

from pl_pruning.pruning import planner
from pl_pruning.pruning.graph import NetworkGraph
from pl_pruning.pruning.planner import FilterScores

__all__ = ["Decision", "Network", "Phase", "RunState", "Schedule", "StepRecord", "load_run_state",
           "run_state_dict", "summarize"]


class Phase(str, Enum):
    """Where the controller is; the values are what history and reports say."""

    BASELINE = "baseline"
    GLOBAL = "global"
    LAYERWISE = "layerwise"
    FINAL = "final"
    DONE = "done"


PHASES = (Phase.GLOBAL.value, Phase.LAYERWISE.value)
PRUNING = (Phase.GLOBAL, Phase.LAYERWISE)
_MACHINE = ("phase", "baseline", "step", "layer_queue", "layer_steps")  # what a decision sets


@dataclass
class StepRecord:
    """One line of ``history``: a step (or the baseline, or the final network)."""

    phase: str
    layer: str | None
    step: float
    macs: int
    params: int
    removed: int = 0
    metric: float | None = None
    drop: float | None = None
    accepted: bool | None = None
    surgery_s: float | None = None
    epoch: int | None = None

    def describe(self, monitor: str) -> str:
        """One log line."""
        if self.phase == Phase.BASELINE.value:
            return f"baseline {monitor}={self.metric:.4f}, MACs={self.macs / 1e6:.2f}M"
        where = f" on {self.layer}" if self.layer else ""
        return (f"{self.phase} step {self.step:.3f}{where}: {monitor}={self.metric:.4f} drop={self.drop:+.4f} "
                f"MACs={self.macs / 1e6:.2f}M -> {'accepted' if self.accepted else 'rolled back'}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("surgery_s", "epoch")}


@dataclass
class RunState:
    """Everything a run has decided so far: reset, saved and loaded as one."""

    phase: Phase = Phase.BASELINE
    baseline: float | None = None
    step: float = 0.0                                          # Phase I step size
    layer_queue: list[str] = field(default_factory=list)       # Phase II: group roots still to prune
    layer_steps: dict[str, float] = field(default_factory=dict)
    epochs_since_surgery: int = 0
    pending: StepRecord | None = None                          # the step being fine-tuned
    surgeries: int = 0
    history: list[StepRecord] = field(default_factory=list)
    final_metric: float | None = None
    baseline_cost: dict[str, int] | None = None
    baseline_channels: dict[str, int] = field(default_factory=dict)
    scores: FilterScores = field(default_factory=FilterScores)
    accepted: dict[str, Any] | None = None                     # model, optimizers, ids, record


@dataclass
class Decision:
    """What rank 0 decided after one validation; every rank applies it."""

    metric: float
    judged: StepRecord | None = None     # the step just judged, accepted or not
    plan: dict[str, list[int]] = field(default_factory=dict)
    planned: tuple[str, str | None, float] | None = None  # phase, layer, step of the plan
    machine: dict[str, Any] = field(default_factory=dict)  # phase, baseline, step, queue
    finish: bool = False


def run_state_dict(run: RunState) -> dict[str, Any]:
    """``run`` as plain data (records as dicts, the phase as its string), for checkpoints."""
    return {**asdict(run), "phase": run.phase.value}


def load_run_state(state: dict[str, Any], defaults: RunState) -> RunState:
    """The :class:`RunState` saved by :func:`run_state_dict` (missing fields from ``defaults``)."""
    known = {f.name for f in fields(RunState)}
    values = {k: v for k, v in state.items() if k in known}
    values["phase"] = Phase(values.get("phase", defaults.phase))
    if values.get("pending") is not None:
        values["pending"] = StepRecord(**values["pending"])
    values["history"] = [StepRecord(**r) for r in values.get("history", [])]
    if isinstance(values.get("scores"), dict):
        values["scores"] = FilterScores(**values["scores"])
    return replace(defaults, **values)


def summarize(run: RunState, **meta: Any) -> dict[str, Any]:
    """A run's report: ``meta`` (monitor, mode, criterion ...), the baseline, the final (or
    last accepted) network, the reductions, and every step as a dict."""
    history = [r.to_dict() for r in run.history]
    last = next((e for e in reversed(history) if e["phase"] == Phase.FINAL.value),
                run.accepted["record"] if run.accepted else None)
    base = run.baseline_cost or {}
    out: dict[str, Any] = {**meta, "baseline": {"metric": run.baseline, **base}, "history": history}
    if last is not None and base:
        out["final"] = {"metric": last["metric"], "macs": last["macs"], "params": last["params"]}
        out["macs_reduction"] = base["macs"] / max(1, last["macs"])
        out["params_reduction"] = base["params"] / max(1, last["params"])
    return out


@dataclass
class Network:
    """What the schedule asks of the network being pruned (on the deciding rank)."""

    scored: Callable[[], tuple[NetworkGraph, planner.Scored]]  # its graph and group scores, now
    cost: Callable[[], tuple[int, int]]                        # MACs and parameters, now
    restore: Callable[[], None]                                # back to the accepted network


@dataclass
class Schedule:
    """The decision rule. The settings are :class:`~pl_pruning.callbacks.PhaseController`'s
    (documented, defaulted and validated there)."""

    phases: list[str]
    global_step: float
    layer_step: float
    min_step: float
    max_drop: float
    finetune_epochs: int
    final_epochs: int
    mode: str
    normalize: str
    layer_order: str
    target_macs: float | None
    max_steps: int | None
    min_channels: int
    round_to: int | None

    def drop(self, run: RunState, metric: float) -> float:
        """How much worse ``metric`` is than the baseline (positive = worse)."""
        return run.baseline - metric if self.mode == "max" else metric - run.baseline

    def decide(self, run: RunState, metric: float, net: Network, epoch: int,
               max_epochs: int | None) -> Decision:
        """Judge the step just fine-tuned (the baseline is the first accepted one), restore
        the accepted network if it failed (``net.restore``), plan the next surgery.

        Changes ``run``'s decided fields (:attr:`Decision.machine` lists them, for the
        other ranks); collects nothing across processes.
        """
        d = Decision(metric=metric)
        if run.phase is Phase.BASELINE:
            macs, params = net.cost()
            d.judged = StepRecord(Phase.BASELINE.value, None, 0.0, macs, params, metric=metric, drop=0.0,
                                  accepted=True)
            run.baseline, run.phase = metric, Phase(self.phases[0])
            if run.phase is Phase.LAYERWISE:
                self._enter_layerwise(run, net)
        else:
            epochs = run.epochs_since_surgery + 1
            if run.phase is Phase.FINAL or epochs < self.finetune_epochs:
                d.finish = run.phase is Phase.FINAL and epochs >= self.final_epochs
                return d
            drop = self.drop(run, metric)
            d.judged = replace(run.pending, metric=metric, drop=drop, accepted=drop <= self.max_drop + 1e-12)
            if not d.judged.accepted:
                net.restore()
                if run.phase is Phase.GLOBAL:
                    run.step /= 2
                else:
                    run.layer_steps[run.layer_queue[0]] = run.layer_steps.get(run.layer_queue[0],
                                                                              self.layer_step) / 2
        self._plan_next(run, d, net, epoch, max_epochs)
        d.machine = {k: getattr(run, k) for k in _MACHINE}
        return d

    def _plan_next(self, run: RunState, d: Decision, net: Network, epoch: int, max_epochs: int | None) -> None:
        """The next surgery's plan, or on to the next phase / the final fine-tune."""
        while run.phase in PRUNING:
            if not self._budget_left(run, d, epoch, max_epochs):
                run.phase = Phase.FINAL
                break
            graph, scored = net.scored()
            plan: dict[str, list[int]] = {}
            if run.phase is Phase.GLOBAL:
                planned = (Phase.GLOBAL.value, None, run.step)
                if run.step >= self.min_step:
                    plan = planner.global_plan(scored, run.step, graph, normalize=self.normalize,
                                               min_channels=self.min_channels)
            elif run.layer_queue:
                layer = run.layer_queue[0]
                planned = (Phase.LAYERWISE.value, layer, run.layer_steps.setdefault(layer, self.layer_step))
                if planned[2] >= self.min_step:
                    plan = planner.layer_plan(scored, layer, planned[2], min_channels=self.min_channels)
            else:
                planned = None
            d.plan = planner.rounded(plan, scored, self.round_to)
            if d.plan:
                d.planned = planned
                return
            if planned is not None and planned[1] is not None:  # this group is done
                run.layer_queue.pop(0)
                continue
            idx = self.phases.index(run.phase.value)
            run.phase = Phase(self.phases[idx + 1]) if idx + 1 < len(self.phases) else Phase.FINAL
            if run.phase is Phase.LAYERWISE:
                self._enter_layerwise(run, net)
        d.finish = run.phase is Phase.FINAL and self.final_epochs == 0

    def _enter_layerwise(self, run: RunState, net: Network) -> None:
        graph, scored = net.scored()
        run.layer_queue = planner.order_layers(self.layer_order, scored, graph)
        run.layer_steps = {}

    def _budget_left(self, run: RunState, d: Decision, epoch: int, max_epochs: int | None) -> bool:
        if self.max_steps is not None and run.surgeries >= self.max_steps:
            return False
        # Another step must leave room for its fine-tuning and the final fine-tune.
        if max_epochs is not None and max_epochs > 0:
            if epoch + 1 + self.finetune_epochs + self.final_epochs > max_epochs:
                return False
        if self.target_macs is not None:  # d.judged: the baseline, or the step just judged
            base = run.baseline_cost["macs"] if run.baseline_cost else d.judged.macs
            target = self.target_macs * base if self.target_macs <= 1 else self.target_macs
            if (d.judged.macs if d.judged.accepted else run.accepted["record"]["macs"]) <= target:
                return False
        return True
