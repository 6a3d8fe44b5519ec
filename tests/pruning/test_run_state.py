"""The run's data: what a report says each phase spent and bought."""

from __future__ import annotations

from pl_pruning.pruning.run_state import RunState, StepRecord, per_phase, summarize


def _history() -> list[dict]:
    return [
        {"phase": "baseline", "macs": 1000, "metric": 0.9},
        {"phase": "global", "macs": 800, "accepted": True},                 # 200 removed
        {"phase": "global", "macs": 500, "accepted": False, "rechecks": 1},  # 2 epochs, nothing kept
        {"phase": "global", "macs": 700, "accepted": True},                 # 100 removed
        {"phase": "layerwise", "macs": 650, "accepted": True},              # 50 removed
        {"phase": "layerwise", "macs": 600, "accepted": False},
        {"phase": "final", "macs": 650, "accepted": True},                  # not a step
    ]


def test_per_phase_counts_epochs_with_rechecks_and_only_accepted_removals():
    phases = per_phase(_history())
    assert phases["global"] == {"epochs": 4, "steps": 3, "accepted": 2, "macs_removed": 300,
                                "macs_removed_per_epoch": 75.0}
    assert phases["layerwise"] == {"epochs": 2, "steps": 2, "accepted": 1, "macs_removed": 50,
                                   "macs_removed_per_epoch": 25.0}


def test_per_phase_reads_the_epochs_each_step_was_fine_tuned():
    history = [{"phase": "baseline", "macs": 1000, "metric": 0.9},
               {"phase": "global", "macs": 800, "accepted": True, "finetuned_epochs": 2},
               {"phase": "global", "macs": 600, "accepted": True, "finetuned_epochs": 0},
               {"phase": "layerwise", "macs": 500, "accepted": True, "finetuned_epochs": 0}]
    phases = per_phase(history)
    assert phases["global"]["epochs"] == 2 and phases["global"]["macs_removed_per_epoch"] == 200.0
    # judged at once (finetune_epochs=0): MACs removed, no epoch spent, no rate
    assert phases["layerwise"]["epochs"] == 0 and phases["layerwise"]["macs_removed"] == 100
    assert phases["layerwise"]["macs_removed_per_epoch"] is None


def test_the_report_carries_the_per_phase_summary():
    run = RunState(baseline=0.9, baseline_cost={"macs": 1000, "params": 10})
    run.history = [StepRecord(phase="baseline", layer=None, step=0.0, macs=1000, params=10, metric=0.9),
                   StepRecord(phase="global", layer=None, step=0.1, macs=800, params=8, metric=0.9,
                              drop=0.0, accepted=True)]
    report = summarize(run, monitor="val_acc", phases=["global", "layerwise"])
    assert report["per_phase"]["global"]["macs_removed"] == 200
    assert "layerwise" not in report["per_phase"]
    assert report["phases"] == ["global", "layerwise"]  # the configured phases, not overwritten


def test_the_report_names_the_network_returned_after_the_final_check():
    def report(returned: str, kept: bool) -> dict:
        run = RunState(baseline=0.9, baseline_cost={"macs": 1000, "params": 10})
        accepted = StepRecord(phase="global", layer=None, step=0.5, macs=400, params=4, metric=0.84,
                              drop=0.01, accepted=True, reference=0.85)
        run.history = [StepRecord(phase="baseline", layer=None, step=0.0, macs=1000, params=10, metric=0.9),
                       accepted,
                       StepRecord(phase="final", layer=None, step=0.0, macs=400, params=4, metric=0.87,
                                  drop=0.03, accepted=False)]
        run.accepted = {"record": accepted.to_dict()}
        run.final_check = {"metric": 0.87, "drop": 0.03, "within_max_drop": False, "final_kept": kept,
                           "returned": returned}
        return summarize(run, monitor="val_acc")

    kept = report("final network (it misses max_drop; the last accepted network did no better)", True)
    assert kept["final"]["metric"] == 0.87
    assert report("last accepted network (the final fine-tune missed max_drop)", False)["final"]["metric"] == 0.84
    assert kept["history"][1]["reference"] == 0.85 and "reference" not in kept["history"][0]
