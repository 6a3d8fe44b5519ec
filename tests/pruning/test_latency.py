"""The latency model: the target's two forms, the fit, the table's round trip, steps sized
in milliseconds, and a run that stops on its latency target (timings only as the model's
own measurements, never asserted against wall time)."""

import copy
import io
import json
import logging
import math

import pytest
import torch
from pruning_helpers import trained_digits_classifier, trainer

from pl_pruning import PhaseController, PlPruningError, build_model
from pl_pruning.pruning import planner
from pl_pruning.pruning.latency import (
    NO_TIME,
    RETIME_SHARE,
    LatencyModel,
    LatencyTable,
    Runtime,
    TargetLatency,
    _nonnegative_fit,
    counts,
    parse_target_latency,
    with_widths,
)
from pl_pruning.pruning.run_state import RunState, StepRecord
from pl_pruning.pruning.schedule import TARGET_TOLERANCE, Network, Schedule
from pl_pruning.reports.pruning_report import markdown_table
from pl_pruning.structure.graph import NetworkGraph

FAST = Runtime("eager", batch_size=8, num_threads=1, min_run_time=0.03, rounds=1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("small_cnn", num_classes=10, in_channels=1).eval()


@pytest.fixture(scope="module")
def table(net):
    return LatencyTable.fit(net, FAST, input_shape=(1, 8, 8))


def test_target_latency_has_two_explicit_forms():
    assert parse_target_latency("25ms") == TargetLatency(25.0, "ms")
    assert parse_target_latency(" 40 % ") == TargetLatency(0.4, "fraction")
    assert parse_target_latency("40%").in_ms(50.0) == pytest.approx(20.0)
    assert parse_target_latency("25ms").in_ms(50.0) == 25.0
    assert parse_target_latency(None) is None
    for bad in (0.4, 25, "0.4", "25 s", "0%", "100%", "0ms", True):
        with pytest.raises(PlPruningError, match="target_latency"):
            parse_target_latency(bad)


def test_runtime_settings_are_checked():
    assert Runtime.of({"runtime": "onnxruntime", "batch_size": 1}).name == "onnxruntime"
    with pytest.raises(PlPruningError, match="runtime"):
        Runtime.of({"runtime": "tensorrt"})
    with pytest.raises(PlPruningError, match="unknown latency setting 'threads'"):
        Runtime.of({"threads": 2})
    with pytest.raises(PlPruningError, match="batch_size"):
        Runtime(batch_size=0)


def test_the_fit_recovers_known_costs():
    features = [(10.0, 0.1), (6.0, 0.08), (3.0, 0.05), (1.0, 0.02), (5.0, 0.03)]
    ms = [2.0 + 3.0 * m + 100.0 * a for m, a in features]
    assert _nonnegative_fit(features, ms) == pytest.approx((2.0, 3.0, 100.0), rel=1e-6)
    # never a negative cost, even when the timings would want one
    assert min(_nonnegative_fit(features, [5.0 - m * 0.1 for m, _ in features])) >= 0


def test_a_table_predicts_from_the_network_it_is_given(net, table):
    graph = NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))
    convs = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(table.layers) == sorted(convs)  # every convolution timed alone
    for name in convs:
        curve = table.curves[table.layers[name]]
        (shape_in, shape_out) = graph.layer_shapes[name]
        assert curve["out"][-1] == shape_out[1] and curve["in"][-1] == shape_in[1] and len(curve["out"]) >= 2
        assert table.layer_ms(name, shape_in[1], shape_out[1]) == pytest.approx(curve["ms"])
    layer_ms, mmacs, mact = table.features(graph)
    assert layer_ms == pytest.approx(sum(table.curves[table.layers[n]]["ms"] for n in convs))
    assert mmacs < counts(graph)[0] and mact == counts(graph)[1]  # the linear layers' MACs only
    assert table.predict(graph) == pytest.approx(table.fixed_ms + table.ms_per_layer_ms * layer_ms
                                                 + table.ms_per_mmac * mmacs + table.ms_per_mact * mact)
    thin = with_widths(net, {g.root: g.channels // 2 for g in graph.groups}, (1, 8, 8))
    assert table.predict(NetworkGraph.of(thin, torch.zeros(1, 1, 8, 8))) <= table.predict(graph)
    per = table.per_filter(graph)
    assert set(per) >= {g.root for g in graph.groups} and all(v >= 0 for v in per.values())
    # a group's tabulated widths: what predict says of the network with that group cut there
    for g in graph.groups:
        row = table.groups[g.root]
        assert row["widths"][-1] == g.channels and row["ms"][-1] == pytest.approx(table.predict(graph), abs=1e-3)
        cut = with_widths(net, {g.root: row["widths"][0]}, (1, 8, 8))
        assert row["ms"][0] == pytest.approx(table.predict(NetworkGraph.of(cut, torch.zeros(1, 1, 8, 8))), abs=1e-3)
    assert len(table.measurements) == 8 and table.reference_ms == table.measurements[0]["ms"]
    assert set(table.round_to["candidates"]) == {"4", "8", "16", "32"}
    assert table.paying() == sorted(int(r) for r, c in table.round_to["candidates"].items() if c["pays"])


def test_a_convolution_costs_what_its_measured_curves_say_not_its_macs(net, table):
    """A runtime that pads channels to a multiple (oneDNN in eager PyTorch runs 18 output
    channels as slowly as 32) saves nothing for the filters of a partial multiple: the
    curves, interpolated, carry that into the prediction and into what a filter costs."""
    t = copy.deepcopy(table)
    graph = NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))
    name = next(g.root for g in graph.groups)
    ci, co = (s[1] for s in graph.layer_shapes[name])
    key = t.layers[name]
    curve = t.curves[key]
    curve["out"] = [co // 4, co // 2, 3 * co // 4, co]
    curve["in"] = [ci]
    curve["out_ms"], curve["in_ms"], curve["ms"] = [1.0, 1.0, 4.0, 4.0], [4.0], 4.0  # steps of half the width
    t.layers = {name: key}
    t.ms_per_layer_ms, t.ms_per_mmac, t.ms_per_mact = 1.0, 0.0, 0.0
    assert t.layer_ms(name, ci, co) == 4.0 and t.layer_ms(name, ci, co - co // 8) == 4.0
    assert t.layer_ms(name, ci, 5 * co // 8) == pytest.approx(2.5)  # interpolated
    assert t.layer_ms(name, ci, 1) == 1.0                            # below the narrowest: as there
    assert t.per_filter(graph)[name] == NO_TIME  # its last quarter buys no time
    # rounded to half the width, a filter costs its share of the block a rounded plan removes
    assert t.per_filter(graph, round_to=co // 2)[name] == pytest.approx(3.0 / (co - co // 2))
    curve["in"], curve["in_ms"] = [ci // 2, ci], [2.0, 4.0]  # the input halved halves the time
    assert t.layer_ms(name, ci // 2, co // 2) == pytest.approx(0.5)


def test_a_table_of_the_first_format_still_predicts_from_macs(net, table):
    old = {k: v for k, v in table.to_dict().items() if k not in ("layers", "curves", "ms_per_layer_ms")}
    old["format"] = 1
    t = LatencyTable.from_dict(old)
    graph = NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))
    mmacs, mact = counts(graph)
    assert t.predict(graph) == pytest.approx(t.fixed_ms + t.ms_per_mmac * mmacs + t.ms_per_mact * mact)
    assert "latency = " in t.to_markdown()


def test_round_to_pays_where_the_curves_say_widths_between_multiples_buy_no_time(table):
    """A runtime that pads channels to 16 (eager PyTorch's oneDNN here) times 40, 56 and 24
    channels like 48, 64 and 32: 16 pays, 32 does not (40 runs faster than 64), 8 has no
    width off its multiples on the curves; a runtime whose time follows the width pays none.
    auto takes the largest that pays; a table without curves keeps its network-level test."""
    from pl_pruning.pruning.latency import _curve_alignment

    def curve(ms):
        widths = [8 * k for k in range(1, 9)]
        return {"out": widths, "out_ms": [ms(w) for w in widths], "in": widths, "in_ms": [ms(w) for w in widths]}

    padded = _curve_alignment({"c": curve(lambda w: -(-w // 16) * 0.16)}, (8, 16, 32))
    assert padded["16"] == {"widths": 6, "no_faster": 6, "pays": True}
    assert padded["32"] == {"widths": 6, "no_faster": 2, "pays": False}  # of 40, 48, 56 only 56 runs as 64
    assert padded["8"] == {"widths": 0, "no_faster": 0, "pays": False}
    linear = _curve_alignment({"c": curve(lambda w: w * 0.01)}, (8, 16, 32))
    assert not any(c["pays"] for c in linear.values())
    t = copy.deepcopy(table)
    assert set(t.round_to["candidates"]["16"]) == {"widths", "no_faster", "pays"}  # fitted with curves
    t.round_to = {"candidates": padded}
    assert t.paying() == [16] and t.multiple() == 16 and "no faster than the multiple above" in t.to_markdown()
    t.round_to = {"candidates": {str(r): {"aligned_ms": 1.0, "one_less_ms": 2.0, "pays": True} for r in (4, 8)}}
    assert t.multiple() == 8 and "ms one channel fewer" in t.to_markdown()   # the largest that pays
    t.round_to = {"candidates": {}}
    assert t.paying() == [] and t.multiple() is None


def test_a_table_without_curves_times_multiples_against_one_channel_fewer(net):
    t = LatencyTable.fit(net, FAST, input_shape=(1, 8, 8), layer_curves=False, round_candidates=(4,))
    assert not t.curves and set(t.round_to["candidates"]["4"]) == {"aligned_ms", "one_less_ms", "pays"}
    assert len(t.measurements) == 8  # the alignment networks are timed, not fitted


def test_eager_latency_runs_the_network_in_one_memory_format():
    """A run with ChannelsLast keeps its weights channels-last and surgery makes new ones
    contiguous: the eager timing converts the copy it runs, whatever the network holds."""
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)

        def forward(self, x):
            seen.append((x.is_contiguous(memory_format=torch.channels_last),
                         self.conv.weight.is_contiguous(memory_format=torch.channels_last)))
            return self.conv(x)

    mixed = Probe().to(memory_format=torch.channels_last)
    for fmt, want in (("contiguous", (False, False)), ("channels_last", (True, True))):
        seen.clear()
        Runtime("eager", batch_size=2, min_run_time=0.01, rounds=1, memory_format=fmt).measure([mixed], (3, 8, 8))
        assert seen and set(seen) == {want}
    assert mixed.conv.weight.is_contiguous(memory_format=torch.channels_last)  # the network itself is untouched
    with pytest.raises(PlPruningError, match="memory_format"):
        Runtime(memory_format="nhwc")


def test_the_table_round_trips_through_json(net, table, tmp_path):
    path = table.save(tmp_path / "sub" / "table.json")
    again = LatencyTable.load(path)
    assert again.to_dict() == table.to_dict() == json.loads(path.read_text())
    graph = NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))
    assert again.predict(graph) == table.predict(graph) and again.per_filter(graph) == table.per_filter(graph)
    text = again.to_markdown()
    assert "# Latency table (eager, batch 8, 1 thread(s))" in text and "features.3" in text
    assert "round_to:" in text
    with pytest.raises(PlPruningError, match="does not exist"):
        LatencyTable.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(PlPruningError, match="not a latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    with pytest.raises(PlPruningError, match="inputs of shape"):
        table.check_input((3, 32, 32))


def _schedule(**kw) -> Schedule:
    settings = dict(phases=["global"], global_step=0.2, layer_step=0.25, min_step=0.05, max_drop=0.05,
                    finetune_epochs=0, final_epochs=0, mode="max", normalize="per-layer", layer_order="by_score",
                    target_macs=None, max_steps=None, min_channels=1, round_to=None)
    return Schedule(**{**settings, **kw})


def test_steps_are_sized_in_milliseconds_saved(net):
    graph = NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))
    scored = planner.score_groups(graph.groups, {g.root: torch.rand(g.channels) for g in graph.groups})
    # one layer's filters cost 10x the others': a step of 20% of 50 ms must save >= 10 ms
    ms = {name: 0.05 for name in graph.macs_per_filter}
    ms[graph.groups[0].root] = 0.5
    current = 50.0
    schedule = _schedule(target_latency="30%")
    net_ = Network(scored=lambda: (graph, scored), cost=lambda: (graph.macs, 1), restore=lambda: None,
                   latency=lambda: (current, current), latency_per_filter=lambda g: ms)
    run = RunState(step=0.2)
    d = schedule.decide(run, 0.9, net_, 0, None)
    assert d.judged.latency_ms == current and run.phase.value == "global"
    costs = dict(zip((g.root for g, _ in scored), planner.group_costs(scored, graph, ms), strict=True))
    saved = [costs[root] for root, idx in d.plan.items() for _ in idx]
    assert sum(saved) >= 0.2 * current - 1e-9
    assert sum(saved) - max(saved) < 0.2 * current  # the fewest filters that save it
    with pytest.raises(PlPruningError, match="not both"):
        _schedule(target_latency="30%", target_macs=0.3)


def test_the_room_left_to_the_target_caps_a_step(net):
    graph = NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))
    scored = planner.score_groups(graph.groups, {g.root: torch.rand(g.channels) for g in graph.groups})
    ms = {name: 0.1 for name in graph.macs_per_filter}
    net_ = Network(scored=lambda: (graph, scored), cost=lambda: (graph.macs, 1), restore=lambda: None,
                   latency=lambda: (10.0, 10.0), latency_per_filter=lambda g: ms)
    d = _schedule(target_latency="9.5ms", global_step=0.4).decide(RunState(step=0.4), 0.9, net_, 0, None)
    costs = dict(zip((g.root for g, _ in scored), planner.group_costs(scored, graph, ms), strict=True))
    saved = sum(costs[root] * len(idx) for root, idx in d.plan.items())
    assert 0.5 <= saved < 0.5 + max(costs.values())  # 0.5 ms to go, not 40% of 10 ms


def test_latency_settings_are_checked_at_construction():
    with pytest.raises(PlPruningError, match="target_latency"):
        PhaseController(target_latency=0.5)
    with pytest.raises(PlPruningError, match="runtime"):
        PhaseController(target_latency="50%", latency={"runtime": "tvm"})
    with pytest.raises(PlPruningError, match="latency.table"):
        PhaseController(target_latency="50%", latency={"table": 3})
    assert PhaseController(latency={"runtime": "onnxruntime"}).latency_settings is None  # nothing asks for it
    assert PhaseController(round_to="auto").latency_settings == {"auto_round": True}


def test_a_reading_far_off_the_prediction_is_timed_twice_more(net, table, monkeypatch):
    """On a loaded machine one side of a side-by-side timing can be slowed throughout: a
    reading more than RETIME_SHARE off what the model expects is taken twice more and the
    median of the three stands; one near it, or with nothing expected, is taken once."""
    model = LatencyModel(table, reference=net)
    ratios = iter([3.0, 1.1, 0.9, 1.0 + RETIME_SHARE / 2, 5.0])
    monkeypatch.setattr(Runtime, "time", lambda self, runners: [2.0, 2.0 * next(ratios)])
    ref = model.reference_ms
    assert model.measure(net, expected=ref) == pytest.approx(1.1 * ref)
    assert model.readings == pytest.approx([3.0 * ref, 1.1 * ref, 0.9 * ref])
    assert model.measure(net, expected=ref) == pytest.approx((1 + RETIME_SHARE / 2) * ref) and len(model.readings) == 1
    assert model.measure(net) == pytest.approx(5.0 * ref) and len(model.readings) == 1
    # a reading near the prediction that says the cut bought no time (not under ``before``) is
    # timed twice more too; one under it is taken once
    ratios = iter([1.0, 0.8, 0.9, 0.95])
    assert model.measure(net, expected=ref, before=0.97 * ref) == pytest.approx(0.9 * ref)
    assert model.readings == pytest.approx([ref, 0.8 * ref, 0.9 * ref])
    assert model.measure(net, expected=ref, before=0.97 * ref) == pytest.approx(0.95 * ref) and len(model.readings) == 1
    record = StepRecord("global", None, 0.1, 1, 1, latency_ms=1.0, latency_readings=[3.0, 1.0, 0.9])
    assert record.to_dict()["latency_readings"] == [3.0, 1.0, 0.9]
    assert "latency_readings" not in StepRecord("global", None, 0.1, 1, 1).to_dict()


@pytest.mark.slow
def test_a_run_stops_on_its_latency_target(tmp_path, caplog, monkeypatch):
    model, dm = trained_digits_classifier(epochs=4)
    real_time, slow_next = Runtime.time, []

    def timed(self, runners):  # the first timing of the first cut beside the reference: 4x too slow
        ms = real_time(self, runners)
        return [ms[0], ms[1] * 4] if slow_next and slow_next.pop() else ms

    twin = copy.deepcopy(model)
    controller = PhaseController(criterion="l1", phases=["layerwise"], finetune_epochs=0, final_epochs=0,
                                 reference="accepted", max_drop=0.5, target_latency="70%",
                                 latency={"batch_size": 64, "min_run_time": 0.1, "rounds": 3,
                                          "save_table": str(tmp_path / "saved.json")},
                                 normalize="per-layer", report_dir=str(tmp_path))
    real_cut = controller.pruner.cut

    def cut(*args, **kwargs):
        slow_next.append(controller.run.surgeries == 0)
        return real_cut(*args, **kwargs)

    monkeypatch.setattr(Runtime, "time", timed)
    monkeypatch.setattr(controller.pruner, "cut", cut)
    with caplog.at_level(logging.INFO, logger="pl_pruning"):
        trainer([controller], max_epochs=2).fit(model, datamodule=dm)
    report = controller.report()
    # the controller's state (the latency table in it) is what a checkpoint keeps, and resuming
    # loads a checkpoint weights-only: a TorchVersion in the table's machine made that fail
    buffer = io.BytesIO()
    torch.save(controller.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["latency_table"]["machine"]["torch"] == str(torch.__version__)
    steps = [e for e in controller.history if e["phase"] == "layerwise"]
    # the first cut's first reading, four times too slow, was timed twice more: the median stands
    first = steps[0]["latency_readings"]
    assert len(first) == 3 and first[0] > 2 * max(first[1:]) and steps[0]["latency_ms"] < first[0]
    assert any("more than 20% off: timed twice more" in r.message for r in caplog.records)
    caplog.clear()
    accepted = [e for e in steps if e["accepted"]]
    target = report["target_latency_ms"]
    assert target == pytest.approx(0.7 * controller.history[0]["latency_ms"])
    # every cut was timed and predicted; the run stopped on the first accepted network at
    # or under the target (its own measurement), unless it ran out of steps
    assert all(e["latency_ms"] > 0 and e["predicted_latency_ms"] > 0 for e in steps)
    reached = [i for i, e in enumerate(accepted) if e["latency_ms"] <= target]
    assert reached, "no accepted network reached the target"
    assert reached[0] == len(accepted) - 1
    lat = report["latency"]
    assert lat["target_ms"] == target and lat["prediction_error"]["steps"] == len(steps)
    assert all(math.isfinite(e) for e in lat["prediction_error"]["each"])
    md = (tmp_path / "pruning_report.md").read_text()
    assert "latency (eager, batch 64, 1 thread(s), measured)" in md and "| latency ms | predicted ms |" in md
    assert LatencyTable.load(tmp_path / "latency_table.json").to_dict() == \
        LatencyTable.load(tmp_path / "saved.json").to_dict()
    assert "latency" in markdown_table(report)
    # a saved table plans another run without measuring (its predictions only)
    # ... and with round_to="auto" takes the multiple the table says pays (here made to say 4)
    saved = json.loads((tmp_path / "saved.json").read_text())
    saved["round_to"] = {"candidates": {"4": {"aligned_ms": 1.0, "one_less_ms": 2.0, "pays": True}}}
    (tmp_path / "aligned.json").write_text(json.dumps(saved))
    again = PhaseController(criterion="l1", phases=["global", "layerwise"], finetune_epochs=0, final_epochs=0,
                            reference="accepted", max_drop=0.5, target_latency="70%", round_to="auto",
                            latency={"table": str(tmp_path / "aligned.json")}, report_dir=str(tmp_path / "again"))
    with caplog.at_level(logging.INFO, logger="pl_pruning"):
        trainer([again], max_epochs=1).fit(twin, datamodule=dm)
    # a global step is sized in latency saved, and its log line says so
    assert any("global step of" in r.message and "% of the latency)" in r.message for r in caplog.records)
    assert any("round_to=auto: 4 (" in r.message for r in caplog.records) and again.schedule.round_to == 4
    channels = json.loads((tmp_path / "again" / "pruning_report.json").read_text())["channels"]
    before, after = channels["before"], channels["after"]
    assert any(after[k] < before[k] for k in before)
    assert all(after[k] % 4 == 0 or after[k] <= 4 for k in before if after[k] < before[k])  # widths 4 allows
    cuts = [e for e in again.history if e["phase"] in ("global", "layerwise")]
    assert cuts and all("latency_ms" not in e and e["predicted_latency_ms"] > 0 for e in cuts)
    assert again.report()["latency"]["measured"] is False


def test_a_step_past_the_latency_target_is_rolled_back_and_halved(net):
    """A cut that runs more than TARGET_TOLERANCE under the target (the model under-predicted
    what it saves) is rolled back and its step halved; one within the tolerance ends pruning."""
    graph = NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))
    scored = planner.score_groups(graph.groups, {g.root: torch.rand(g.channels) for g in graph.groups})
    restored = []
    net_ = Network(scored=lambda: (graph, scored), cost=lambda: (graph.macs, 1), restore=lambda: restored.append(1),
                   latency=lambda: (10.0, 10.0), latency_per_filter=lambda g: {n: 0.1 for n in graph.macs_per_filter})
    schedule = _schedule(target_latency="50%", global_step=0.4)  # 5 ms of a 10 ms baseline
    run = RunState(step=0.4)
    baseline = schedule.decide(run, 0.9, net_, 0, None).judged
    run.baseline_cost = {"macs": graph.macs, "params": 1, "latency_ms": baseline.latency_ms}  # as the controller keeps it
    run.accepted = {"record": baseline.to_dict()}

    def judge(latency_ms: float):
        run.pending = StepRecord("global", None, run.step, graph.macs // 2, 1, latency_ms=latency_ms,
                                 predicted_latency_ms=5.0)
        return schedule.decide(run, 0.9, net_, 0, None)

    d = judge(5.0 * (1 - TARGET_TOLERANCE) - 0.01)
    assert not d.judged.accepted and d.judged.past_target and restored == [1]
    assert run.step == pytest.approx(0.2) and run.phase.value == "global"  # halved, pruning goes on
    assert "rolled back (past the latency target)" in d.judged.describe("val_acc", "latency")
    d = judge(5.0 * (1 - TARGET_TOLERANCE) + 0.01)
    assert d.judged.accepted and not d.judged.past_target and restored == [1]
    assert run.phase.value == "final"  # at the target: pruning ends


def test_a_step_timed_no_faster_than_the_network_it_was_cut_from_is_rolled_back(net):
    """Under target_latency a cut that bought no time (a width the runtime pads back) costs
    accuracy and MACs for nothing: timed no faster than the accepted network it was cut from,
    it is rolled back and halved however little accuracy it lost; a prediction alone (a table
    of another machine) is not judged so."""
    graph = NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))
    scored = planner.score_groups(graph.groups, {g.root: torch.rand(g.channels) for g in graph.groups})
    restored = []
    net_ = Network(scored=lambda: (graph, scored), cost=lambda: (graph.macs, 1), restore=lambda: restored.append(1),
                   latency=lambda: (10.0, 10.0), latency_per_filter=lambda g: {n: 0.1 for n in graph.macs_per_filter})
    schedule = _schedule(target_latency="50%", global_step=0.4)
    run = RunState(step=0.4)
    baseline = schedule.decide(run, 0.9, net_, 0, None).judged
    run.baseline_cost = {"macs": graph.macs, "params": 1, "latency_ms": baseline.latency_ms}
    run.accepted = {"record": baseline.to_dict()}

    def judge(latency_ms: float | None, predicted: float = 8.0):
        run.pending = StepRecord("global", None, run.step, graph.macs // 2, 1, latency_ms=latency_ms,
                                 predicted_latency_ms=predicted)
        return schedule.decide(run, 0.9, net_, 0, None)

    d = judge(10.0)  # no faster than the 10 ms it was cut from, no accuracy lost
    assert not d.judged.accepted and d.judged.no_faster and not d.judged.past_target and restored == [1]
    assert run.step == pytest.approx(0.2) and run.phase.value == "global"
    assert "rolled back (no faster than the network it was cut from)" in d.judged.describe("val_acc", "latency")
    assert d.judged.to_dict()["no_faster"] is True and "no_faster" not in baseline.to_dict()
    assert "rolled back (no faster)" in markdown_table({"criterion": "l1", "phases": ["global"], "max_drop": 0.05,
                                                         "history": [baseline.to_dict(), d.judged.to_dict()]})
    d = judge(9.0)  # faster than the 10 ms it was cut from
    assert d.judged.accepted and not d.judged.no_faster and restored == [1]
    run.accepted = {"record": d.judged.to_dict()}
    d = judge(None, predicted=9.5)  # predicted only (slower than 9 ms): judged on accuracy and the target alone
    assert d.judged.accepted and not d.judged.no_faster and restored == [1]
    # without a latency target (latency only measured, or a MACs target) nothing is judged so
    plain = _schedule(global_step=0.4)
    assert not plain._no_faster(run, StepRecord("global", None, 0.1, 1, 1, latency_ms=99.0))
    # pruning that ends above its target says so, and counts the cuts that bought no time
    run.history = [baseline, StepRecord("global", None, 0.4, 1, 1, latency_ms=10.0, no_faster=True),
                   StepRecord("global", None, 0.2, 1, 1, latency_ms=9.0, accepted=True)]
    run.accepted = {"record": run.history[-1].to_dict()}
    short = schedule.short_of_target(run)
    assert "ended at 9.00 ms, above target_latency=5.00 ms" in short and "1 of 2 cuts timed no faster" in short
    assert "round_to=" in short and "round_to=" not in _schedule(target_latency="50%", round_to=16).short_of_target(run)
    run.accepted = {"record": StepRecord("global", None, 0.2, 1, 1, latency_ms=4.9, accepted=True).to_dict()}
    assert schedule.short_of_target(run) is None and plain.short_of_target(run) is None


def test_an_onnx_runtime_table_times_each_convolution_as_exported_alone(net, tmp_path):
    """ONNX Runtime's curves time each convolution exported alone (the TorchScript exporter, one
    Conv node): the session computes what the layer computes, and every convolution has a curve."""
    from pl_pruning.measure import latency_runner

    conv = torch.nn.Conv2d(4, 6, 3, padding=1).eval()
    x = torch.randn(2, 4, 8, 8)
    run = latency_runner(conv, x, "onnxruntime", 1, tmp_path, dynamo=False)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(run()[0]), conv(x), atol=1e-5)
    ort = LatencyTable.fit(net, Runtime("onnxruntime", batch_size=8, min_run_time=0.03, rounds=1),
                           input_shape=(1, 8, 8), scales=(1.0, 0.5), round_candidates=())
    convs = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(ort.layers) == sorted(convs) and ort.runtime["name"] == "onnxruntime"
    assert all(v > 0 for c in ort.curves.values() for v in c["out_ms"] + c["in_ms"])
    assert ort.predict(NetworkGraph.of(net, torch.zeros(1, 1, 8, 8))) > 0
