"""Cost of a network in one place: MACs, parameters and measured latency.

MACs come from ``torch.utils.flop_counter`` (FLOPs / 2; convolutions and matrix
products, which is what the pruning literature counts), latency from
``torch.utils.benchmark`` with a fixed thread count so that runs compare.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Cost:
    macs: int
    params: int
    latency_ms: float | None
    batch_size: int
    num_threads: int

    def as_dict(self) -> dict:
        return asdict(self)


def count_macs(model: nn.Module, example_inputs: Tensor) -> int:
    """Multiply-accumulates of one forward pass of ONE sample (the first of the batch),
    the unit of the pruning literature."""
    example_inputs = example_inputs[:1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_latency(model: nn.Module, example_inputs: Tensor, num_threads: int = 1,
                    min_run_time: float = 0.5) -> float:
    """Median milliseconds per forward pass of the whole batch, in eval mode, no grad."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        net(example_inputs)  # warm-up (allocator, kernels)
        timer = benchmark.Timer(stmt="net(x)", globals={"net": net, "x": example_inputs},
                                num_threads=num_threads)
        result = timer.blocked_autorange(min_run_time=min_run_time)
    return result.median * 1e3


def measure(model: nn.Module, example_inputs: Tensor, num_threads: int = 1,
            latency: bool = True, min_run_time: float = 0.5) -> Cost:
    """MACs, parameters and (optionally) latency of ``model`` on ``example_inputs``.

    Args:
        model: any ``nn.Module``; it is not changed (latency runs on a copy).
        example_inputs: a batch; MACs are per sample, latency is for the whole batch.
        num_threads: torch threads while timing, fixed so that runs compare.
        latency: skip the timing when ``False`` (``latency_ms`` is then ``None``).
        min_run_time: seconds of timing, at least.
    """
    example_inputs = example_inputs.to(next(model.parameters()).device)
    return Cost(
        macs=count_macs(model, example_inputs),
        params=count_params(model),
        latency_ms=measure_latency(model, example_inputs, num_threads, min_run_time) if latency else None,
        batch_size=int(example_inputs.shape[0]),
        num_threads=num_threads,
    )
