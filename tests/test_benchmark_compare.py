"""benchmarks/compare/: what a run is called, which network it starts from, and how the
tables judge a setting against the external pipelines."""

from __future__ import annotations

import pytest
from benchmark_modules import ROOT, load_benchmark

run = load_benchmark("compare/run.py", "compare_run")
render = load_benchmark("compare/render.py", "compare_render")


def _args(method="pl_pruning", name=None, reduction=None, lr=run.FINETUNE_LR, budget=15, experiment=run.EXPERIMENT,
          fast=False, shape=None, reg=run.TP_SL["reg"], steps=None):
    import argparse

    return argparse.Namespace(method=method, name=name, reduction=reduction, lr=lr, budget=budget,
                              experiment=experiment, fast=fast, shape=shape, reg=reg, steps=steps)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, "two_phase"),
    ({"method": "torch_pruning", "reduction": 3.0}, "torch_pruning_3x"),
    ({"method": "l1_uniform", "reduction": 3.0, "lr": 0.05, "budget": 40}, "l1_uniform_3x_lr0.05_e40"),
    ({"name": "at_once_3x_e40", "budget": 40}, "at_once_3x_e40"),  # --name is taken as given
    ({"method": "torch_pruning", "reduction": 3.0, "experiment": "converged_resnet20"}, "resnet20_torch_pruning_3x"),
    ({"name": "at_once_3x", "experiment": "converged_resnet20"}, "resnet20_at_once_3x"),
    ({"name": "at_once_3x", "fast": True}, "at_once_3x_bf16cl"),  # bf16 runs never share an fp32 record
    ({"method": "torch_pruning_sl", "reduction": 3.0, "budget": 40, "fast": True}, "torch_pruning_sl_3x_e40_bf16cl"),
    ({"method": "torch_pruning_sl", "reduction": 3.0, "steps": 400, "budget": 100}, "torch_pruning_sl_3x_e100"),
    ({"method": "torch_pruning_sl", "reduction": 3.0, "reg": 5e-4, "steps": 200}, "torch_pruning_sl_3x_reg0.0005_steps200"),
    ({"method": "scratch", "shape": "at_once_3x_e40_seed2"}, "scratch_at_once_3x_e40"),
    ({"method": "scratch", "shape": "uniform", "reduction": 3.0, "fast": True}, "scratch_uniform_3x_bf16cl"),
    ({"method": "scratch", "shape": "resnet20_at_once_3x_seed0", "experiment": "converged_resnet20"},
     "resnet20_scratch_at_once_3x"),
])
def test_run_names_keep_settings_and_networks_apart(kwargs, expected):
    assert run.run_name(_args(**kwargs)) == expected


def test_each_experiment_starts_from_its_own_committed_network(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # main() moves to the repository root; put the test's back after
    assert run.CHECKPOINT == run.CHECKPOINTS[run.EXPERIMENT]
    for experiment, path in run.CHECKPOINTS.items():
        assert path.is_file(), f"{experiment}: {path} is not committed"
        assert (ROOT / "conf" / "experiment" / f"{experiment}.yaml").is_file()
    with pytest.raises(SystemExit):
        run.main(["torch_pruning", "--reduction", "3", "--experiment", "converged_mine"])
    assert "no converged network is known for experiment 'converged_mine': give --checkpoint" in capsys.readouterr().err


def test_a_recorded_run_is_not_run_again_over_its_record(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(run, "RUNS", tmp_path)
    (tmp_path / "at_once_3x_seed1.json").write_text("{}")
    started = []
    monkeypatch.setattr(run, "run_pl_pruning", lambda args: started.append(args) or {})
    with pytest.raises(SystemExit):
        run.main(["pl_pruning", "--seed", "1", "--name", "at_once_3x"])
    assert started == []
    assert "at_once_3x seed 1 is recorded already" in capsys.readouterr().err
    assert (tmp_path / "at_once_3x_seed1.json").read_text() == "{}"


def _row(acc, std=None, n=3, drop=1.0, reduction=3.01, budget=40):
    return {"n": n, "acc": (acc, std), "drop": (drop, std), "macs_reduction": (reduction, 0.0),
            "budget": budget, "method": "pl_pruning"}


@pytest.mark.parametrize(("theirs", "expected"), [
    (_row(82.49, 0.31), "+0.48, wins (spread 0.31)"),
    (_row(82.80, 0.31), "+0.17, tie (spread 0.31)"),      # within the larger spread
    (_row(83.20, 0.05), "-0.23, loses (spread 0.07)"),    # beyond it, the other way
    (_row(82.00, None, n=1), "+0.97, one seed: no spread"),
    (None, "not run yet"),
])
def test_a_setting_wins_only_beyond_the_larger_seed_spread(theirs, expected):
    assert render._versus(_row(82.97, 0.07), theirs) == expected


@pytest.mark.parametrize(("drop", "reduction", "budget", "verdict"), [
    (0.95, 3.01, 40, "met (40 epochs)"),
    (1.24, 3.01, 40, "NOT met (40 epochs)"),  # more than a point lost
    (0.95, 2.90, 40, "NOT met (40 epochs)"),  # short of 3x
    (0.95, 3.01, 60, "NOT met (60 epochs)"),  # over the budget
])
def test_the_goal_column_needs_3x_a_point_and_40_epochs(drop, reduction, budget, verdict):
    name = f"{render.L1_LW}_e40"
    rows = {name: _row(84.0, 0.1, drop=drop, reduction=reduction, budget=budget)}
    line = next(x for x in render.findings(rows) if x.startswith(f"| `{name}`"))
    assert line.split(" | ")[4] == verdict


def test_before_and_after_compares_runs_given_the_same_epochs():
    rows = {"shipped": _row(81.09, None, n=1, drop=4.34, reduction=1.47, budget=15),
            "shipped_e40": _row(82.0, None, n=1, drop=1.5, reduction=1.6, budget=40),
            render.L1_LW: _row(82.97, 0.07, drop=2.46, reduction=3.01, budget=15),
            f"{render.L1_LW}_e40": _row(83.97, 0.31, drop=1.46, reduction=3.01, budget=40)}
    cells = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[5]
             for line in render.findings(rows) if line.startswith("| `")}
    assert cells[f"`{render.L1_LW}`"] == "2.05x, NOT within"   # 3.01 / 1.47, 2.46 points > 2
    assert cells[f"`{render.L1_LW}_e40`"] == "1.88x, within"   # 3.01 / 1.6, not / 1.47
    del rows["shipped_e40"]
    cells = [line.split(" | ")[5] for line in render.findings(rows) if line.startswith(f"| `{render.L1_LW}_e40`")]
    assert cells == ["no run before at 40 epochs"]


def test_a_setting_with_no_external_run_at_its_reduction_says_so():
    name = f"{render.L1_LW_333}_e40"
    rows = {"shipped_e40": _row(82.67, None, n=1, drop=2.76, reduction=1.67, budget=40),
            name: _row(83.5, None, n=1, drop=1.9, reduction=3.34, budget=40)}
    cells = next(x for x in render.findings(rows) if x.startswith(f"| `{name}`")).split(" | ")
    assert cells[5] == "2.00x, within"  # 3.34 / 1.67, 1.9 points <= 2
    assert cells[6:] == ["none at this reduction", "none at this reduction |"]
    assert render.style_of(name, "pl_pruning") == "preset"


def test_the_goal_and_the_controller_before_judge_the_vggs_runs_only():
    ours, tp, l1 = render.RESNET20_3X
    rows = {"shipped": _row(81.09, None, n=1, drop=4.34, reduction=1.47, budget=15),
            ours: {**_row(85.75, None, n=1, drop=1.79, reduction=3.0, budget=15), "experiment": "converged_resnet20"},
            l1: {**_row(84.38, None, n=1, drop=3.16, reduction=3.08, budget=15), "experiment": "converged_resnet20",
                 "method": "l1_uniform"}}
    cells = next(x for x in render.findings(rows) if x.startswith(f"| `{ours}`")).split(" | ")
    assert cells[4:6] == ["- (set on the VGG)", "- (set on the VGG)"]  # not 3.0 / 1.47, the VGG's
    assert cells[6:] == ["not run yet", "+1.37, one seed: no spread |"]


def test_each_method_has_its_own_colour_in_the_plot():
    keys = {render.style_of(n, m) for n, m in [(render.L1_LW, "pl_pruning"), (f"{render.L1_LW}_e40", "pl_pruning"),
                                              ("at_once_3x", "pl_pruning"), ("shipped", "pl_pruning"),
                                              ("torch_pruning_3x", "torch_pruning"), ("l1_uniform_3x", "l1_uniform"),
                                              ("torch_pruning_sl_3x_e40", "torch_pruning_sl"),
                                              ("scratch_uniform_3x", "scratch")]}
    assert keys == set(render.STYLE)
    assert render.style_of("rederived_3x_e40_bf16cl", "pl_pruning") == "preset"
    assert render.style_of("x", "a_method_not_drawn_yet") == "ours"
    assert len({colour for colour, _ in render.STYLE.values()}) == len(render.STYLE)


def test_a_40_epoch_run_of_a_timed_cut_shows_that_cuts_latency_named():
    cells = render.speedups()
    timed = cells[render.L1_LW]
    assert timed.endswith("x") and float(timed[:-1]) > 1
    assert cells[f"{render.L1_LW}_e40"] == f"{timed} (the shape of {render.L1_LW})"


def test_the_resnet20_table_names_the_runs_the_harness_will_write():
    resnet = "converged_resnet20"
    written = [run.run_name(_args(name=render.L1_LW, experiment=resnet)),
               run.run_name(_args(method="torch_pruning", reduction=3.0, experiment=resnet)),
               run.run_name(_args(method="l1_uniform", reduction=3.0, experiment=resnet))]
    assert written == render.RESNET20_3X
    assert render.MATCHED[written[0]] == written[1:]


def test_each_shape_is_rebuilt_from_its_own_experiments_network(tmp_path, monkeypatch):
    import copy
    import json

    import torch

    from pl_pruning.measure import channel_counts
    from pl_pruning.models import build_model
    from pl_pruning.pruning.surgery import prune_filters, pruning_groups

    latency = load_benchmark("compare/latency.py", "compare_latency")
    dense, x = build_model("resnet20", num_classes=10, in_channels=3), torch.zeros(1, 3, 32, 32)
    cut = copy.deepcopy(dense)  # a third of every coupled group's filters gone: residual streams included
    have = channel_counts(cut, convs_only=True)
    prune_filters(cut, {g.convs[0]: range(have[g.convs[0]] // 3) for g in pruning_groups(cut, x)}, x, compensate=False)
    channels = channel_counts(cut, convs_only=True)
    (tmp_path / "runs").mkdir()
    for name, record in {"resnet20_torch_pruning_3x": {"experiment": "converged_resnet20"},
                         "torch_pruning_3x": {}}.items():  # runs from before the record named it: the VGG's
        (tmp_path / "runs" / f"{name}_seed0.json").write_text(json.dumps({"name": name, "seed": 0, **record,
                                                                          "channels": {"net.conv1": 11}}))
    monkeypatch.setattr(latency, "HERE", tmp_path)
    known = latency.shapes()
    assert known["resnet20_torch_pruning_3x"]["experiment"] == "converged_resnet20"
    assert known["torch_pruning_3x"]["experiment"] == run.EXPERIMENT
    assert channel_counts(latency.rebuild(dense, channels, x), convs_only=True) == channels
    with pytest.raises(RuntimeError, match="is not the recorded"):  # a shape this network cannot take
        latency.rebuild(dense, {**channels, "layer1.0.conv2": 5}, x)


def test_a_validation_curve_keeps_each_epoch_in_its_place(tmp_path):
    """A resumed run logs a new CSV version; epochs whose logs were lost (parked before its
    logs were kept) stay gaps, so the epochs that remain are not shifted to the start, and
    the controller's judgments at step 0 are not epochs."""
    import os

    logs = tmp_path / "csv" / "lightning_logs"
    for version, rows, mtime in [(0, ["0,0,0.30", "0,10,0.70", "1,20,0.75"], 1), (1, ["2,30,0.80", "3,40,0.81"], 2)]:
        path = logs / f"version_{version}" / "metrics.csv"
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(["epoch,step,val_acc", *rows]) + "\n")
        os.utime(path, (mtime, mtime))
    assert run.val_curve(tmp_path) == [0.70, 0.75, 0.80, 0.81]
    (logs / "version_0" / "metrics.csv").unlink()
    assert run.val_curve(tmp_path) == [None, None, 0.80, 0.81]


def test_the_curve_band_leaves_an_epoch_a_seed_lost_out_of_that_epochs_mean():
    band = render.curve_band([[None, 0.8, 0.9], [0.6, 0.6]])
    assert band == [(0, 0.6, 0.6, 0.6), (1, pytest.approx(0.7), 0.6, 0.8), (2, 0.9, 0.9, 0.9)]


def test_a_scratch_control_has_the_pruned_runs_shape_freshly_initialised_or_uniform_macs():
    import torch
    from omegaconf import OmegaConf

    from pl_pruning.measure import channel_counts, count_macs
    from pl_pruning.models import build_model

    arch = OmegaConf.create({"name": "vgg16", "width": 0.25})
    example = torch.zeros(1, 3, 32, 32)
    dense = build_model("vgg16", width=0.25)
    wanted = {f"net.{k}": max(1, v // 3) for k, v in channel_counts(dense, convs_only=True).items()}
    torch.manual_seed(0)
    net = run._shaped(arch, wanted, 10, 3, example)
    assert {f"net.{k}": v for k, v in channel_counts(net, convs_only=True).items()} == wanted
    # PyTorch's default init draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)): re-initialised after the
    # cut, a layer's weights reach beyond the bound of its full-width fan-in
    second = net.features[3].weight
    thin_bound, full_bound = 1 / (second.shape[1] * 9) ** 0.5, 1 / (dense.features[3].weight.shape[1] * 9) ** 0.5
    assert full_bound < second.abs().max() <= thin_bound
    target = count_macs(dense, example) / 3
    thin, width = run._uniform(arch, target, 10, 3, example)
    assert count_macs(thin, example) <= target and 0.1 < width < 0.25
    assert count_macs(build_model("vgg16", width=width * 1.02), example) > target  # the largest width under it


def test_headline_rows_carry_welch_p_on_validation_and_test():
    def run_(name, seed, val, test, method="pl_pruning"):
        return {"name": name, "seed": seed, "method": method, "budget": 40, "macs_reduction": 3.0,
                "acc_drop": 0.01, "pruned": {"test_acc": test}, "baseline": {"test_acc": 0.85},
                "val_curve": [0.5, val], "wall_s": 600.0, "overrides": ["pruning.distill=false"]}
    ours, theirs = render.HEADLINES[0]
    runs = [run_(ours, s, 0.85 + 0.001 * s, 0.84 + 0.001 * s) for s in range(3)]
    runs += [run_(theirs, s, 0.83 + 0.001 * s, 0.835 + 0.001 * s, "torch_pruning_sl") for s in range(3)]
    line = next(line for line in render.headlines(render.summarise(runs)) if line.startswith(f"| {ours} | {theirs}"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[4] == "+2.00" and float(cells[5]) < 0.001  # validation: diff and p
    assert cells[7] == "+0.50" and float(cells[8]) < 0.01   # test beside it
    assert render.images_forwarded(runs[0]) == 45_000 * 40 + 5_000 * 40 + 5_000  # no teacher, no judged step
    assert render.images_forwarded({**runs[3], "images_forwarded": 1234}) == 1234  # counted by the run: taken as is


# ----------------------------------------------------------------------------- Torch-Pruning with sparsity learning


def test_their_sparsity_learning_schedule_scales_to_the_budget():
    theirs = run.sl_schedule(200)  # their own 100 + 100 epochs
    assert (theirs["sparsity_epochs"], theirs["finetune_epochs"]) == (100, 100)
    assert theirs["sparsity_milestones"] == theirs["finetune_milestones"] == [60, 80]
    ours = run.sl_schedule(40)
    assert (ours["sparsity_epochs"], ours["finetune_epochs"]) == (20, 20)
    assert ours["sparsity_milestones"] == ours["finetune_milestones"] == [12, 16]
    assert (ours["reg"], ours["iterative_steps"], ours["sparsity_lr"], ours["finetune_lr"]) == (1e-4, 400, 0.01, 0.01)
    assert (ours["sparsity_weight_decay"], ours["weight_decay"]) == (0.0, 5e-4)  # no decay beside the regulariser
    odd = run.sl_schedule(15)
    assert (odd["sparsity_epochs"], odd["finetune_epochs"], odd["finetune_milestones"]) == (7, 8, [5, 6])


def _tiny_net():
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_group_sparsity_shrinks_the_filters_its_pruner_ranks_lowest(tmp_path):
    """The regulariser acts in a real fit: against the same fit without it, every filter of
    the first layer shrinks, the one the pruner would cut first (lowest group importance)
    most, and the learning rate follows the step schedule."""
    import copy

    import group_sparsity as gs  # benchmarks/compare/ (on the path with run.py)
    import lightning as L
    import torch
    import torch_pruning as tp

    from pl_pruning.data.synthetic import SyntheticDataModule
    from pl_pruning.module import ImageClassifier

    torch.manual_seed(0)
    net, example = _tiny_net(), torch.zeros(1, 3, 8, 8)

    def trained(regularise):
        n = copy.deepcopy(net)
        pruner = gs.group_sl_pruner(n, example, 10, reg=1.0, steps=10, max_pruning_ratio=1.0)
        group = pruner.DG.get_pruning_group(n[0], tp.prune_conv_out_channels, idxs=list(range(8)))
        importance = pruner.estimate_importance(group)
        schedule = gs.MultiStepLR(0.01, [1], 0.1)
        L.seed_everything(0)
        L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                  callbacks=[schedule, *([gs.GroupSparsity(pruner, n)] if regularise else [])]).fit(
            ImageClassifier(n, num_classes=10, input_shape=(3, 8, 8), lr=0.01, weight_decay=0.0, nesterov=False,
                            scheduler="none"),
            datamodule=SyntheticDataModule(input_shape=(3, 8, 8), num_train=64, num_val=16, num_test=16, batch_size=16))
        assert schedule.rate(0) == 0.01 and schedule.rate(1) == pytest.approx(0.001)
        return n[0].weight.detach().flatten(1).norm(dim=1), importance

    with_reg, importance = trained(True)
    without, _ = trained(False)
    ratio = with_reg / without
    weakest, strongest = int(importance.argmin()), int(importance.argmax())
    assert (ratio < 0.99).all()
    assert ratio[weakest] < 0.8 * ratio[strongest]


def test_torch_pruning_with_sparsity_learning_resumes_each_phase_and_reaches_the_target(tmp_path, monkeypatch):
    """The whole method on a tiny network and synthetic data, interrupted once in its sparsity
    learning and once in its fine-tune, each time parked and its working folder lost (a
    session's machine gone): each sitting continues from the phase's checkpoint, the record
    counts every epoch's images once, and the cut meets the MACs target."""
    import json
    import shutil

    import group_sparsity as gs  # the module run.py imports: its Tally is the one patched
    import torch
    from omegaconf import OmegaConf

    import pl_pruning.measure
    from pl_pruning.data.synthetic import SyntheticDataModule
    from pl_pruning.models import build_model

    monkeypatch.chdir(ROOT)
    for name, path in {"HERE": tmp_path, "RUNS": tmp_path / "runs", "PARTIAL": tmp_path / "partial"}.items():
        monkeypatch.setattr(run, name, path)
    monkeypatch.setattr(run, "_setup", lambda args: (
        OmegaConf.create({"model": {"name": "vgg16"}}),
        SyntheticDataModule(input_shape=(3, 32, 32), num_train=32, num_val=16, num_test=16, batch_size=16),
        build_model("vgg16", num_classes=10, in_channels=3, width=0.0625)))
    monkeypatch.setattr(pl_pruning.measure, "measure_latency", lambda *args, **kwargs: 1.0)  # no timing: seconds saved

    class Interrupted(Exception):
        pass

    epochs_started, stop_at = [], [2]
    original = gs.Tally.on_train_epoch_start

    def counting(self, trainer, pl_module):
        epochs_started.append(trainer.current_epoch)
        if len(epochs_started) == stop_at[0]:
            raise Interrupted
        original(self, trainer, pl_module)
    monkeypatch.setattr(gs.Tally, "on_train_epoch_start", counting)
    command = ["torch_pruning_sl", "--reduction", "3", "--budget", "4", "--steps", "20"]
    folder = tmp_path / "outputs" / "torch_pruning_sl_3x_steps20_e4_seed0"
    with pytest.raises(Interrupted):  # in sparsity learning's second epoch
        run.main(command)
    assert run.park() == [tmp_path / "partial" / folder.name]
    shutil.rmtree(folder)
    epochs_started.clear()
    stop_at[0] = 3
    with pytest.raises(Interrupted):  # sparsity learning's second epoch, the fine-tune's first; then out
        run.main(command)
    assert epochs_started == [1, 0, 1]
    run.park()
    shutil.rmtree(folder)
    epochs_started.clear()
    stop_at[0] = 0
    cut_from = []  # the weights the last sitting prunes: sparsity learning's last, restored
    prune = gs.prune_progressively
    monkeypatch.setattr(gs, "prune_progressively", lambda pruner, net, *rest: cut_from.append(
        {k: v.clone() for k, v in net.state_dict().items()}) or prune(pruner, net, *rest))
    run.main(command)
    assert epochs_started == [1]  # the fine-tune's second epoch only
    assert not (tmp_path / "partial" / folder.name).exists()  # released once recorded
    sparse = torch.load(folder / run.SPARSITY_RESUME, weights_only=False)
    assert sparse["epoch"] == 1 and all(torch.equal(v, sparse["state_dict"][f"net.{k}"]) for k, v in cut_from[0].items())
    record = json.loads((tmp_path / "runs" / "torch_pruning_sl_3x_steps20_e4_seed0.json").read_text())
    assert record["resumed"] == {"sparsity": True, "finetune": True}
    assert record["schedule"]["sparsity_epochs"] == record["schedule"]["finetune_epochs"] == 2
    assert len(record["val_curve"]) == 4 and None not in record["val_curve"]
    assert record["images"]["sparsity"] == record["images"]["finetune"] == {"train": 2 * 32, "val": 2 * 16, "test": 0}
    assert record["pruned"]["macs"] <= record["target_macs"] == record["baseline"]["macs"] / 3
    assert record["reached_target"] and 3 <= record["macs_reduction"] < 3.6
    assert 0 < record["steps_taken"] < 20 and record["schedule"]["max_pruning_ratio"] == 0.7


def test_the_harness_modules_import_each_other_without_a_circle():
    import ast

    folder = ROOT / "benchmarks" / "compare"
    local = {p.stem for p in folder.glob("*.py")}
    edges = {}
    for path in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):  # nested imports count too
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
        edges[path.stem] = names & local - {path.stem}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in edges.get(start, ()))
    assert edges["render"] >= {"records"} and "run" not in edges["render"]
    assert not [m for m in edges if reaches(m, m)], edges
