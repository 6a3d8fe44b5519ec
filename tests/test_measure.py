"""measure: per-layer channels, ONNX Runtime latency, before/after comparison in one call."""

from __future__ import annotations

import copy

import torch
from torch import nn

from pl_pruning.measure import Cost, channel_counts, compare, count_macs, measure
from pl_pruning.models import build_model
from pl_pruning.pruning.surgery import prune_filters


def test_existing_api_still_works_and_new_fields_default_to_none():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    cost = measure(net, torch.zeros(2, 3, 4, 4), latency=False)
    assert isinstance(cost, Cost)
    assert cost.latency_ms is None and cost.onnx_latency_ms is None and cost.channels is None
    assert set(cost.as_dict()) >= {"macs", "params", "latency_ms", "batch_size", "num_threads"}
    assert Cost(1, 2, None, 1, 1).onnx_latency_ms is None  # positional construction unchanged


def test_channel_counts_and_onnx_latency():
    net = build_model("small_cnn", in_channels=1).eval()
    assert channel_counts(net) == {"features.0": 32, "features.3": 64, "features.7": 64,
                                   "classifier": 10}
    cost = measure(net, torch.zeros(4, 1, 8, 8), min_run_time=0.05, onnx=True, per_layer=True)
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
