"""ONNX export of pruned networks: ONNX Runtime reproduces PyTorch to 1e-4."""

from __future__ import annotations

import onnx
import pytest
import torch

from pl_pruning import export
from pl_pruning.errors import PlPruningError
from pl_pruning.export import export_onnx, onnx_max_abs_diff, run_onnx
from pl_pruning.models import build_model
from pl_pruning.module import ImageClassifier
from pl_pruning.pruning.surgery import prune_filters, pruning_groups


def pruned(name: str, width: float, x: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(name, width=width).eval()
    gen = torch.Generator().manual_seed(0)
    plan = {g.root: torch.randperm(g.channels, generator=gen)[: int(0.3 * g.channels)].tolist()
            for g in pruning_groups(net, x) if int(0.3 * g.channels)}
    prune_filters(net, plan, x)
    return net


@pytest.mark.parametrize("name, width", [("vgg16", 0.25), ("resnet20", 1.0)])
def test_pruned_network_exports_and_matches_in_onnx_runtime(tmp_path, name, width):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    net = pruned(name, width, x)
    report = export_onnx(net, tmp_path / f"{name}.onnx", x)
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4
    graph = onnx.load(str(report.path)).graph
    conv_widths = sorted(init.dims[0] for init in graph.initializer if len(init.dims) == 4)
    widths = sorted(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv_widths == widths  # the pruned widths went into the file
    # the batch dimension is dynamic, and other inputs match too
    other = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert run_onnx(report.path, other).shape == (7, 10)
    assert onnx_max_abs_diff(net, report.path, other) <= 1e-4


def test_lightning_module_and_the_torchscript_exporter(tmp_path):
    x = torch.randn(3, 1, 8, 8)
    module = ImageClassifier({"name": "small_cnn", "in_channels": 1}).train()
    prune_filters(module, {"net.features.3": list(range(0, 64, 2))}, x)
    report = export_onnx(module, tmp_path / "m.onnx", x, dynamo=False)
    assert report.max_abs_diff <= 1e-4
    assert module.training and module.net.features[4].training  # mode put back


def test_mismatch_beyond_atol_is_an_error_and_a_negative_atol_bad_input(tmp_path, monkeypatch):
    x = torch.randn(2, 1, 8, 8)
    net = build_model("small_cnn", in_channels=1).eval()
    with pytest.raises(PlPruningError, match="atol must be >= 0, got -1.0"):
        export_onnx(net, tmp_path / "n.onnx", x, atol=-1.0, dynamo=False)
    # a file that does not compute what the model computes is a failure, not bad input
    monkeypatch.setattr(export, "onnx_max_abs_diff", lambda *args: 0.5)
    with pytest.raises(RuntimeError, match=r"differ from PyTorch.s by 0.5 > atol=0.0001") as err:
        export_onnx(net, tmp_path / "n.onnx", x, dynamo=False)
    assert not isinstance(err.value, PlPruningError)


def test_export_to_a_folder_is_refused(tmp_path):
    net = build_model("small_cnn", in_channels=1)
    with pytest.raises(PlPruningError, match=r"path='.*' is a folder; give the .onnx file to write"):
        export_onnx(net, tmp_path, torch.zeros(1, 1, 8, 8))
    assert list(tmp_path.iterdir()) == []
