"""The cheap screen's parts: BatchNorm re-estimation, accuracy, and a screened cut that
leaves the network, its scores and the run's statistics untouched."""

import copy

import torch
from torch import nn

from pl_pruning.models import build_model
from pl_pruning.pruning.planner import FilterScores
from pl_pruning.pruning.pruner import Pruner
from pl_pruning.pruning.screen import Screen, accuracy, reestimate_batchnorm


def batches(n=3, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 8, 8, generator=gen) * 2 + 1, torch.randint(0, 10, (size,), generator=gen))
            for _ in range(n)]


def test_batchnorm_statistics_become_the_average_over_the_batches():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3))
    net.eval()
    data = batches()
    reestimate_batchnorm(net, data)
    bn = net[1]
    outs = [net[0](x) for x, _ in data]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-5)
    assert bn.momentum == 0.3 and not net.training and not bn.training  # settings and modes back


def test_accuracy_counts_correct_predictions():
    class Const(nn.Module):
        def forward(self, x):
            return torch.eye(10)[torch.zeros(len(x), dtype=torch.long)]  # always class 0

    data = [(torch.zeros(4, 1), torch.tensor([0, 0, 1, 2]))]
    assert accuracy(Const(), data) == 0.5


def test_a_screened_cut_leaves_the_network_and_its_scores_alone():
    torch.manual_seed(0)
    net = build_model("small_cnn", num_classes=10, in_channels=1)
    net.example_input_array = torch.zeros(1, 1, 8, 8)
    pruner = Pruner()
    scores = FilterScores()
    pruner.refresh(scores, net, ["l1"])
    before, ids = copy.deepcopy(net.state_dict()), copy.deepcopy(scores.ids)
    screen = Screen(pruner, batches(2, seed=1), batches(2, seed=2))
    graph, scored = pruner.scored(net, scores.current("l1"))
    root = graph.groups[0].root
    lost_small = screen.drop(net, {root: [0]}, scores)
    lost_all = screen.drop(net, {g.root: list(range(g.channels - 1)) for g in graph.groups}, scores)
    assert -1.0 <= lost_small <= 1.0 and -1.0 <= lost_all <= 1.0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert scores.ids.keys() == ids.keys() and all(torch.equal(scores.ids[k], v) for k, v in ids.items())
