"""StatisticsCollector without Lightning: a plain loop gives exactly what EntropyStatistics
gives under a Trainer; states, errors and the module's docstring example."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from stats_helpers import loader, validate  # noqa: E402

from pl_pruning import ImageClassifier, PlPruningError, build_model  # noqa: E402
from pl_pruning.callbacks import EntropyStatistics  # noqa: E402
from pl_pruning.data import DigitsDataModule  # noqa: E402
from pl_pruning.scoring import get_criterion  # noqa: E402
from pl_pruning.statistics import StatisticsCollector, collector  # noqa: E402
from pl_pruning.statistics.states import ZeroCount  # noqa: E402


def digits():
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    return dm.val_set


def test_plain_loop_matches_the_callback_bit_for_bit():
    torch.manual_seed(0)
    model = ImageClassifier(build_model("small_cnn", in_channels=1, width=0.5)).eval()
    data = loader(digits(), batch_size=64)
    stats = EntropyStatistics(num_bins=10, calibration_batches=2)
    validate(model, data, [stats])

    col = StatisticsCollector(model, num_bins=10, calibration_batches=2, num_classes=10,
                              example_inputs=next(iter(data))[0][:1])
    col.start()
    with torch.no_grad():
        for x, y in data:
            col.begin_batch(y)
            model(x)
            col.end_batch()
    plain = col.finish()
    assert list(plain) == stats.layer_names
    for name, s in stats.statistics().items():
        for field in ("counts", "activation_sum", "zeros", "elements", "low", "high"):
            assert torch.equal(getattr(plain[name], field), getattr(s, field)), (name, field)
    crit = get_criterion("conditional_entropy")
    for name, s in crit(plain).items():
        assert torch.equal(s, stats.scores()[name])
    assert [m for m in model.modules() if m._forward_hooks] == []  # finish removed the hooks


def test_docstring_example_runs():
    result = doctest.testmod(collector, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_prediction_mode_learns_the_classes_from_the_output():
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=7, in_channels=1, width=0.25).eval()
    x = torch.randn(40, 1, 8, 8)
    col = StatisticsCollector(model, condition_on="prediction", example_inputs=x[:1])
    col.start()
    with torch.no_grad(), col.batch():
        predicted = model(x).argmax(1)
    stats = col.finish()
    counts = stats["features.0"].counts[0].sum(0)  # per class
    assert counts.shape == (7,) and torch.equal(counts, torch.bincount(predicted, minlength=7))


def test_bad_input_and_misuse():
    model = build_model("small_cnn", in_channels=1, width=0.25)
    with pytest.raises(PlPruningError, match="num_bins must be an integer >= 2"):
        StatisticsCollector(model, num_bins=1)
    with pytest.raises(PlPruningError, match="'features.99'"):
        StatisticsCollector(model, layers=["features.99"])
    col = StatisticsCollector(model)
    with pytest.raises(PlPruningError, match="example input"):
        col.start()  # nothing to trace the graph with
    with pytest.raises(RuntimeError, match="start"):  # misuse, not bad input
        col.finish()
    col.start(example_inputs=torch.randn(1, 1, 8, 8), num_classes=10)
    with pytest.raises(PlPruningError, match="labels"):
        col.begin_batch()
    with pytest.raises(PlPruningError, match="class label 12"):
        with col.batch(torch.tensor([0, 12])):
            model(torch.randn(2, 1, 8, 8))
    col.stop()
    assert not col.running and [m for m in model.modules() if m._forward_hooks] == []


def test_zero_count_state_is_declared_and_updated_by_its_metric():
    zc = ZeroCount(3)
    assert zc._reductions.keys() == {"zeros", "elements"}
    zc.update(torch.tensor([4.0, 0.0, 1.0]), torch.tensor([4.0, 4.0, 2.0], dtype=torch.float64))
    zc.update(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))
    out = zc.compute()
    assert out["zeros"].tolist() == [1.0, 5.0, 2.0] and out["elements"].tolist() == [6.0, 6.0, 4.0]


def _sorted_by_class_collection(classes: int, batches_per_class: int, calibration_batches: int):
    """A conv whose pooled activation is the class index (plus noise), fed class by class."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, classes))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
    col = StatisticsCollector(net, num_classes=classes, calibration_batches=calibration_batches)
    col.start(example_inputs=torch.zeros(1, 1, 4, 4))
    calibrated_at = None
    for cls in range(classes):
        for b in range(batches_per_class):
            with col.batch(torch.full((8,), cls)):
                net(torch.full((8, 1, 4, 4), float(cls)) + 0.1 * torch.rand(8, 1, 4, 4))
            if calibrated_at is None and col._epoch.calibrated:
                calibrated_at = (cls, b)
    return col.finish(), calibrated_at


def test_calibration_on_a_loader_sorted_by_class_waits_for_every_class():
    stats, calibrated_at = _sorted_by_class_collection(classes=4, batches_per_class=3, calibration_batches=2)
    assert calibrated_at is not None and calibrated_at[0] == 3  # not after class 0's two batches
    assert float(stats.high.min()) > 3.0                        # the range spans the last class
    counts = stats.counts.sum(1)                                # [filters, bins]: the classes spread out
    assert int((counts[0] > 0).sum()) >= 4


def test_calibration_that_never_sees_every_class_stops_at_the_cap_with_a_warning(caplog):
    stats, calibrated_at = _sorted_by_class_collection(classes=2, batches_per_class=40, calibration_batches=2)
    assert calibrated_at == (0, collector.CALIBRATION_CAP * 2 - 1)
    assert "sorted by class" in caplog.text
