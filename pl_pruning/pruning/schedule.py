"""The two-phase schedule: phases, the record of each step, the run state, and the rule
that turns one validation result into one :class:`Decision`.

Lightning-free: :class:`~pl_pruning.callbacks.PhaseController` calls
:meth:`Schedule.decide` after every validation (on rank 0) and applies the decision
(records, rollback, surgery, optimizer rebuild) on every rank. The run, step by step::

    baseline -> global (Phase I) -> layerwise (Phase II) -> final -> done

Phase I removes the lowest-ranked filters of all groups together until they save the
``step`` share of the network's current MACs; Phase II visits the groups round-robin in the
layer order, each with its own ``step`` (a share of its filters). An accepted step makes
the next one ``grow`` times larger (at most :data:`MAX_STEP`); a rolled-back one halves it,
again while the halved step would plan the very cut rolled back (with ``round_to`` a step is
whole blocks of filters); a phase (a group) ends when its step falls below ``min_step``. A step is accepted when the
monitored metric dropped at most ``max_drop`` from the baseline (with ``reference="accepted"``,
from the accepted network the step was cut from: each step may cost ``max_drop``, and the
final network is checked against the baseline); a rejection within one
standard error of the validation accuracy (``RunState.noise``) of the bound is fine-tuned
one more epoch and judged again (``recheck``). With ``screen``, a planned step whose cut
loses more than ``screen_drop`` accuracy before any fine-tuning (``Network.screen``) is
halved without spending an epoch. With ``finetune_epochs=0`` a step is judged before any
training, on the cut network with its BatchNorm re-estimated (the controller validates it at
once), so a run reaches its target before its first epoch. ``target_macs`` caps every step so the run
stops on it; with ``target_latency`` instead (milliseconds per batch, or a share of the baseline's
latency, on the latency model's runtime: :mod:`pl_pruning.pruning.latency`) steps are sized in
milliseconds saved (a Phase I step saves the ``step`` share of the current latency), capped by
what the target still allows, and the run stops once the accepted network's latency, measured
after its cut, reaches the target; a step that runs more than :data:`TARGET_TOLERANCE` under
the target (the latency model under-predicted what it saves) is rolled back and halved like a
failed one, so the run ends within that tolerance of its target, or above it when no smaller
step is left, and so is a step timed no faster than the network it was cut from (it bought no
time); the budget (``max_steps``, the epochs left) can end pruning early; the final
fine-tune follows (``final_epochs``, or with ``fill_budget`` every epoch ``max_epochs``
leaves), and a final network that misses the bound is replaced by the last accepted one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any

from pl_pruning.errors import PlPruningError
from pl_pruning.pruning import planner
from pl_pruning.pruning.latency import TargetLatency, parse_target_latency
from pl_pruning.pruning.run_state import PHASES, PRUNING, Phase, RunState, StepRecord
from pl_pruning.scoring import NORMALIZATIONS
from pl_pruning.structure.graph import NetworkGraph
from pl_pruning.validate import (
    check_bool,
    check_choice,
    check_fraction,
    check_int,
    check_number,
    is_number,
)

__all__ = ["MAX_STEP", "TARGET_TOLERANCE", "Decision", "Network", "Schedule", "cosine_factor"]

# a step whose latency falls more than this share under target_latency went past it: rolled back
TARGET_TOLERANCE = 0.05


_MACHINE = ("phase", "baseline", "step", "layer_queue", "layer_steps", "pending", "final_window")  # what a decision sets


@dataclass
class Decision:
    """What rank 0 decided after one validation; every rank applies it."""

    metric: float
    judged: StepRecord | None = None     # the step just judged, accepted or not
    plan: dict[str, list[int]] = field(default_factory=dict)
    planned: tuple[str, str | None, float] | None = None  # phase, layer, step of the plan
    screened_out: int = 0                # plans the screen halved before this one
    machine: dict[str, Any] = field(default_factory=dict)  # phase, baseline, step, queue
    finish: bool = False


def cosine_factor(epoch: int, batch: int, batches: float, window: int) -> float:
    """The learning-rate factor at ``batch`` of the ``epoch``-th epoch (from 0) of a
    fine-tuning window of ``window`` epochs: a cosine from 1 down to 0 over the window
    (per epoch when the number of ``batches`` per epoch is not known)."""
    if window <= 0:
        return 1.0
    if math.isfinite(batches) and batches > 0:
        position = min(1.0, (epoch * batches + batch) / (window * batches))
    else:
        position = min(1.0, epoch / window)
    return 0.5 * (1.0 + math.cos(math.pi * position))


@dataclass
class Network:
    """What the schedule asks of the network being pruned (on the deciding rank)."""

    scored: Callable[[], tuple[NetworkGraph, planner.Scored]]  # its graph and group scores, now
    cost: Callable[[], tuple[int, int]]                        # MACs and parameters, now
    restore: Callable[[], None]                                # back to the accepted network
    screen: Callable[[dict[str, list[int]]], float] | None = None  # accuracy a plan loses, unfine-tuned
    # with a latency model: the network's latency now (measured or None, predicted), and the
    # milliseconds one filter of each layer of a graph costs
    latency: Callable[[], tuple[float | None, float]] | None = None
    latency_per_filter: Callable[[NetworkGraph], dict[str, float]] | None = None


#: the largest share an accepted step grows to (``grow``), in either phase
MAX_STEP = 0.5


def setting(default: Any, check: Callable[[str, Any], Any]) -> Any:
    """One setting of the decision rule: its default and, beside it, its check (called with
    the setting's name and value; it returns the value to keep or raises PlPruningError)."""
    return field(default=default, metadata={"check": check})


def _phases(name: str, value: Any) -> list[str]:
    phases = [value] if isinstance(value, str) else list(value)
    if not phases or any(x not in PHASES for x in phases) or len(set(phases)) != len(phases):
        raise PlPruningError(f"{name} must be a non-empty list of distinct names from {list(PHASES)}, got {value!r}")
    return phases


def _choice(*choices: str) -> Callable[[str, Any], Any]:
    return lambda name, value: check_choice(name, value, choices)


def _integer(minimum: int, optional: bool = False) -> Callable[[str, Any], Any]:
    return lambda name, value: check_int(name, value, minimum, optional=optional)


@dataclass
class Schedule:
    """The decision rule, and the ONE declaration of its settings: each field's default and
    its check side by side. :class:`~pl_pruning.callbacks.PhaseController` takes them as its
    keyword arguments (its signature is built from these fields) and documents them."""

    phases: list[str] = setting(("global", "layerwise"), _phases)
    global_step: float = setting(0.2, check_fraction)
    layer_step: float = setting(0.25, check_fraction)
    min_step: float = setting(0.05, check_fraction)
    grow: float = setting(1.5, lambda name, value: check_number(name, value, 1.0))
    max_drop: float = setting(0.02, check_fraction)
    reference: str = setting("baseline", _choice("baseline", "accepted"))
    recheck: bool = setting(True, check_bool)
    screen: bool = setting(False, check_bool)
    screen_drop: float = setting(0.1, check_fraction)
    finetune_epochs: int = setting(1, _integer(0))
    final_epochs: int = setting(2, _integer(0))
    fill_budget: bool = setting(False, check_bool)
    mode: str = setting("max", _choice("max", "min"))
    normalize: str = setting("per-layer", lambda name, value: check_choice(name, value, NORMALIZATIONS))
    layer_order: str = setting("by_score", lambda name, value: check_choice(name, value, list(planner.LAYER_ORDERS)))
    target_macs: float | str | None = setting(None, lambda name, value: check_target_macs(value))
    target_latency: TargetLatency | str | None = setting(None, lambda name, value: parse_target_latency(value))
    max_steps: int | None = setting(None, _integer(1, optional=True))
    min_channels: int = setting(1, _integer(1))
    round_to: int | None = setting(None, _integer(1, optional=True))

    def __post_init__(self) -> None:
        """Every setting checked, named in the error (:class:`~pl_pruning.errors.PlPruningError`)."""
        for f in fields(self):
            setattr(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))
        if self.target_macs is not None and self.target_latency is not None:
            raise PlPruningError(f"give target_macs or target_latency, not both: set the other to None (got target_macs={self.target_macs!r}, "
                                 f"target_latency={str(self.target_latency)!r})")

    def drop(self, run: RunState, metric: float, reference: float | None = None) -> float:
        """How much worse ``metric`` is than ``reference`` (default the baseline; positive =
        worse; ``inf`` for a metric that is not finite, such as the loss of a diverged fine-tune)."""
        if not math.isfinite(metric):
            return math.inf
        reference = run.baseline if reference is None else reference
        return reference - metric if self.mode == "max" else metric - reference

    def step_reference(self, run: RunState) -> float:
        """What a step is judged against: the baseline, or with ``reference="accepted"`` the
        metric of the accepted network it was cut from."""
        if self.reference == "accepted" and run.accepted is not None:
            return run.accepted["record"]["metric"]
        return run.baseline

    def accepts(self, drop: float) -> bool:
        return drop <= self.max_drop + 1e-12

    def final_check(self, run: RunState, metric: float | None) -> bool:
        """Judge the final network against ``max_drop``; records ``run.final_check`` and
        returns whether the final network stands (False: return the last accepted one)."""
        drop = self.drop(run, metric) if metric is not None else None
        within = drop is None or self.accepts(drop)
        accepted = run.accepted["record"]["metric"] if run.accepted is not None else None
        # The last accepted network replaces a final one that misses the bound only if it does
        # better (with reference="accepted" it can be further from the baseline still).
        ok = within or accepted is None or self.drop(run, accepted, reference=metric) >= 0
        run.final_check = {"metric": metric, "drop": drop, "within_max_drop": within, "final_kept": ok,
                           "returned": "final network" if within else
                           "final network (it misses max_drop; the last accepted network did no better)" if ok else
                           "last accepted network (the final fine-tune missed max_drop)"}
        return ok

    def window(self, run: RunState) -> int:
        """Fine-tuning epochs of the current window: after a surgery (plus its rechecks),
        or the final fine-tune."""
        if run.phase is Phase.FINAL:
            return self.final_epochs if run.final_window is None else run.final_window
        return self.finetune_epochs + (run.pending.rechecks if run.pending is not None else 0)

    def decide(self, run: RunState, metric: float, net: Network, epochs_done: int,
               max_epochs: int | None) -> Decision:
        """Judge the step just fine-tuned (the baseline is the first accepted one), restore
        the accepted network if it failed (``net.restore``), plan the next surgery.

        ``epochs_done`` is the number of training epochs finished (0 for the validation
        before training). Changes ``run``'s decided fields (:attr:`Decision.machine` lists
        them, for the other ranks); collects nothing across processes.
        """
        d = Decision(metric=metric)
        if run.phase is Phase.BASELINE:
            macs, params = net.cost()
            d.judged = StepRecord(Phase.BASELINE.value, None, 0.0, macs, params, metric=metric, drop=0.0,
                                  accepted=True)
            if net.latency is not None:
                d.judged.latency_ms, d.judged.predicted_latency_ms = net.latency()
            run.baseline, run.phase = metric, Phase(self.phases[0])
            if run.phase is Phase.LAYERWISE:
                self._enter_layerwise(run, net)
        else:
            epochs = run.epochs_since_surgery + 1
            if epochs < self.window(run):
                return d
            if run.phase is Phase.FINAL:
                d.finish = True
                return d
            reference = self.step_reference(run)
            drop = self.drop(run, metric, reference)
            if not self.accepts(drop) and self._marginal(run, drop) and self._epochs_left(epochs_done, 1, max_epochs):
                run.pending = replace(run.pending, rechecks=run.pending.rechecks + 1)
                d.machine = {k: getattr(run, k) for k in _MACHINE}
                return d  # one more epoch, then judged again
            past, slower = self._past_target(run, run.pending), self._no_faster(run, run.pending)
            d.judged = replace(run.pending, metric=metric, drop=drop,
                               accepted=self.accepts(drop) and not past and not slower, past_target=past,
                               no_faster=slower, reference=None if reference == run.baseline else reference,
                               finetuned_epochs=self.window(run))
            run.pending = None
            self._adapt(run, d.judged)
            if not d.judged.accepted:
                net.restore()
        self._plan_next(run, d, net, epochs_done, max_epochs)
        d.machine = {k: getattr(run, k) for k in _MACHINE}
        return d

    def _past_target(self, run: RunState, step: StepRecord) -> bool:
        """Whether the step's network runs more than :data:`TARGET_TOLERANCE` under
        ``target_latency`` (its measured latency, or the predicted one from a table of
        another machine)."""
        target = self.latency_target_ms(run) if self.target_latency is not None else None
        return target is not None and step.latency is not None and step.latency < target * (1 - TARGET_TOLERANCE)

    def _no_faster(self, run: RunState, step: StepRecord) -> bool:
        """Whether, under ``target_latency``, the step's network timed no faster than the
        accepted network it was cut from: a cut that buys no time (a width the runtime pads
        back, a layer whose time does not fall with it) costs accuracy and MACs for nothing.
        Judged on measurements only; a prediction from a table of another machine is not one."""
        if self.target_latency is None or step.latency_ms is None or run.accepted is None:
            return False
        before = run.accepted["record"].get("latency_ms")
        return before is not None and step.latency_ms >= before

    def short_of_target(self, run: RunState) -> str | None:
        """Why pruning ended above ``target_latency``, for a warning (None: it reached it, or
        the run has no latency target): the accepted network's latency against the target and
        how many cuts were rolled back as no faster than the network they were cut from, which
        a width this runtime runs slower than a wider one (no ``round_to`` multiple) explains."""
        target = self.latency_target_ms(run) if self.target_latency is not None else None
        now = StepRecord(**run.accepted["record"]).latency if run.accepted is not None else None
        if target is None or now is None or now <= target:
            return None
        cuts = [r for r in run.history if r.phase in (Phase.GLOBAL.value, Phase.LAYERWISE.value)]
        slower = sum(r.no_faster for r in cuts)
        hint = "" if not slower else (
            f"; {slower} of {len(cuts)} cuts timed no faster than the network they were cut from, widths this "
            "runtime runs slower than wider ones" + ("" if self.round_to else " (round_to=<the runtime's channel "
                                                      "multiple, such as 16> keeps widths off them)"))
        return f"pruning ended at {now:.2f} ms, above target_latency={target:.2f} ms{hint}"

    def _marginal(self, run: RunState, drop: float) -> bool:
        """A rejection within the noise: one standard error above the bound, not yet rechecked
        (never with ``finetune_epochs=0``: validating the same network again changes nothing)."""
        return (self.recheck and self.finetune_epochs > 0 and run.noise > 0 and math.isfinite(drop)
                and drop <= self.max_drop + run.noise
                and run.pending is not None and run.pending.rechecks == 0)

    def _adapt(self, run: RunState, judged: StepRecord) -> None:
        """Grow the judged step's size after an acceptance, halve it after a rollback; in
        Phase II the judged group goes to the back of the queue (round-robin)."""
        step = max(judged.step, min(judged.step * self.grow, MAX_STEP)) if judged.accepted else judged.step / 2
        if run.phase is Phase.GLOBAL:
            run.step = step
        elif judged.layer is not None:
            run.layer_steps[judged.layer] = step
            if judged.layer in run.layer_queue:  # to the back, or out when its step is spent
                run.layer_queue.remove(judged.layer)
                if step >= self.min_step:
                    run.layer_queue.append(judged.layer)

    def _plan_next(self, run: RunState, d: Decision, net: Network, epochs_done: int,
                   max_epochs: int | None) -> None:
        """The next surgery's plan, or on to the next phase / the final fine-tune."""
        retry = d.judged is not None and d.judged.accepted is False and d.judged.phase == run.phase.value
        while run.phase in PRUNING:
            if not self._budget_left(run, d, epochs_done, max_epochs):
                run.phase = Phase.FINAL
                break
            graph, scored = net.scored()
            latency = self._latency_per_filter(net, graph)
            room = self._room(run, d, graph.macs)  # MACs (ms with target_latency) the target still allows to remove
            # what one filter of each group saves, in the unit room is counted in (Phase II's caps)
            costs = (None if run.phase is Phase.GLOBAL else
                     dict(zip((g.root for g, _ in scored), planner.group_costs(
                         scored, graph, latency if self.target_latency is not None else None), strict=True)))
            plan_at = partial(self._plan_at, run, d, scored, graph, room, latency, costs)  # (step, layer or None)
            if retry:  # a rolled-back step's halved size may plan the very cut just rolled back
                retry = False
                self._past_repeats(run, d.judged, plan_at)
            if run.phase is Phase.GLOBAL:
                d.planned = (Phase.GLOBAL.value, None, run.step)
                d.plan = plan_at(run.step, None) if run.step >= self.min_step else {}
            else:
                d.plan = self._layer_plan(run, d, plan_at)
            if d.plan and not self._screened_out(run, d, net):
                return
            if d.plan:
                continue  # the step was halved: plan again
            d.planned = None
            idx = self.phases.index(run.phase.value)
            run.phase = Phase(self.phases[idx + 1]) if idx + 1 < len(self.phases) else Phase.FINAL
            if run.phase is Phase.LAYERWISE:
                self._enter_layerwise(run, net)
        if run.phase is Phase.FINAL:
            run.final_window = self._final_window(epochs_done, max_epochs)
        d.finish = run.phase is Phase.FINAL and run.final_window == 0

    def _screened_out(self, run: RunState, d: Decision, net: Network) -> bool:
        """The cheap screen (``screen``): a plan whose cut loses more than ``screen_drop`` of
        accuracy before any fine-tuning is not worth an epoch; its step is halved."""
        if not self.screen or net.screen is None or net.screen(d.plan) <= self.screen_drop:
            return False
        _, layer, step = d.planned
        if layer is None:
            run.step = step / 2
        else:
            run.layer_steps[layer] = step / 2
        d.screened_out += 1
        return True

    def _past_repeats(self, run: RunState, judged: StepRecord,
                      plan_at: Callable[[float, str | None], dict[str, list[int]]]) -> None:
        """After a rollback: halve the judged unit's step (Phase I's, or its group's) again
        while it still plans the cut just rolled back (``plan_at`` its size), which blocks of
        ``round_to`` filters or a group's few filters can make; a layer whose step so falls
        below ``min_step`` leaves the queue. The network is the accepted one again, so the
        rolled-back plan is the plan at the judged step's size."""
        layer = judged.layer
        step = run.step if layer is None else run.layer_steps.get(layer)
        if step is None or step < self.min_step:
            return
        tried = plan_at(judged.step, layer)
        while step >= self.min_step and plan_at(step, layer) == tried:
            step /= 2
        if layer is None:
            run.step = step
        else:
            run.layer_steps[layer] = step
            if step < self.min_step and layer in run.layer_queue:
                run.layer_queue.remove(layer)

    def _plan_at(self, run: RunState, d: Decision, scored: planner.Scored, graph: NetworkGraph, room: float,
                 latency: dict[str, float] | None, costs: dict[str, float] | None, step: float,
                 layer: str | None) -> dict[str, list[int]]:
        """The cut of Phase I (``layer`` None) or of one group at ``step``, on the network now
        (``costs``: what one filter of each group saves, for Phase II)."""
        if layer is None:
            return self._global_plan(run, d, step, scored, graph, room, latency)
        return self._one_layer_plan(layer, step, scored, room, costs)

    def _global_plan(self, run: RunState, d: Decision, step: float, scored: planner.Scored, graph: NetworkGraph,
                     room: float, latency: dict[str, float] | None) -> dict[str, list[int]]:
        """Phase I's cut at ``step``: the share of the MACs (of the latency, under
        ``target_latency``) it saves, at most what the target still allows (``room``)."""
        if self.target_latency is not None:
            saving = {"latency_ms": min(step * self._accepted_latency(run, d), room)}
        else:
            saving = {"macs": min(step * graph.macs, room)}
        plan = planner.global_plan(scored, step, graph, normalize=self.normalize, min_channels=self.min_channels,
                                   latency_per_filter=latency, round_to=self.round_to, **saving)
        return planner.rounded(plan, scored, self.round_to)

    def _one_layer_plan(self, layer: str, step: float, scored: planner.Scored, room: float,
                        costs: dict[str, float]) -> dict[str, list[int]]:
        """Phase II's cut of one group at ``step``, at most what the target still allows
        (``room``, at ``costs`` a filter)."""
        if layer not in costs:
            return {}
        cap = None if math.isinf(room) else max(1, math.ceil(room / costs[layer]))
        return planner.rounded(planner.layer_plan(scored, layer, step, min_channels=self.min_channels,
                                                  max_filters=cap, round_to=self.round_to), scored, self.round_to)

    def _layer_plan(self, run: RunState, d: Decision,
                    plan_at: Callable[[float, str | None], dict[str, list[int]]]) -> dict[str, list[int]]:
        """The next group of the round-robin queue that still has something to cut; groups
        whose step fell below ``min_step`` or that cannot lose a filter leave the queue."""
        while run.layer_queue:
            layer = run.layer_queue[0]
            step = run.layer_steps.setdefault(layer, self.layer_step)
            plan = plan_at(step, layer) if step >= self.min_step else {}
            if plan:
                d.planned = (Phase.LAYERWISE.value, layer, step)
                return plan
            run.layer_queue.pop(0)
        return {}

    def _enter_layerwise(self, run: RunState, net: Network) -> None:
        graph, scored = net.scored()
        run.layer_queue = planner.order_layers(self.layer_order, scored, graph)
        run.layer_steps = {}

    def _target(self, run: RunState, d: Decision) -> float | None:
        """``target_macs`` in MACs, or ``target_latency`` in ms (``d.judged``: the baseline, or
        the step just judged)."""
        if self.target_latency is not None:
            target = self.latency_target_ms(run)
            return self.target_latency.in_ms(d.judged.latency) if target is None else target  # None: on the baseline
        return target_in_macs(self.target_macs, run.baseline_cost["macs"] if run.baseline_cost else d.judged.macs)

    def latency_target_ms(self, run: RunState) -> float | None:
        """``target_latency`` in ms of the baseline's measured latency (None before the baseline
        is recorded)."""
        base = (run.baseline_cost or {}).get("latency_ms")
        return None if base is None else self.target_latency.in_ms(base)

    def _accepted_latency(self, run: RunState, d: Decision) -> float:
        """The latency of the network the next step is cut from (measured when it could be)."""
        if d.judged.accepted:
            return d.judged.latency
        record = run.accepted["record"]
        return record["latency_ms"] if record.get("latency_ms") is not None else record["predicted_latency_ms"]

    def _room(self, run: RunState, d: Decision, macs: float) -> float:
        target = self._target(run, d)
        if target is None:
            return math.inf
        return max(0.0, (self._accepted_latency(run, d) if self.target_latency is not None else macs) - target)

    def _latency_per_filter(self, net: Network, graph: NetworkGraph) -> dict[str, float] | None:
        """Milliseconds per filter of each layer, when the run sizes or ranks by latency."""
        if self.target_latency is None and self.normalize != "latency-aware":
            return None
        if net.latency_per_filter is None:
            raise PlPruningError("target_latency and normalize='latency-aware' need a latency model "
                                 "(PhaseController builds one from its latency settings)")
        return net.latency_per_filter(graph)

    def _final_window(self, epochs_done: int, max_epochs: int | None) -> int:
        """The final fine-tune's epochs: ``final_epochs``, or with ``fill_budget`` all that
        ``max_epochs`` leaves when pruning ended early (a target reached, no step left)."""
        if self.fill_budget and max_epochs is not None and max_epochs > 0:
            return max(self.final_epochs, max_epochs - epochs_done)
        return self.final_epochs

    def _epochs_left(self, epochs_done: int, needed: int, max_epochs: int | None) -> bool:
        """Whether ``needed`` more fine-tuning epochs and the final fine-tune still fit."""
        return max_epochs is None or max_epochs <= 0 or epochs_done + needed + self.final_epochs <= max_epochs

    def _budget_left(self, run: RunState, d: Decision, epochs_done: int, max_epochs: int | None) -> bool:
        if self.max_steps is not None and run.surgeries >= self.max_steps:
            return False
        if not self._epochs_left(epochs_done, self.finetune_epochs, max_epochs):
            return False
        target = self._target(run, d)
        if target is not None and self.target_latency is not None:
            return self._accepted_latency(run, d) > target
        if target is not None:
            return (d.judged.macs if d.judged.accepted else run.accepted["record"]["macs"]) > target
        return True


_ABSOLUTE_MACS = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([kmg]?)\s*(?:macs?)?\s*$", re.I)
_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def check_target_macs(value: Any) -> float | str | None:
    """``target_macs`` as given: ``None`` (no target), a fraction of the baseline's MACs in
    ``(0, 1]``, or MACs per sample written as a string with a unit (``"12M"``,
    ``"350k MACs"``, ``"3.5e6 MACs"``). A bare number above 1 is refused: it would have to
    be read as absolute MACs, a silent switch from the fraction a user most likely meant.

    Raises:
        PlPruningError: anything else, named with both forms."""
    if value is None:
        return None
    if isinstance(value, str):
        hit = _ABSOLUTE_MACS.match(value)
        if hit and float(hit[1]) * _UNITS[hit[2].lower()] >= 1:
            return value
    elif is_number(value) and 0 < value <= 1:
        return float(value)
    raise PlPruningError(f"target_macs must be a fraction of the baseline's MACs in (0, 1], or MACs per sample "
                         f"as a string with a unit (such as '12M' or '3.5e6 MACs'), got {value!r}")


def target_in_macs(target_macs: float | str | None, baseline_macs: float) -> float | None:
    """``target_macs`` in MACs per sample: a fraction (at most 1) of ``baseline_macs``, or
    absolute MACs (a string with a unit; a number above 1 in a report written before the
    string form); None (no target) stays None."""
    if target_macs is None:
        return None
    if isinstance(target_macs, str):
        hit = _ABSOLUTE_MACS.match(target_macs)
        if hit is None:
            raise PlPruningError(f"target_macs {target_macs!r} is not MACs per sample with a unit")
        return float(hit[1]) * _UNITS[hit[2].lower()]
    return target_macs if target_macs > 1 else target_macs * baseline_macs
