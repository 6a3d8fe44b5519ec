"""pl_pruning.modes: train/eval flags switched for a block and every module's own flag put
back, also when the block fails; autograd on inside inference mode."""

import pytest
import torch
from torch import nn

from pl_pruning.modes import autograd_on, eval_mode, kept_modes


def _net() -> nn.Sequential:
    """A training network with one BatchNorm a user froze in eval mode."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Sequential(nn.ReLU(), nn.BatchNorm2d(2)))
    net.train()
    net[1].eval()
    return net


def _flags(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def test_eval_mode_puts_every_module_in_eval_and_every_own_flag_back():
    net = _net()
    before = _flags(net)
    with eval_mode(net) as inside:
        assert inside is net
        assert not any(_flags(net))
    assert _flags(net) == before
    assert net.training and not net[1].training and net[2][1].training


def test_kept_modes_puts_flags_back_after_a_failing_block():
    net = _net()
    before = _flags(net)
    with pytest.raises(RuntimeError, match="inside"), kept_modes(net):
        net.train()
        net[2].eval()
        raise RuntimeError("inside")
    assert _flags(net) == before


def test_eval_mode_puts_flags_back_after_a_failing_block():
    net = _net()
    before = _flags(net)
    with pytest.raises(ValueError), eval_mode(net):
        raise ValueError
    assert _flags(net) == before


def test_autograd_on_records_grad_fns_inside_inference_mode_and_no_grad():
    net = _net()
    before = _flags(net)
    x = torch.ones(1, 1, 4, 4)
    with torch.inference_mode(), torch.no_grad():
        assert net(x).grad_fn is None
        with autograd_on(net):
            net.eval()
            assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            assert net(torch.ones(1, 1, 4, 4)).grad_fn is not None
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    assert _flags(net) == before
