"""pl_pruning.checkpoint: one reader for every checkpoint file, and pruned networks loaded
back into their original, unpruned classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from pl_pruning.checkpoint import (
    load_pruned,
    load_weights,
    read_checkpoint,
    read_state_dict,
    restore_pruned_shapes,
    save_pruned,
)
from pl_pruning.data import DigitsDataModule
from pl_pruning.errors import PlPruningError
from pl_pruning.measure import channel_counts
from pl_pruning.models import build_model, model_spec
from pl_pruning.module import ImageClassifier
from pl_pruning.pruning.surgery import prune_filters, pruning_groups

SCRIPT = Path(__file__).parent / "scripts" / "load_pruned_checkpoint.py"


def batch(n: int = 2, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def prune_30_percent(model: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    plan = {g.root: torch.randperm(g.channels, generator=gen)[: int(0.3 * g.channels)].tolist()
            for g in pruning_groups(model, x) if int(0.3 * g.channels)}
    prune_filters(model, plan, x)


@pytest.mark.parametrize("name", ["resnet20", "torchvision.mobilenet_v2"])
def test_restore_shapes_then_load_gives_identical_outputs(name):
    torch.manual_seed(0)
    x = batch()
    pruned = build_model(name).eval()
    prune_30_percent(pruned, x)
    fresh = build_model(name).eval()
    resized = restore_pruned_shapes(fresh, pruned.state_dict())
    assert resized
    fresh.load_state_dict(pruned.state_dict())  # strict: every key and shape fits
    assert channel_counts(fresh) == channel_counts(pruned)
    for (n, a), (_, b) in zip(fresh.named_modules(), pruned.named_modules(), strict=True):
        if isinstance(a, nn.Conv2d):  # depthwise convolutions stay depthwise
            assert (a.in_channels, a.out_channels, a.groups) == (b.in_channels, b.out_channels,
                                                                 b.groups), n
    with torch.no_grad():
        assert torch.equal(fresh(x), pruned(x))
    assert restore_pruned_shapes(fresh, pruned.state_dict()) == []  # nothing left to do


def test_restore_creates_a_bias_made_by_compensation_and_checks_dims():
    net = build_model("vgg11", width=0.25).eval()
    net.features[4].bias = nn.Parameter(torch.randn(32))  # as bias compensation may create
    fresh = build_model("vgg11", width=0.25)
    assert fresh.features[4].bias is None
    restore_pruned_shapes(fresh, net.state_dict())
    fresh.load_state_dict(net.state_dict())
    assert torch.equal(fresh.features[4].bias, net.features[4].bias)

    bad = dict(net.state_dict())
    bad["features.0.weight"] = torch.zeros(16, 3, 3)
    before = fresh.features[0].weight
    with pytest.raises(PlPruningError, match=r"'features.0.weight'.*\(16, 3, 3\)"):
        restore_pruned_shapes(fresh, bad)
    assert fresh.features[0].weight is before


def test_save_pruned_load_pruned_plain_pytorch(tmp_path):
    torch.manual_seed(0)
    x = batch()
    net = build_model("resnet20", width=0.5).eval()
    prune_30_percent(net, x)
    path = save_pruned(net, tmp_path / "net.pt")
    with torch.no_grad():
        expected = net(x)
        assert torch.equal(load_pruned(path)(x), expected)  # rebuilt from the saved spec
        own = build_model("resnet20", width=0.5)
        assert load_pruned(path, own) is own and torch.equal(own(x), expected)

    class Custom(nn.Module):  # not built by build_model: no spec, the caller brings the model
        def __init__(self):
            super().__init__()
            self.body = build_model("vgg11", width=0.25)

        def forward(self, x):
            return self.body(x)

    custom = Custom().eval()
    prune_filters(custom, {"body.features.0": [0, 1]}, x)
    path = save_pruned(custom, tmp_path / "custom.pt")
    with pytest.raises(PlPruningError, match="records no build arguments"):
        load_pruned(path)
    with torch.no_grad():
        assert torch.equal(load_pruned(path, Custom())(x), custom(x))
    with pytest.raises(PlPruningError, match="is not a file"):
        load_pruned(tmp_path / "missing.pt")


def test_one_reader_for_the_three_kinds_of_file(tmp_path):
    net = build_model("small_cnn", in_channels=1)
    module = ImageClassifier(build_model("small_cnn", in_channels=1), input_shape=(1, 8, 8))
    trainer = quiet_trainer(max_epochs=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "lightning.ckpt")
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    torch.save(module.state_dict(), tmp_path / "module_state.pt")
    save_pruned(module, tmp_path / "saved.pt")

    lightning = read_checkpoint(tmp_path / "lightning.ckpt", weights_only=False)
    assert lightning.prefix == "net." and lightning.spec == model_spec(module.net)
    assert lightning.hyper_parameters["input_shape"] == (1, 8, 8)
    plain = read_checkpoint(tmp_path / "plain.pt")
    assert (plain.prefix, plain.spec) == ("", None)
    assert read_checkpoint(tmp_path / "module_state.pt").prefix == "net."
    saved = read_checkpoint(tmp_path / "saved.pt")
    assert saved.prefix == "net." and saved.spec == model_spec(module.net)
    # keyed for what loads them: a bare network, or the LightningModule itself
    for path in ("lightning.ckpt", "module_state.pt", "saved.pt"):
        assert set(read_state_dict(tmp_path / path, weights_only=False)) == set(net.state_dict())
        assert set(read_state_dict(tmp_path / path, module, weights_only=False)) == set(module.state_dict())
    torch.save({"not": "weights"}, tmp_path / "other.pt")
    with pytest.raises(PlPruningError, match=r"path='.*other.pt' holds neither a Lightning checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(PlPruningError, match=r"model.checkpoint='.*junk.pt' is not a readable PyTorch"):
        read_checkpoint(tmp_path / "junk.pt", name="model.checkpoint")


def test_load_weights_names_what_does_not_fit(tmp_path):
    wide = build_model("small_cnn", in_channels=1, width=2.0)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    save_pruned(wide, tmp_path / "wide_saved.pt")
    net = build_model("small_cnn", in_channels=1)
    with pytest.raises(PlPruningError, match=r"path='.*wide.pt' does not fit small_cnn: .* shape mismatches, "
                                             r"e.g. features.0.weight: checkpoint \(64, 1, 3, 3\)"):
        load_weights(net, tmp_path / "wide.pt", what="small_cnn")
    with pytest.raises(PlPruningError, match=r"it was made by \{'name': 'small_cnn'.*'width': 2.0"):
        load_weights(net, tmp_path / "wide_saved.pt", what="small_cnn")
    same = build_model("small_cnn", in_channels=1, width=2.0)
    load_weights(same, tmp_path / "wide_saved.pt", what="small_cnn width=2")
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), wide.state_dict().values()))


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


@pytest.mark.slow
def test_lightning_round_trip_in_a_fresh_process(tmp_path):
    """Train, prune, fine-tune, save; a new Python process loads the checkpoint into the
    original ImageClassifier through load_from_checkpoint, Trainer.validate/test/fit
    (ckpt_path=...) and load_pruned, with identical outputs."""
    torch.manual_seed(0)
    kwargs = dict(net=dict(name="small_cnn", num_classes=10, in_channels=1),
                  input_shape=[1, 8, 8], scheduler="none", lr=0.05)
    dm = DigitsDataModule(batch_size=32)
    module = ImageClassifier(**kwargs)
    quiet_trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=1).fit(module, datamodule=dm)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    result = prune_filters(module, {"net.features.0": list(range(0, 32, 3)),
                                    "net.features.3": list(range(20)),
                                    "net.features.7": [1, 2, 3, 5, 8, 13, 21]}, x)
    assert result.filters_removed == 11 + 20 + 7
    fine_tune = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    fine_tune.fit(module, datamodule=dm)  # a fresh optimizer over the pruned parameters
    fine_tune.save_checkpoint(tmp_path / "pruned.ckpt")
    save_pruned(module.net, tmp_path / "pruned.pt")
    module.eval()
    with torch.no_grad():
        torch.save({"inputs": x, "outputs": module(x)}, tmp_path / "reference.pt")
    (tmp_path / "module_kwargs.json").write_text(json.dumps(kwargs))

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected_channels = channel_counts(module.net)
    assert expected_channels["features.3"] == 44
    assert out["channels"] == expected_channels
    for path in ("load_from_checkpoint", "validate", "test", "load_pruned",
                 "load_pruned_lightning_ckpt"):
        assert out[path] == 0.0, (path, out[path])
    assert out["fit_resumed_epochs"] == 2 and out["fit_finite"]
    assert out["fit_channels"] == expected_channels


def test_a_users_own_lightning_module_with_the_one_line_hook(tmp_path):
    class Mine(L.LightningModule):
        def __init__(self, width: float = 0.5):
            super().__init__()
            self.save_hyperparameters()
            self.backbone = build_model("resnet20", width=width)

        def forward(self, x):
            return self.backbone(x)

        def on_load_checkpoint(self, checkpoint):
            restore_pruned_shapes(self, checkpoint["state_dict"])

    torch.manual_seed(0)
    x = batch()
    mine = Mine().eval()
    prune_30_percent(mine, x)
    trainer = quiet_trainer(max_epochs=0)
    trainer.strategy.connect(mine)
    trainer.save_checkpoint(tmp_path / "mine.ckpt")
    loaded = Mine.load_from_checkpoint(tmp_path / "mine.ckpt").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), mine(x))


def test_a_pruned_network_is_accepted_as_model_checkpoint_and_a_wider_one_is_not(tmp_path):
    """The app's own pruned_model.pt (and a pruning last.ckpt) is a network to test or prune
    further: load_weights resizes the freshly built network to it."""
    from pl_pruning.checkpoint import load_weights

    torch.manual_seed(0)
    net = build_model("small_cnn", num_classes=10, in_channels=1)
    x = torch.randn(4, 1, 8, 8)
    prune_filters(net, {"features.0": [0, 1, 2], "features.3": [5]}, x[:1])
    path = save_pruned(net, tmp_path / "pruned_model.pt")
    fresh = build_model("small_cnn", num_classes=10, in_channels=1)
    load_weights(fresh, path, what="model=small_cnn width=1.0", name="model.checkpoint")
    assert channel_counts(fresh) == channel_counts(net)
    assert torch.equal(fresh.eval()(x), net.eval()(x))
    wide = build_model("small_cnn", num_classes=10, in_channels=1, width=2.0)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    narrow = build_model("small_cnn", num_classes=10, in_channels=1)
    with pytest.raises(PlPruningError, match="does not fit model=small_cnn width=1.0: .*shape mismatches"):
        load_weights(narrow, tmp_path / "wide.pt", what="model=small_cnn width=1.0", name="model.checkpoint")
    assert channel_counts(narrow) == channel_counts(build_model("small_cnn", num_classes=10, in_channels=1))
