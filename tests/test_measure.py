"""pl_pruning.measure: MACs from torch's FLOP counter, latency from torch.utils.benchmark (eager
and ONNX Runtime), per-layer channels, a before/after comparison in one call."""

from __future__ import annotations

import copy
import os
import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

import pl_pruning
from pl_pruning.errors import PlPruningError
from pl_pruning.measure import Cost, channel_counts, compare, count_macs, measure_cost
from pl_pruning.models import build_model
from pl_pruning.pruning.surgery import prune_filters


def test_existing_api_still_works_and_new_fields_default_to_none():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    cost = measure_cost(net, torch.zeros(2, 3, 4, 4), latency=False)
    assert isinstance(cost, Cost)
    assert cost.latency_ms is None and cost.onnx_latency_ms is None and cost.channels is None
    assert set(cost.as_dict()) >= {"macs", "params", "latency_ms", "batch_size", "num_threads"}
    assert Cost(1, 2, None, 1, 1).onnx_latency_ms is None  # positional construction unchanged


def test_macs_params_latency_of_a_known_network():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    cost = measure_cost(net, torch.zeros(4, 3, 4, 4), min_run_time=0.05)
    conv_macs = 8 * 3 * 9 * 4 * 4
    linear_macs = 8 * 4 * 4 * 5
    assert cost.macs == conv_macs + linear_macs  # per sample, not per batch
    assert cost.params == 8 * 3 * 9 + 8 * 16 * 5 + 5
    assert cost.latency_ms is not None and cost.latency_ms > 0
    assert cost.batch_size == 4 and cost.num_threads == 1


def test_measuring_leaves_every_module_in_its_mode():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    net.train()
    net[1].eval()  # a BatchNorm frozen on purpose inside a training network
    stats_before = net[1].running_mean.clone()
    measure_cost(net, torch.randn(2, 1, 5, 5), latency=False)
    count_macs(net, torch.randn(2, 1, 5, 5))
    assert net.training and net[3].training
    assert not net[1].training  # stays frozen
    assert torch.equal(net[1].running_mean, stats_before)  # counted in eval mode: no update


def test_the_package_exports_the_function_and_keeps_the_module():
    assert pl_pruning.measure_cost is measure_cost
    assert pl_pruning.measure.compare is compare  # pl_pruning.measure is the module


def test_channel_counts_and_onnx_latency():
    net = build_model("small_cnn", in_channels=1).eval()
    assert channel_counts(net) == {"features.0": 32, "features.3": 64, "features.7": 64,
                                   "classifier": 10}
    cost = measure_cost(net, torch.zeros(4, 1, 8, 8), min_run_time=0.05, onnx=True, per_layer=True)
    assert cost.channels == channel_counts(net)
    assert cost.latency_ms > 0 and cost.onnx_latency_ms > 0


def test_compare_before_and_after_in_one_call():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    before = build_model("vgg11", width=0.25).eval()
    after = copy.deepcopy(before)
    prune_filters(after, {"features.0": list(range(8)), "features.8": list(range(32))}, x)
    result = compare(before, after, x, onnx=True, min_run_time=0.1, rounds=2)
    assert result.before.macs == count_macs(before, x) and result.after.macs == count_macs(after, x)
    assert result.ratios["macs"] == result.before.macs / result.after.macs > 1.2
    assert result.ratios["params"] == result.before.params / result.after.params > 1.0
    for key in ("latency", "onnx_latency"):
        assert result.ratios[key] is not None and result.ratios[key] > 0
    layers = {name: (b, a) for name, b, a in result.layers}
    assert layers["features.0"] == (16, 8) and layers["features.8"] == (64, 32)
    assert layers["classifier"] == (10, 10)
    table = result.to_markdown()
    assert "| MACs / sample |" in table and "ONNX Runtime" in table and "| features.0 | 16 | 8 |" in table
    assert result.as_dict()["ratios"]["macs"] == result.ratios["macs"]
    no_timing = compare(before, after, x, latency=False)
    assert no_timing.before.latency_ms is None and no_timing.ratios["latency"] is None


def test_compare_needs_a_round():
    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(PlPruningError, match="rounds must be an integer >= 1, got 0"):
        compare(net, net, torch.zeros(1, 1, 4, 4), latency=False, rounds=0)


_FAULTS_PER_FORWARD = """
import resource
import torch
from torch import nn
from pl_pruning.measure import _eager_runner, steady_allocator

torch.set_num_threads(1)
net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
x = torch.zeros(16, 3, 64, 64)  # activations of 8 MiB: above glibc's mmap threshold as this process sets it


def faults_per_forward(run):
    run()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5


def plain():
    with torch.no_grad():
        net.eval()(x)


print(faults_per_forward(plain), faults_per_forward(_eager_runner(net, x)), steady_allocator())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator pinned is glibc's")
def test_eager_timing_runs_without_page_faults_whatever_the_allocator_did_before():
    """A process whose glibc maps every large block afresh (the low threshold a process has
    before it frees a large block) page-faults its activations in on every forward; an eager
    runner pins the thresholds first, and its forwards fault no more."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", _FAULTS_PER_FORWARD], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    unpinned, pinned, applied = float(out[0]), float(out[1]), out[2]
    assert applied == "True"
    assert unpinned > 1000  # 8 MiB activations are 2048 pages each: they fault in on every forward
    assert pinned < unpinned / 20


def test_the_fastest_call_compares_equal_numbers_of_calls():
    """The fastest of more calls is faster by chance: with statistic="min" a runner twice as
    fast as another is called as often as it (per round, as often as the slowest fits in
    min_run_time / rounds), not twice as often; the median keeps torch's blocked timing."""
    import time

    from pl_pruning.measure import time_runners

    calls = {"fast": 0, "slow": 0}

    def runner(name, seconds):
        def run():
            calls[name] += 1
            time.sleep(seconds)
        return run

    ms = time_runners([runner("fast", 0.002), runner("slow", 0.004)], min_run_time=0.06, rounds=3, statistic="min")
    assert calls["fast"] == calls["slow"] >= 4 + 3 * 2  # warm-up and three timed calls, then 2+ a round
    assert 0 < ms[0] < ms[1]
    with pytest.raises(PlPruningError, match="statistic"):
        time_runners([runner("fast", 0.0)], statistic="fastest-call")
