"""A pruning run's data: its phases, the record of each step, the run state, and how
they are saved in checkpoints and summarised in the report. The rule that changes them
is :mod:`pl_pruning.pruning.schedule`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

from pl_pruning.pruning.planner import FilterScores

__all__ = ["PHASES", "PRUNING", "Phase", "RunState", "StepRecord", "latency_summary", "load_run_state", "per_phase",
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
    rechecks: int = 0                  # extra fine-tuning epochs of a marginal rejection
    screened_out: int = 0              # larger steps the screen halved before this one
    reference: float | None = None     # the metric judged against, when not the baseline
    finetuned_epochs: int | None = None  # fine-tuning epochs the step had when judged (rechecks included)
    latency_ms: float | None = None    # measured on the latency model's runtime (ms per batch)
    predicted_latency_ms: float | None = None  # what the latency model predicted for it
    past_target: bool = False          # rolled back: it ran more than TARGET_TOLERANCE under target_latency
    no_faster: bool = False            # rolled back: target_latency, and it timed no faster than the network it was cut from
    latency_readings: list[float] | None = None  # its timings when the first was far off the prediction (median: latency_ms)

    @property
    def latency(self) -> float | None:
        """The measured latency, else the predicted one (a table of another machine)."""
        return self.latency_ms if self.latency_ms is not None else self.predicted_latency_ms

    def describe(self, monitor: str, sized_by: str = "MACs") -> str:
        """One log line; ``sized_by`` is what a global step's share is of ("MACs", or
        "latency" under a latency target)."""
        if self.phase == Phase.BASELINE.value:
            return f"baseline {monitor}={self.metric:.4f}, MACs={self.macs / 1e6:.2f}M{self._latency_text()}"
        where = f" on {self.layer}" if self.layer else ""
        screened = f" ({self.screened_out} larger screened out)" if self.screened_out else ""
        versus = f" from {self.reference:.4f}" if self.reference is not None else ""
        size = (f"{self.removed} filters ({self.step:.1%} of the {sized_by})" if self.layer is None
                else f"{self.removed} filters ({self.step:.1%} of the group)")
        return (f"{self.phase} step of {size}{where}{screened}: {monitor}={self.metric:.4f} "
                f"drop={self.drop:+.4f}{versus} MACs={self.macs / 1e6:.2f}M{self._latency_text()} -> "
                f"{'accepted' if self.accepted else 'rolled back'}"
                f"{' (past the latency target)' if self.past_target else ''}"
                f"{' (no faster than the network it was cut from)' if self.no_faster else ''}")

    def _latency_text(self) -> str:
        if self.latency is None:
            return ""
        predicted = (f" (predicted {self.predicted_latency_ms:.2f})"
                     if self.latency_ms is not None and self.predicted_latency_ms is not None else "")
        return f" latency={self.latency:.2f}ms{predicted}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()
                if (v is not None or k not in ("surgery_s", "epoch", "reference", "finetuned_epochs", "latency_ms",
                                               "predicted_latency_ms", "latency_readings"))
                and (k not in ("rechecks", "screened_out", "no_faster") or v)}


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
    accepted: dict[str, Any] | None = None                     # model, optimizers, scores, record
    noise: float = 0.0                 # standard error of the baseline metric (0: unknown)
    base_lrs: list[list[float]] = field(default_factory=list)  # per optimizer, per param group
    final_check: dict[str, Any] | None = None                  # the final network against max_drop
    final_window: int | None = None    # the final fine-tune's epochs, set when pruning ends
    latency_table: dict[str, Any] | None = None  # the latency model's table (LatencyTable.to_dict)


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
    accepted = values.get("accepted")
    if accepted is not None and not isinstance(accepted.get("scores"), FilterScores):
        kept = accepted.get("scores") or {"ids": accepted.get("ids", {}), "cache": {}}
        values["accepted"] = {**accepted, "scores": FilterScores(**kept)}
    return replace(defaults, **values)


def summarize(run: RunState, **meta: Any) -> dict[str, Any]:
    """A run's report: ``meta`` (monitor, mode, criterion, the configured phases ...), the
    baseline, the final (or last accepted) network, the reductions, what each phase spent
    and bought (``per_phase``), and every step as a dict."""
    history = [r.to_dict() for r in run.history]
    last = next((e for e in reversed(history) if e["phase"] == Phase.FINAL.value), None)
    check = run.final_check or {}
    kept = last is not None and check.get("final_kept", check.get("within_max_drop", last["accepted"] is not False))
    if not kept and run.accepted:
        last = run.accepted["record"]  # the final fine-tune missed the bound: the network returned
    base = run.baseline_cost or {}
    out: dict[str, Any] = {**meta, "baseline": {"metric": run.baseline, **base}, "history": history}
    if run.final_check is not None:
        out["final_check"] = run.final_check
    out["per_phase"] = per_phase(history)
    if last is not None and base:
        out["final"] = {"metric": last["metric"], "macs": last["macs"], "params": last["params"]}
        out["macs_reduction"] = base["macs"] / max(1, last["macs"])
        out["params_reduction"] = base["params"] / max(1, last["params"])
    if run.latency_table is not None:
        out["latency"] = latency_summary(history, last, meta.get("target_latency_ms"))
    return out


def latency_summary(history: list[dict[str, Any]], final: dict[str, Any] | None,
                    target_ms: float | None) -> dict[str, Any]:
    """The latency of the baseline and the final network, against the target, and how far
    the latency model's predictions were from the measurements (``predicted / measured - 1``
    for every step timed)."""
    def latency(e: dict[str, Any] | None) -> float | None:
        if e is None:
            return None
        return e.get("latency_ms") if e.get("latency_ms") is not None else e.get("predicted_latency_ms")

    base = next((e for e in history if e["phase"] == Phase.BASELINE.value), None)
    errors = [e["predicted_latency_ms"] / e["latency_ms"] - 1 for e in history
              if e.get("latency_ms") and e.get("predicted_latency_ms") is not None and e["phase"] in PHASES]
    out: dict[str, Any] = {"baseline_ms": latency(base), "final_ms": latency(final), "target_ms": target_ms,
                           "measured": final is not None and final.get("latency_ms") is not None}
    if out["baseline_ms"] and out["final_ms"]:
        out["reduction"] = out["baseline_ms"] / out["final_ms"]
    if target_ms and out["final_ms"]:
        out["final_over_target"] = out["final_ms"] / target_ms - 1
    out["prediction_error"] = {"steps": len(errors),
                               "mean_abs": sum(abs(e) for e in errors) / len(errors) if errors else None,
                               "max_abs": max((abs(e) for e in errors), default=None), "each": errors}
    return out


def per_phase(history: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """What each pruning phase spent and bought, from a report's ``history``: fine-tuning
    epochs on steps (each step's ``finetuned_epochs``; histories without it: one per step
    plus rechecks), steps, accepted steps, and MACs removed by
    accepted steps, in all and per epoch (None for a phase that spent no epoch). The final fine-tune is not counted."""
    out: dict[str, dict[str, float]] = {}
    current = None
    for e in history:
        if e["phase"] == Phase.BASELINE.value:
            current = e["macs"]
            continue
        if e["phase"] not in PHASES:
            continue
        row = out.setdefault(e["phase"], {"epochs": 0, "steps": 0, "accepted": 0, "macs_removed": 0})
        row["epochs"] += int(e["finetuned_epochs"]) if "finetuned_epochs" in e else 1 + int(e.get("rechecks", 0))
        row["steps"] += 1
        if e["accepted"]:
            row["accepted"] += 1
            row["macs_removed"] += current - e["macs"]
            current = e["macs"]
    for row in out.values():
        # None: steps judged without a fine-tuning epoch (finetune_epochs=0), no rate to give
        row["macs_removed_per_epoch"] = row["macs_removed"] / row["epochs"] if row["epochs"] else None
    return out
