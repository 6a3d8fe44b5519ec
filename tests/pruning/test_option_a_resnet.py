"""A user's option-A ResNet-20 (zero-padding shortcuts the dependency graph cannot follow):
the coupled layers are detected and left out, everything else is pruned, a default fit ends."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from option_a_resnet import ResNet20A  # noqa: E402

from pl_pruning import EntropyStatistics, ImageClassifier, MaxEntropyFreeze, PhaseController  # noqa: E402
from pl_pruning.data import SyntheticDataModule  # noqa: E402
from pl_pruning.structure.graph import NetworkGraph  # noqa: E402

# the stem conv and every block's second conv feed the residual stream
STREAM = ["conv1"] + [f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in range(3)]


def test_graph_leaves_the_padded_stream_out():
    net = ResNet20A()
    graph = NetworkGraph.of(net, torch.zeros(1, 3, 32, 32))
    assert graph.untraceable == STREAM
    roots = {g.root for g in graph.groups}
    assert roots == {f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)}
    assert not roots & set(STREAM)


@pytest.mark.slow
def test_default_fit_on_option_a_resnet_finishes_and_prunes_inner_convs(tmp_path):
    L.seed_everything(0)
    dm = SyntheticDataModule(num_classes=4, input_shape=(3, 8, 8), num_train=64, num_val=32,
                             num_test=32, batch_size=32)
    net = ResNet20A(num_classes=4, widths=(8, 16, 32), blocks=3)
    model = ImageClassifier(net, num_classes=4, input_shape=(3, 8, 8), lr=0.05)
    before = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    controller = PhaseController(max_drop=0.5, report_dir=str(tmp_path))
    trainer = L.Trainer(accelerator="cpu", max_epochs=5, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[EntropyStatistics(), controller, MaxEntropyFreeze(0.1)],
                        default_root_dir=str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm)
    messages = [str(w.message) for w in caught if "left out of pruning" in str(w.message)]
    assert len(messages) == 1 and all(name in messages[0] for name in STREAM)
    after = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(after[n] == before[n] for n in STREAM)  # never cut
    assert any(after[n] < before[n] for n in before if n not in STREAM)  # the inner convs were
    assert controller.run.phase.value == "done"
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
