"""Optimizer state across surgery (sliced to the surviving channels) and rollback (a copy)."""

from __future__ import annotations

import torch
from torch import nn

from pl_pruning.models import build_model
from pl_pruning.pruning import optimizer_state
from pl_pruning.pruning.surgery import prune_filters


def x() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def trained(opt_cls, **kw):
    torch.manual_seed(0)
    net = build_model("vgg11", width=0.125)
    opt = opt_cls(net.parameters(), lr=0.01, **kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        net(x()).sum().backward()
        opt.step()
        sched.step()
    return net, opt, sched


def storage_ptrs(states):
    return {t.untyped_storage().data_ptr() for st in states for t in st.values()
            if isinstance(t, torch.Tensor) and t.numel()}


def test_momentum_of_surviving_channels_is_carried_over():
    net, opt, sched = trained(torch.optim.SGD, momentum=0.9)
    conv, nxt = net.features[0], net.features[4]
    old_w, old_next = conv.weight, nxt.weight
    buf, buf_next = opt.state[old_w]["momentum_buffer"].clone(), opt.state[old_next]["momentum_buffer"].clone()
    carried = optimizer_state.capture([opt], [sched])
    result = prune_filters(net, {"features.0": [1, 5]}, x())
    new_opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    new_sched = torch.optim.lr_scheduler.StepLR(new_opt, step_size=1, gamma=0.5)
    optimizer_state.carry_over([new_opt], [new_sched], carried, result.parameter_changes)
    keep = [i for i in range(buf.shape[0]) if i not in (1, 5)]
    assert torch.equal(new_opt.state[conv.weight]["momentum_buffer"], buf[keep])
    assert torch.equal(new_opt.state[nxt.weight]["momentum_buffer"], buf_next[:, keep])  # input channels
    assert new_sched.last_epoch == 3 and new_opt.param_groups[0]["lr"] == 0.01 * 0.5 ** 3


def test_adam_moments_are_sliced_and_step_kept():
    net, opt, sched = trained(torch.optim.Adam)
    old = net.features[0].weight
    exp_avg, step = opt.state[old]["exp_avg"].clone(), opt.state[old]["step"].clone()
    carried = optimizer_state.capture([opt])
    result = prune_filters(net, {"features.0": [0]}, x())
    new_opt = torch.optim.Adam(net.parameters(), lr=0.01)
    optimizer_state.carry_over([new_opt], [], carried, result.parameter_changes)
    st = new_opt.state[net.features[0].weight]
    assert torch.equal(st["exp_avg"], exp_avg[1:]) and torch.equal(st["step"], step)


def test_a_rollback_loads_a_copy_of_the_snapshot():
    """The live state after a rollback shares no storage with the snapshot, so training
    on cannot rewrite what the next rollback returns to."""
    net, opt, sched = trained(torch.optim.SGD, momentum=0.9)
    snap = optimizer_state.snapshot(net, [opt])
    frozen = {k: v.clone() for k, v in snap["optimizers"][0]["state"][0].items()}
    optimizer_state.carry_over([opt], [sched], optimizer_state.capture([opt], [sched]), saved=snap["optimizers"])
    assert not storage_ptrs(opt.state.values()) & storage_ptrs(snap["optimizers"][0]["state"].values())
    for _ in range(2):  # training on after the rollback
        opt.zero_grad()
        net(x()).sum().backward()
        opt.step()
    assert torch.equal(snap["optimizers"][0]["state"][0]["momentum_buffer"], frozen["momentum_buffer"])


def test_restore_model_puts_shapes_and_weights_back_in_place():
    net, opt, _ = trained(torch.optim.SGD, momentum=0.9)
    snap = optimizer_state.snapshot(net, [opt])
    modules = dict(net.named_modules())
    prune_filters(net, {"features.0": [0, 1], "features.4": [2]}, x(),
                  channel_means={"features.4": torch.ones(net.features[4].out_channels)})
    optimizer_state.restore_model(net, snap["model"])
    assert dict(net.named_modules()) == modules  # the same module objects
    state = net.state_dict()
    assert state.keys() == snap["model"].keys()
    assert all(torch.equal(state[k], v) for k, v in snap["model"].items())
    assert all(state[k].untyped_storage().data_ptr() != v.untyped_storage().data_ptr()
               for k, v in snap["model"].items() if v.numel())
    assert isinstance(net.features[0], nn.Conv2d) and net(x()).shape == (4, 10)
