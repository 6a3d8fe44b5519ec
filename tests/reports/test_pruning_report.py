"""The report of one pruning run (pl_pruning.reports.pruning_report) from a controller's report()."""

from __future__ import annotations

import json

from pl_pruning.pruning.run_state import per_phase
from pl_pruning.reports.pruning_report import markdown_table, plot_path, write_pruning_report


def _step(phase, accepted, metric, macs, removed=0, layer=None, step=0.0, drop=0.0):
    return {"phase": phase, "layer": layer, "step": step, "metric": metric, "drop": drop,
            "macs": macs, "params": macs // 10, "removed": removed, "accepted": accepted}


REPORT = {
    "criterion": "conditional_entropy", "phases": ["global", "layerwise"], "max_drop": 0.02,
    "monitor": "val_acc", "mode": "max",
    "baseline": {"metric": 0.98, "macs": 2_000_000, "params": 200_000},
    "final": {"metric": 0.97, "macs": 500_000, "params": 40_000},
    "macs_reduction": 4.0, "params_reduction": 5.0,
    "history": [_step("baseline", True, 0.98, 2_000_000),
                _step("global", True, 0.975, 1_000_000, removed=40, step=0.2, drop=0.005),
                _step("layerwise", False, 0.90, 800_000, removed=8, layer="net.features.3", step=0.25,
                      drop=0.08),
                _step("final", True, 0.97, 500_000)],
    "channels": {"before": {"net.features.0": 32, "net.features.3": 64},
                 "after": {"net.features.0": 20, "net.features.3": 30}},
}


def test_markdown_table_has_a_summary_and_one_row_per_step():
    md = markdown_table(REPORT)
    assert md.startswith("# Pruning report (conditional_entropy, phases global, layerwise, max_drop 0.02)\n")
    targeted = markdown_table({**REPORT, "target_macs": 0.1})  # the run's stop, where it has one
    assert targeted.startswith("# Pruning report (conditional_entropy, phases global, layerwise, max_drop 0.02, "
                               "target_macs 0.1)\n")
    assert "val_acc: 0.9800 -> 0.9700; MACs 2.000 M -> 0.500 M (4.00x fewer)" in md
    assert "| 2 | layerwise | net.features.3 | 0.250 | 0.9000 | +0.0800 | 0.800 | 0.0800 | 8 | rolled back |" in md
    assert md.count("| accepted |") == 3


def test_markdown_table_shows_what_each_phase_spent_and_bought():
    md = markdown_table({**REPORT, "per_phase": per_phase(REPORT["history"])})
    assert "| global | 1 | 1 | 1 | 1.000 | 1.000 |" in md
    assert "| layerwise | 1 | 0 | 1 | 0.000 | 0.000 |" in md
    judged_at_once = [{**e, "finetuned_epochs": 0} if e["phase"] == "global" else e for e in REPORT["history"]]
    assert "| global | 1 | 1 | 0 | 1.000 | - |" in markdown_table({**REPORT, "per_phase": per_phase(judged_at_once)})


def test_write_pruning_report_writes_json_markdown_and_two_plots(tmp_path):
    paths = write_pruning_report(REPORT, tmp_path / "run")
    assert [p.name for p in paths] == ["pruning_report.json", "pruning_report.md", "pruning_path.png",
                                       "pruning_channels.png"]
    assert json.loads(paths[0].read_text()) == REPORT
    assert all(p.stat().st_size > 5_000 for p in paths[2:])
    no_channels = write_pruning_report({**REPORT, "channels": None}, tmp_path / "other")
    assert [p.name for p in no_channels][-1] == "pruning_path.png"


def test_the_path_plot_marks_the_target_where_the_run_has_one(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn, axvline = [], matplotlib.axes.Axes.axvline

    def record(ax, x=0, **kwargs):
        drawn.append((x, kwargs.get("label")))
        return axvline(ax, x, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", record)
    plot_path({**REPORT, "target_macs": 0.25}, tmp_path / "fraction.png")  # of the baseline's 2 M
    plot_path({**REPORT, "target_macs": 600_000}, tmp_path / "macs.png")   # MACs per sample
    plot_path(REPORT, tmp_path / "none.png")
    assert drawn == [(0.5, "target_macs"), (0.6, "target_macs")]
    assert all((tmp_path / f"{name}.png").stat().st_size > 0 for name in ("fraction", "macs", "none"))
    # a run with a latency model: a second panel against latency, its target marked there
    timed = [{**e, "latency_ms": 20.0 - 4 * i} for i, e in enumerate(REPORT["history"])]
    plot_path({**REPORT, "history": timed, "latency": {"target_ms": 9.5, "measured": True},
               "latency_runtime": {"name": "onnxruntime", "batch_size": 64}}, tmp_path / "latency.png")
    assert drawn[-1] == (9.5, "target_latency")
    from PIL import Image

    assert Image.open(tmp_path / "latency.png").size[0] > Image.open(tmp_path / "none.png").size[0]  # two panels


def test_the_path_plot_marks_each_steps_own_bound_when_steps_were_judged_against_the_accepted_network(
        tmp_path, monkeypatch):
    import matplotlib.axes

    ticks, lines = [], []
    scatter, axhline = matplotlib.axes.Axes.scatter, matplotlib.axes.Axes.axhline

    def record_scatter(ax, x, y, **kwargs):
        if kwargs.get("marker") == "_":
            ticks.append((list(x), [round(v, 4) for v in y]))
        return scatter(ax, x, y, **kwargs)

    def record_line(ax, y=0, **kwargs):
        lines.append((round(y, 4), kwargs.get("label")))
        return axhline(ax, y, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", record_scatter)
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", record_line)
    plot_path(REPORT, tmp_path / "baseline.png")
    assert (ticks, lines) == ([], [(0.96, "max_drop bound")])
    history = [{**e, "reference": 0.975} if e["phase"] == "layerwise" else e for e in REPORT["history"]]
    plot_path({**REPORT, "history": history}, tmp_path / "accepted.png")
    assert ticks == [([0.8], [0.955])]  # judged against 0.975, the network it was cut from
    assert lines[-1] == (0.96, "max_drop bound (final check)")
