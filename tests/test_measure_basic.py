"""pl_pruning.measure: counts from torch's FLOP counter, latency from torch.utils.benchmark."""

import torch
from torch import nn

from pl_pruning import measure


def test_macs_params_latency_of_a_known_network():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    cost = measure(net, torch.zeros(4, 3, 4, 4), min_run_time=0.05)
    conv_macs = 8 * 3 * 9 * 4 * 4
    linear_macs = 8 * 4 * 4 * 5
    assert cost.macs == conv_macs + linear_macs  # per sample, not per batch
    assert cost.params == 8 * 3 * 9 + 8 * 16 * 5 + 5
    assert cost.latency_ms is not None and cost.latency_ms > 0
    assert cost.batch_size == 4 and cost.num_threads == 1


def test_measure_leaves_the_model_in_its_mode():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    net.train()
    measure(net, torch.zeros(2, 1, 5, 5), latency=False)
    assert net.training
