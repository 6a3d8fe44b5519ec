"""The planner: group scores, global and layer-wise plans, layer orders as a registry."""

from __future__ import annotations

import pytest
import torch

from pl_pruning.errors import PlPruningError
from pl_pruning.models import build_model
from pl_pruning.pruning import planner
from pl_pruning.pruning.surgery import prune_filters
from pl_pruning.scoring import get_criterion
from pl_pruning.statistics import CollectedStatistics
from pl_pruning.structure.graph import NetworkGraph
from pl_pruning.structure.groups import PruningGroup


@pytest.fixture(scope="module")
def resnet_graph():
    net = build_model("resnet20")
    return net, NetworkGraph.of(net, torch.zeros(1, 3, 32, 32))


def test_group_score_is_the_mean_of_its_convs_and_unscored_filters_go_last():
    group = PruningGroup("a", ("a", "b"), 3, ("a", "bn_a", "b", "bn_b"))
    lone = PruningGroup("c", ("c",), 2, ("c",))
    scores = {"a": torch.tensor([1.0, 2.0, float("nan")]), "b": torch.tensor([3.0, 4.0, float("nan")]),
              "c": torch.tensor([1.0])}  # "c" scored at another size: stale, left out
    (g, s), = planner.score_groups([group, lone], scores)
    assert g is group
    assert s[:2].tolist() == [2.0, 3.0] and s[2] == float("inf")


def test_global_plan_takes_the_lowest_normalised_filters(resnet_graph):
    _, graph = resnet_graph
    a, b = graph.groups[:2]
    scored = [(a, torch.arange(a.channels, dtype=torch.float) + 1),   # per-layer: 1/mean ... n/mean
              (b, torch.full((b.channels,), 5.0))]                   # all equal: 1.0 after per-layer
    plan = planner.global_plan(scored, 0.25, graph, normalize="per-layer")
    k = int(0.25 * (a.channels + b.channels))
    below_mean = sum(1 for i in range(a.channels) if (i + 1) / ((a.channels + 1) / 2) < 1.0)
    assert sum(len(v) for v in plan.values()) == k
    assert plan[a.root][:below_mean] == list(range(below_mean))  # a's low filters first
    raw = planner.global_plan(scored, 0.25, graph, normalize="none")
    # raw: a's 1..4 beat b's 5.0; ties (a's 5.0) go to the earlier group, then the lower index
    assert (a.root, b.root, k) == ("conv1", "layer1.0.conv1", 8)
    assert raw == {a.root: [0, 1, 2, 3, 4], b.root: [0, 1, 2]}
    # a group never falls below min_channels
    capped = planner.global_plan(scored, 0.9, graph, normalize="none", min_channels=3)
    assert all(len(idx) <= g.channels - 3 for g, _ in scored for r, idx in capped.items() if r == g.root)


def test_cost_aware_ranks_by_score_per_mac_saved(resnet_graph):
    _, graph = resnet_graph
    groups = {g.root: g for g in graph.groups}
    cheap, dear = groups["layer1.0.conv1"], groups["layer3.0.conv1"]
    costs = planner.group_costs([(cheap, None), (dear, None)], graph)
    assert costs == [graph.macs_per_filter["layer1.0.conv1"], graph.macs_per_filter["layer3.0.conv1"]]
    scored = [(cheap, torch.ones(cheap.channels)), (dear, torch.ones(dear.channels))]
    normed = planner.normalised(scored, "cost-aware", graph)
    mean_cost = sum(costs) / 2
    assert torch.allclose(normed[0], torch.full_like(normed[0], mean_cost / costs[0]))
    # equal scores: the filters whose removal saves more MACs go first
    expensive_first = costs[1] > costs[0]
    plan = planner.global_plan(scored, 0.1, graph, normalize="cost-aware")
    assert list(plan) == [dear.root if expensive_first else cheap.root]


def test_layer_plan_and_rounding(resnet_graph):
    _, graph = resnet_graph
    g = graph.groups[1]
    scored = [(g, torch.tensor([5.0, 1.0, 3.0, 2.0] + [9.0] * (g.channels - 4)))]
    assert planner.layer_plan(scored, g.root, 0.5, min_channels=1)[g.root][:3] == [1, 3, 2]
    assert planner.layer_plan(scored, g.root, 0.01) == {}      # less than one filter
    assert planner.layer_plan(scored, "nope", 0.5) == {}
    plan = {g.root: [1, 3, 2]}
    assert planner.rounded(plan, scored, None) == plan
    left = g.channels - 3  # rounded up to a multiple of 4: fewer removals, or none
    keep = g.channels - (-(-left // 4) * 4)
    assert planner.rounded(plan, scored, 4) == ({g.root: [1, 3, 2][:keep]} if keep else {})
    assert g.channels == 16 and planner.rounded(plan, scored, 2) == {g.root: [1, 3]}  # 14 left
    assert planner.rounded(plan, scored, 8) == {}  # 13 left rounds up to 16: nothing to cut


def test_a_rounded_layer_step_leaves_the_nearest_multiple(resnet_graph):
    """A quarter of a 32-wide group at round_to=16 removes 16 (half a multiple: the narrower
    width); rounded down it removed nothing and the group left the queue uncut."""
    _, graph = resnet_graph
    wide, widest, narrow = (next(g for g in graph.groups if g.channels == c) for c in (32, 64, 16))
    scored = [(g, torch.arange(g.channels, dtype=torch.float32).flip(0)) for g in (wide, widest, narrow)]

    def removed(group, step, **kw):
        return len(planner.layer_plan(scored, group.root, step, round_to=16, **kw).get(group.root, []))

    assert planner.rounded(planner.layer_plan(scored, wide.root, 0.25), scored, 16) == {}  # rounded down
    plan = planner.layer_plan(scored, wide.root, 0.25, round_to=16)
    assert plan == {wide.root: list(range(31, 15, -1))} and planner.rounded(plan, scored, 16) == plan
    assert removed(wide, 0.125) == 0                                  # 28 left: nearest 32
    assert [removed(widest, s) for s in (0.25, 0.125, 0.0625, 0.5)] == [16, 16, 0, 32]  # 48, 56, 60, 32 asked
    assert removed(narrow, 0.5) == 8                                  # at or below 16 every width is allowed
    assert removed(widest, 0.9) == 57 and removed(widest, 0.9, min_channels=17) == 32  # 7 left; 17 -> 32
    assert removed(wide, 0.6) == 19 and removed(wide, 0.45) == 16     # 12.8 -> 13 (free); 17.6 -> 16
    # a cap (what a target still allows) keeps whole multiples, or one when fewer are allowed
    assert removed(widest, 0.5, max_filters=20) == 16 and removed(widest, 0.5, max_filters=3) == 16
    assert removed(widest, 0.5, max_filters=40) == 32


def test_a_rounded_global_plan_ranks_whole_multiples(resnet_graph):
    """With round_to the global ranking takes blocks that keep each width one it allows: the
    lowest single filters here sit in a 32-wide group, which a ranking of filters would cut
    by 9 and rounding to 16 would empty; its blocks take it to 16 at once. At or below the
    multiple the blocks are single filters."""
    _, graph = resnet_graph
    narrow = next(g for g in graph.groups if g.channels == 32)
    wide = next(g for g in graph.groups if g.channels == 64)
    scored = [(narrow, torch.arange(32, dtype=torch.float32)),             # the lowest scores
              (wide, torch.arange(64, dtype=torch.float32).flip(0) + 100)]  # its lowest: 63, 62, ...
    filters = planner.global_plan(scored, 0.1, graph, normalize="none")
    assert filters == {narrow.root: list(range(9))} and planner.rounded(filters, scored, 16) == {}
    blocks = planner.global_plan(scored, 0.1, graph, normalize="none", round_to=16)
    assert blocks == {narrow.root: list(range(16))}  # one block: 32 -> 16 wide
    assert planner.rounded(blocks, scored, 16) == blocks
    # at 32 the 32-wide group is free; a group keeps min_channels (16 < 17: the wide one's block goes)
    assert planner.global_plan(scored, 0.1, graph, normalize="none", round_to=32) == filters
    assert planner.global_plan(scored, 0.1, graph, normalize="none", round_to=16, min_channels=17) == \
        {wide.root: list(range(63, 47, -1))}
    # a width off the multiple loses its remainder first, then multiples, then single filters
    odd = torch.tensor([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    assert [b[2] for b in planner._blocks("x", odd, 4, 1)] == [[9, 1], [5, 3, 7, 0], [8], [4], [6]]  # 10, 8, 4, 3, 2, 1
    assert [b[2] for b in planner._blocks("x", odd, 4, 5)] == [[9, 1]]  # 8 -> 4 would pass min_channels


def test_built_in_layer_orders(resnet_graph):
    _, graph = resnet_graph
    scored = [(g, torch.full((g.channels,), float(i))) for i, g in enumerate(graph.groups)]
    roots = [g.root for g in graph.groups]
    assert planner.order_layers("front_to_back", scored, graph) == roots
    assert planner.order_layers("back_to_front", scored, graph) == roots[::-1]
    assert planner.order_layers("by_score", scored[::-1], graph) == roots
    by_macs = planner.order_layers("by_macs", scored, graph)
    cost = {g.root: g.channels * sum(graph.macs_per_filter[c] for c in g.convs) for g in graph.groups}
    assert [cost[r] for r in by_macs] == sorted(cost.values(), reverse=True)


def test_register_a_layer_order(resnet_graph):
    _, graph = resnet_graph
    scored = [(g, torch.zeros(g.channels)) for g in graph.groups]

    def widest_then_name(scored, graph):
        return sorted((g.root for g, _ in scored), key=lambda r: (-graph.channels[r], r))[:2]

    try:
        planner.register_layer_order("widest_then_name", widest_then_name)
        order = planner.order_layers("widest_then_name", scored, graph)
        assert len(order) == 2 and all(graph.channels[r] == max(graph.channels[g.root] for g, _ in scored)
                                       for r in order)
        planner.register_layer_order("bad", lambda scored, graph: ["not.a.group"])
        with pytest.raises(PlPruningError, match="layer order 'bad' returned 'not.a.group'"):
            planner.order_layers("bad", scored, graph)
    finally:
        planner.LAYER_ORDERS.pop("widest_then_name", None)
        planner.LAYER_ORDERS.pop("bad", None)
    with pytest.raises(PlPruningError, match="built-in"):
        planner.register_layer_order("by_score", widest_then_name)
    with pytest.raises(PlPruningError, match="callable"):
        planner.register_layer_order("x", "not a function")


def test_filter_scores_keep_original_indices():
    scores = planner.FilterScores()
    scores.start({"conv": 4})
    scores.update({"l1": {"conv": torch.tensor([4.0, 3.0, 2.0, 1.0])}})
    scores.remove({"conv": [1, 2]})
    assert scores.ids["conv"].tolist() == [0, 3]
    assert scores.current("l1")["conv"].tolist() == [4.0, 1.0]
    scores.update({"l1": {"conv": torch.tensor([7.0, 8.0]), "gone": torch.ones(3)}})
    assert scores.cache["l1"]["conv"].tolist() == [7.0, 3.0, 2.0, 8.0]  # removed filters keep theirs
    scores.update({"l1": {"conv": torch.ones(5)}})  # another size: stale, ignored
    assert scores.current("l1")["conv"].tolist() == [7.0, 8.0]


def _collected(net, seed=0):
    """Statistics of every conv of ``net`` at its current channel counts (random histograms)."""
    convs = [(n, m.out_channels) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    total = sum(c for _, c in convs)
    gen = torch.Generator().manual_seed(seed)
    offsets = [0]
    for _, c in convs:
        offsets.append(offsets[-1] + c)
    return CollectedStatistics(
        names=[n for n, _ in convs], channels=[c for _, c in convs], offsets=offsets,
        counts=torch.randint(0, 5, (total, 4, 3), generator=gen), activation_sum=torch.rand(total, generator=gen,
                                                                                            dtype=torch.float64),
        zeros=torch.zeros(total, dtype=torch.float64), elements=torch.ones(total, dtype=torch.float64),
        low=torch.zeros(total), high=torch.ones(total))


def test_fresh_scores_read_collected_statistics_only_where_they_fit_the_network():
    net = build_model("small_cnn", num_classes=10, in_channels=1)
    stats = _collected(net)
    fresh = planner.fresh_scores(["entropy", "l1"], stats, net)
    assert set(fresh) == {"entropy", "l1", planner.MEAN_KEY}
    for name in stats:
        assert torch.equal(fresh["entropy"][name], get_criterion("entropy")(stats, [name], "none")[name])
        assert torch.equal(fresh[planner.MEAN_KEY][name], stats[name].mean_activation)
    first = stats.names[0]
    prune_filters(net, {first: [0]}, torch.zeros(1, 1, 8, 8), compensate=False)
    stale = planner.fresh_scores(["entropy", "l1"], stats, net)   # counted on the network before the cut
    assert set(stale) == {"l1"} and stale["l1"][first].numel() == stats.channels[0] - 1
    assert set(planner.fresh_scores(["entropy"], None, net)) == set()
