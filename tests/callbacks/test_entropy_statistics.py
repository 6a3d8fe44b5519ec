"""EntropyStatistics: statistics against independent references, bin edges, errors,
surgery, logging, state, and a user's own criterion."""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch_pruning as tp
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).parents[1] / "statistics"))
from stats_helpers import (  # noqa: E402
    HandMadeNet,
    Recorder,
    hand_made_data,
    loader,
    reference_bins,
    reference_conditional_entropy,
    reference_counts,
    reference_entropy,
    reference_mutual_information,
    trainer,
    validate,
)

from pl_pruning import ImageClassifier, PlPruningError, build_model  # noqa: E402
from pl_pruning.callbacks import EntropyStatistics  # noqa: E402
from pl_pruning.data import DigitsDataModule  # noqa: E402
from pl_pruning.scoring.criteria import _REGISTRY as _registry  # noqa: E402
from pl_pruning.scoring.criteria import CRITERIA, Criterion, register_criterion  # noqa: E402


def _unregister(name: str) -> None:
    _registry.pop(name, None)

SMALL_CNN_TAPS = {"net.features.0": "net.features.2", "net.features.3": "net.features.5",
                  "net.features.7": "net.features.9"}


def digits_model(seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier(build_model("small_cnn", in_channels=1, width=0.5))


def hand_made_model(num_classes: int = 4) -> ImageClassifier:
    return ImageClassifier(HandMadeNet(num_classes), num_classes=num_classes)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kwargs, needle", [
    (dict(num_bins=1), "num_bins must be an integer >= 2, got 1"),
    (dict(num_bins=0), "got 0"),
    (dict(num_bins=2.5), "got 2.5"),
    (dict(num_bins=True), "got True"),
    (dict(condition_on="labels"), "'labels'"),
    (dict(max_batches=0), "max_batches"),
    (dict(calibration_batches=0), "calibration_batches"),
    (dict(num_classes=0), "num_classes"),
    (dict(layers="net.conv"), "list of names"),
    (dict(layers=[]), "must not be empty"),
    (dict(save_statistics="yes"), "save_statistics must be true or false"),
    (dict(max_batches=True), "max_batches"),
    (dict(log_criterion="entorpy"), "'entorpy'"),
    (dict(cpu_threads=0), "cpu_threads"),
])
def test_constructor_rejects_bad_input(kwargs, needle):
    with pytest.raises(PlPruningError) as err:
        EntropyStatistics(**kwargs)
    assert needle in str(err.value)


def test_condition_on_error_lists_choices():
    with pytest.raises(PlPruningError) as err:
        EntropyStatistics(condition_on="labels")
    assert "label" in str(err.value) and "prediction" in str(err.value)


class MLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)

    def validation_step(self, batch, batch_idx):
        return None


def test_model_without_conv_is_rejected():
    data = loader(TensorDataset(torch.randn(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(PlPruningError) as err:
        validate(MLP(), data, [EntropyStatistics()])
    assert "MLP has no nn.Conv2d" in str(err.value) and "Linear" in str(err.value)


def test_unknown_layer_name_is_rejected():
    data = loader(hand_made_data())
    with pytest.raises(PlPruningError) as err:
        validate(hand_made_model(), data, [EntropyStatistics(layers=["net.fc"])])
    assert "'net.fc'" in str(err.value) and "net.conv" in str(err.value)


class Unlabelled(ImageClassifier):
    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self(x)


def test_batches_without_labels_are_rejected_for_condition_on_label():
    ds = hand_made_data()
    data = loader(TensorDataset(ds.tensors[0]))
    with pytest.raises(PlPruningError) as err:
        validate(Unlabelled(HandMadeNet(4), num_classes=4), data, [EntropyStatistics()])
    msg = str(err.value)
    assert "condition_on='label'" in msg and "Tensor(32, 3, 4, 4)" in msg
    assert "condition_on='prediction'" in msg
    # float "labels" are not class labels either
    data = loader(TensorDataset(ds.tensors[0], ds.tensors[1].float()))
    with pytest.raises(PlPruningError, match="integer class labels"):
        validate(hand_made_model(), data, [EntropyStatistics()])


def test_prediction_mode_works_on_unlabelled_data():
    ds = hand_made_data()
    model = Unlabelled(HandMadeNet(4), num_classes=4)
    stats = EntropyStatistics(condition_on="prediction")
    rec = Recorder({"net.conv": "net.relu"})
    validate(model, loader(TensorDataset(ds.tensors[0])), [stats, rec])
    predicted = np.concatenate(rec.outputs).argmax(1)
    counts = stats.statistics()["net.conv"].counts
    np.testing.assert_array_equal(counts[0].sum(0).numpy(), np.bincount(predicted, minlength=4))


def test_label_outside_num_classes_is_rejected():
    ds = hand_made_data(num_classes=4)
    with pytest.raises(PlPruningError) as err:
        validate(hand_made_model(4), loader(ds), [EntropyStatistics(num_classes=3)])
    assert "class label 3" in str(err.value) and "0..2" in str(err.value)


def test_scores_before_statistics_are_an_error():
    stats = EntropyStatistics()
    with pytest.raises(PlPruningError, match="no statistics"):
        stats.scores()
    with pytest.raises(PlPruningError, match="get_criterion"):
        stats.scores("l1")


# ------------------------------------------------------------------ hand-made activations


def test_hand_made_filters():
    """dead filter: lowest H(A) and H(A|Y); class-determined filter: highest I(A;Y) = H(Y)."""
    stats = EntropyStatistics(num_bins=16)
    validate(hand_made_model(), loader(hand_made_data()), [stats])
    h = stats.scores("entropy", normalize="none")["net.conv"]
    hc = stats.scores("conditional_entropy", normalize="none")["net.conv"]
    mi = stats.scores("mutual_information", normalize="none")["net.conv"]
    dead, determined, noise, mixed = 2, 0, 1, 3
    assert h[dead] == 0 and hc[dead] == 0
    assert h.argmin() == dead and (h[dead] < h[[determined, noise, mixed]]).all()
    assert hc[dead] == hc.min() and (hc[dead] < hc[[noise, mixed]]).all()
    assert mi.argmax() == determined
    assert mi[determined].item() == pytest.approx(np.log(4), abs=1e-6)  # balanced classes
    assert hc[determined].item() == pytest.approx(0.0, abs=1e-7)
    assert mi[noise] < 0.1 * mi[determined]
    apoz = stats.scores("apoz", normalize="none")["net.conv"]
    assert apoz[dead] == 0 and apoz[determined] == 1
    mean = stats.mean_activation()["net.conv"]
    assert mean[determined].item() == pytest.approx(2.5)  # classes 1..4, balanced
    assert mean[dead] == 0


def test_dead_filter_in_a_real_network_scores_lowest():
    model = digits_model()
    bn = model.net.features[4]
    with torch.no_grad():  # filter 5 of the second conv: BN output 0 -> ReLU 0, always
        bn.weight[5], bn.bias[5] = 0.0, 0.0
    stats = EntropyStatistics()
    validate(model, DigitsDataModule(), [stats])
    for crit in ("entropy", "conditional_entropy"):
        s = stats.scores(crit, normalize="none")["net.features.3"]
        assert s[5] == 0
        others = torch.cat([s[:5], s[6:]])
        assert (others > 0).all(), crit


# ------------------------------------------------------------------ real network vs references


def calibration_batches_used(labels, calib, classes):
    counts, samples = np.zeros(classes), 0
    for b, y in enumerate(labels, start=1):
        counts += np.bincount(np.asarray(y), minlength=classes)
        samples += len(y)
        if b >= calib and (counts >= max(1.0, samples / classes / 2)).all():
            return b
    return len(labels)


def test_real_network_statistics_match_independent_references():
    model = digits_model()
    num_bins, calib = 10, 2
    stats = EntropyStatistics(num_bins=num_bins, calibration_batches=calib)
    rec = Recorder(SMALL_CNN_TAPS)
    dm = DigitsDataModule(batch_size=64)
    validate(model, dm, [stats, rec])
    assert {k: t.module for k, t in stats.taps.items()} == SMALL_CNN_TAPS
    y = rec.all_labels()
    assert len(rec.labels) > calib  # counted batches after the calibration too
    result = stats.statistics()
    for layer in SMALL_CNN_TAPS:
        a = rec.values(layer)
        s = result[layer]
        # bin edges: min / max over the first `calib` batches, and more until every class
        # has half its balanced share of the batches so far
        first = np.concatenate(rec.batches(layer)[:calibration_batches_used(rec.labels, calib, 10)])
        np.testing.assert_array_equal(s.low.numpy(), first.min(0))
        np.testing.assert_array_equal(s.high.numpy(), first.max(0))
        bins = reference_bins(a, s.low.numpy(), s.high.numpy(), num_bins)
        np.testing.assert_array_equal(s.counts.numpy(), reference_counts(bins, y, num_bins, 10))
        np.testing.assert_allclose(s.mean_activation.numpy(), a.mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(s.zero_fraction.numpy(), rec.zeros[layer] / rec.elements[layer],
                                   rtol=1e-6)
        h = stats.scores("entropy", normalize="none")[layer].numpy()
        hc = stats.scores("conditional_entropy", normalize="none")[layer].numpy()
        mi = stats.scores("mutual_information", normalize="none")[layer].numpy()
        for f in range(a.shape[1]):
            assert h[f] == pytest.approx(reference_entropy(bins[:, f]), rel=1e-5, abs=1e-6)
            assert hc[f] == pytest.approx(reference_conditional_entropy(bins[:, f], y), rel=1e-5,
                                          abs=1e-6)
            assert mi[f] == pytest.approx(reference_mutual_information(bins[:, f], y), rel=1e-4,
                                          abs=1e-6)
        assert h.std() > 0 and mi.max() > 0  # not a degenerate case


def test_result_does_not_depend_on_batch_order():
    """With the whole epoch as calibration set nothing depends on order; with a smaller
    one, only the calibration batches matter."""
    ds = DigitsDataModule()
    ds.setup()
    x, y = ds.val_set.tensors

    def run(perm, calib):
        stats = EntropyStatistics(num_bins=12, calibration_batches=calib)
        validate(digits_model(), loader(TensorDataset(x[perm], y[perm]), batch_size=30), [stats])
        return stats.statistics()

    n = len(y)
    shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    a, b = run(torch.arange(n), 100), run(shuffled, 100)
    for layer in a:
        assert torch.equal(a[layer].counts, b[layer].counts)
        torch.testing.assert_close(a[layer].activation_sum, b[layer].activation_sum)
    # keep the calibration set (the first 2 batches, and more until every class has its
    # half share), permute the rest
    kept = 30 * calibration_batches_used([y[i:i + 30].numpy() for i in range(0, n, 30)], 2, 10)
    assert kept < n
    rest = kept + torch.randperm(n - kept, generator=torch.Generator().manual_seed(4))
    c, d = run(torch.arange(n), 2), run(torch.cat([torch.arange(kept), rest]), 2)
    for layer in c:
        assert torch.equal(c[layer].counts, d[layer].counts)


def test_max_batches_and_sanity_check_are_respected():
    dm = DigitsDataModule(batch_size=32)
    stats = EntropyStatistics(max_batches=3)
    validate(digits_model(), dm, [stats])
    assert stats.statistics()["net.features.0"].counts[0].sum() == 3 * 32
    # fit: the sanity check is not counted, the real validation epoch is
    stats = EntropyStatistics()
    t = trainer([stats], max_epochs=1, limit_train_batches=1, num_sanity_val_steps=2)
    dm = DigitsDataModule(batch_size=32)
    t.fit(digits_model(), dm)
    assert stats.statistics()["net.features.0"].counts[0].sum() == len(dm.val_set)


def test_collector_costs_nothing_outside_validation():
    stats = EntropyStatistics()
    model = digits_model()
    threads = torch.get_num_threads()
    validate(model, DigitsDataModule(), [stats])
    hooks = [m for m in model.modules() if m._forward_hooks]
    assert hooks == []
    assert torch.get_num_threads() == threads  # cpu_threads is restored after each use


def test_unknown_criterion_or_normalize_in_scores():
    stats = EntropyStatistics()
    validate(digits_model(), DigitsDataModule(), [stats])
    with pytest.raises(PlPruningError) as err:
        stats.scores("entorpy")
    assert "'entorpy'" in str(err.value) and "conditional_entropy" in str(err.value)
    with pytest.raises(PlPruningError, match="'global'"):
        stats.scores(normalize="global")
    with pytest.raises(PlPruningError, match="'net.fc'"):
        stats.scores(layers=["net.fc"])


def test_shared_activation_values_match_manual_computation():
    model = ImageClassifier(build_model("torchvision.resnet18", num_classes=4), num_classes=4).eval()
    layer = "net.layer1.0.conv1"
    stats = EntropyStatistics(layers=[layer], num_bins=8)
    rec = Recorder({layer: "net.layer1.0.bn1"}, transform={layer: torch.relu})
    data = TensorDataset(torch.randn(16, 3, 32, 32), torch.arange(16) % 4)
    validate(model, loader(data, batch_size=8), [stats, rec])
    np.testing.assert_allclose(stats.mean_activation()[layer].numpy(), rec.values(layer).mean(0),
                               rtol=1e-5, atol=1e-6)
    assert (rec.values(layer) >= 0).all()


# ------------------------------------------------------------------ surgery


def test_invalidate_and_reallocation_after_surgery():
    model = digits_model()
    stats = EntropyStatistics()
    dm = DigitsDataModule()
    validate(model, dm, [stats])
    assert stats.has_statistics
    conv = model.net.features[3]
    dg = tp.DependencyGraph().build_dependency(model.net, example_inputs=torch.randn(1, 1, 8, 8))
    dg.get_pruning_group(conv, tp.prune_conv_out_channels, [0, 1, 2]).prune()
    assert not stats.has_statistics  # channel counts changed
    with pytest.raises(PlPruningError, match="another architecture"):
        stats.scores()
    stats.invalidate()
    with pytest.raises(PlPruningError, match="no statistics"):
        stats.mean_activation()
    assert stats.scores("l1")["net.features.3"].shape == (conv.out_channels,)  # data-free
    validate(model, dm, [stats])
    assert stats.has_statistics
    scores = stats.scores()
    assert scores["net.features.3"].shape == (conv.out_channels,) == (29,)
    assert scores["net.features.7"].shape == (32,)


# ------------------------------------------------------------------ visibility and state


def test_logging_csv_and_tensorboard(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stats = EntropyStatistics(csv_path=tmp_path / "filter_stats.csv")
    tb = TensorBoardLogger(tmp_path, name="tb")
    t = trainer([stats], logger=[CSVLogger(tmp_path, name="csv"), tb])
    t.validate(digits_model(), DigitsDataModule(), verbose=False)
    key = "entropy_stats/net.features.3/conditional_entropy_mean"
    scores = stats.scores(normalize="none")["net.features.3"]
    assert t.callback_metrics[key].item() == pytest.approx(scores.mean().item(), rel=1e-6)
    assert t.callback_metrics[key.replace("_mean", "_max")].item() == pytest.approx(scores.max().item())
    tb.experiment.flush()
    events = EventAccumulator(str(tb.log_dir), size_guidance={"histograms": 0}).Reload()
    assert "entropy_stats/net.features.0/conditional_entropy" in events.Tags()["histograms"]
    rows = list(csv.DictReader(open(tmp_path / "filter_stats.csv")))
    assert list(rows[0]) == ["layer", "filter", "entropy", "conditional_entropy", "mutual_information",
                             "normalized_conditional_entropy", "apoz", "mean_activation", "l1"]
    assert len(rows) == 16 + 32 + 32
    row = next(r for r in rows if r["layer"] == "net.features.3" and r["filter"] == "7")
    assert float(row["conditional_entropy"]) == pytest.approx(scores[7].item(), rel=1e-6)
    u = stats.scores("normalized_conditional_entropy", normalize="none")["net.features.3"][7].item()
    assert float(row["normalized_conditional_entropy"]) == pytest.approx(u, rel=1e-6)
    l1 = stats.scores("l1", normalize="none")["net.features.3"][7].item()
    assert float(row["l1"]) == pytest.approx(l1, rel=1e-6)


def test_no_logger_logs_nothing():
    stats = EntropyStatistics()
    t = trainer([stats])
    t.validate(digits_model(), DigitsDataModule(), verbose=False)
    assert not any(k.startswith("entropy_stats") for k in t.callback_metrics)


def test_state_dict_round_trip(tmp_path):
    model = digits_model()
    stats = EntropyStatistics()
    validate(model, DigitsDataModule(), [stats])
    path = tmp_path / "state.pt"
    torch.save(stats.state_dict(), path)
    fresh = EntropyStatistics()
    fresh.load_state_dict(torch.load(path, weights_only=False))
    fresh._prepare(model)
    assert fresh.has_statistics
    for name, s in stats.scores().items():
        assert torch.equal(s, fresh.scores()[name])
    assert EntropyStatistics(save_statistics=False).state_dict()["result"] is None


def test_data_free_scores_after_setup_only():
    model = digits_model()
    stats = EntropyStatistics()
    stats.setup(None, model, "validate")
    l1 = stats.scores("l1", normalize="none")
    torch.testing.assert_close(l1["net.features.0"],
                               model.net.features[0].weight.detach().abs().sum((1, 2, 3)))
    with pytest.raises(PlPruningError, match="example input"):  # none yet to trace the graph
        stats.scores("l1", normalize="cost-aware")


def test_cost_aware_uses_the_graphs_macs_per_filter():
    """The model has no example_input_array: the graph is traced with the first batch."""
    from pl_pruning.structure.graph import NetworkGraph

    stats = EntropyStatistics()
    model = digits_model()
    assert getattr(model, "example_input_array", None) is None
    validate(model, DigitsDataModule(), [stats])
    macs = NetworkGraph.of(model, torch.zeros(1, 1, 8, 8)).macs_per_filter
    # small_cnn width 0.5 on 8x8 digits: conv0 1->16 at 8x8, conv3 16->32 at 8x8, pool,
    # conv7 32->32 at 4x4, global pool, Linear 32->10; a filter costs its kernel plus one
    # input channel of each consumer (conv7's is the Linear head: 10 MACs)
    assert macs["net.features.0"] == 1 * 9 * 64 + 32 * 9 * 64
    assert macs["net.features.3"] == 16 * 9 * 64 + 32 * 9 * 16
    assert macs["net.features.7"] == 32 * 9 * 16 + 10
    per = stats.scores(normalize="per-layer")
    cost = stats.scores(normalize="cost-aware")
    mean_cost = sum(macs[n] for n in per) / len(per)
    for name in per:
        torch.testing.assert_close(cost[name], per[name] * (mean_cost / macs[name]))
        assert torch.equal(per[name].argsort(stable=True), cost[name].argsort(stable=True))


class PeakMass(Criterion):
    """A user's criterion: the share of samples in a filter's most populated bin."""

    def layer_scores(self, name, stats, module):
        p = stats.counts.sum(-1).double()
        return (p.max(-1).values / p.sum(-1)).float()


def test_a_registered_custom_criterion_scores_after_a_real_validation():
    register_criterion("peak_mass", PeakMass)
    try:
        assert PeakMass.name == "peak_mass" and "peak_mass" in CRITERIA
        stats = EntropyStatistics(num_bins=8, log_criterion="peak_mass")
        t = trainer([stats], logger=[CSVLogger(tempfile.mkdtemp(), name="csv")])
        t.validate(digits_model(), DigitsDataModule(), verbose=False)
        scores = stats.scores("peak_mass", normalize="none")
        for name, s in stats.statistics().items():
            p = s.counts.sum(-1).double()
            expected = (p.max(-1).values / p.sum(-1)).float()
            assert torch.equal(scores[name], expected) and 1 / 8 <= expected.min() <= expected.max() <= 1
        assert scores["net.features.3"].std() > 0  # the layer's filters differ
        key = "entropy_stats/net.features.3/peak_mass_mean"
        assert t.callback_metrics[key].item() == pytest.approx(scores["net.features.3"].mean().item())
        per_layer = stats.scores("peak_mass")  # the one normalisation applies to it too
        torch.testing.assert_close(per_layer["net.features.3"],
                                   scores["net.features.3"] / scores["net.features.3"].mean())
    finally:
        _unregister("peak_mass")
