"""ChannelsLast: the module's 4-D weights stay channels-last through pruning, values unchanged."""

import copy

import torch
from pruning_helpers import trained_digits_classifier, trainer
from torch import nn

from pl_pruning import PhaseController
from pl_pruning.callbacks import ChannelsLast


def _convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_weights_are_channels_last_after_a_pruning_fit_and_predictions_unchanged():
    model, dm = trained_digits_classifier(epochs=3)
    x = torch.randn(16, 1, 8, 8)
    converted, reference = copy.deepcopy(model).eval(), copy.deepcopy(model).eval()
    ChannelsLast._convert(converted)
    with torch.no_grad():
        assert torch.allclose(converted(x), reference(x), atol=1e-5)  # only the strides change

    trainer([ChannelsLast()]).test(model, datamodule=dm, verbose=False)  # converts under inference mode
    assert not any(t.is_inference() for t in [*model.parameters(), *model.buffers()])  # still trainable
    controller = PhaseController(criterion="l1", phases=["global"], max_steps=2, final_epochs=1, max_drop=0.5)
    trainer([ChannelsLast(), controller], max_epochs=4).fit(model, datamodule=dm)
    assert controller.run.surgeries >= 1  # surgery made new weights; the next epoch converted them
    for conv in _convs(model):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last), conv
        # (a weight with one input channel or a 1x1 kernel is contiguous in both formats)
        assert not conv.weight.is_contiguous() or min(conv.weight.shape[1:]) == 1
