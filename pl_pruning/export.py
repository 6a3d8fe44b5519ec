"""ONNX export of a (pruned) network, checked against PyTorch in ONNX Runtime.

A pruned network is an ordinary ``nn.Module`` with smaller layers, so it exports like
any other. :func:`export_onnx` writes the file with a dynamic batch dimension, then
runs it in ONNX Runtime on the example inputs and compares with PyTorch's outputs
(max abs difference, ``atol=1e-4`` by default). Needs the ``onnx`` extra:
``pip install pl_pruning[onnx]`` (``onnx``, ``onnxscript``, ``onnxruntime``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pl_pruning.errors import PlPruningError
from pl_pruning.modes import eval_mode
from pl_pruning.validate import check_number

INPUT_NAME, OUTPUT_NAME = "input", "output"


@dataclass
class OnnxExport:
    """Where the model went and how well ONNX Runtime reproduces it."""

    path: Path
    max_abs_diff: float | None  # None when the check was skipped
    opset: int
    dynamo: bool


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:  # a missing extra: say which
        raise PlPruningError("ONNX export needs the onnx extra: pip install 'pl_pruning[onnx]' "
                             f"(onnx, onnxscript, onnxruntime); {err}") from err


def export_onnx(model: nn.Module, path: str | Path, example_inputs: Tensor, *,
                opset: int = 18, dynamic_batch: bool = True, dynamo: bool = True,
                check: bool = True, atol: float = 1e-4) -> OnnxExport:
    """Export ``model`` to ONNX and (by default) check it in ONNX Runtime.

    Args:
        model: any network taking one image batch (a LightningModule works too).
        path: the ``.onnx`` file to write (parents are created).
        example_inputs: an input batch (float, on any device).
        opset: ONNX opset version.
        dynamic_batch: make the batch dimension symbolic, so any batch size runs.
        dynamo: use ``torch.export`` (the supported exporter since PyTorch 2.9); ``False``
            uses the older TorchScript exporter (faster, deprecated by PyTorch).
        check: run the file in ONNX Runtime on ``example_inputs`` and compare.
        atol: the largest max abs difference accepted by the check, >= 0.

    Raises:
        PlPruningError: the ONNX packages are missing, ``atol < 0``, or ``path`` is a folder.
        RuntimeError: ONNX Runtime's outputs differ from PyTorch's by more than ``atol``
            (the exported file does not compute what the model computes).

    Example::

        export_onnx(pruned_net, "pruned.onnx", torch.zeros(1, 3, 32, 32)).max_abs_diff
    """
    check_number("atol", atol, 0.0)
    if Path(path).is_dir() or str(path).endswith(("/", os.sep)):
        raise PlPruningError(f"path={str(path)!r} is a folder; give the .onnx file to write (such as "
                             f"{str(Path(path) / 'model.onnx')!r})")
    _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = example_inputs.detach().float().to(_device(model))
    # torch.export specialises a dimension of size 1; trace with at least 2 samples.
    trace_x = x if x.shape[0] > 1 or not dynamic_batch else x.expand(2, *x.shape[1:]).clone()
    kwargs: dict = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                        dynamo=dynamo, verbose=False)
    if dynamic_batch and dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    elif dynamic_batch:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    if dynamo:
        kwargs["external_data"] = False  # one self-contained file
    sink = io.StringIO()
    with (eval_mode(model), warnings.catch_warnings(), contextlib.redirect_stdout(sink),
          torch.no_grad()):
        warnings.simplefilter("ignore")  # the exporters' progress chatter and deprecations
        torch.onnx.export(model, (trace_x,), str(path), **kwargs)
    diff = None
    if check:
        diff = onnx_max_abs_diff(model, path, x)
        if not diff <= atol:
            raise RuntimeError(f"ONNX Runtime's outputs of {path} differ from PyTorch's by "
                                 f"{diff:.3g} > atol={atol}")
    return OnnxExport(path=path, max_abs_diff=diff, opset=opset, dynamo=dynamo)


def ort_session(path: str | Path, num_threads: int = 1):
    """An ONNX Runtime CPU session with a fixed thread count (so timings compare)."""
    _require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(path_or_session, inputs: Tensor) -> np.ndarray:
    """Outputs of an ONNX file (or session) on ``inputs``."""
    session = path_or_session if hasattr(path_or_session, "run") else ort_session(path_or_session)
    name = session.get_inputs()[0].name
    return session.run(None, {name: inputs.detach().float().cpu().numpy()})[0]


def onnx_max_abs_diff(model: nn.Module, path: str | Path, inputs: Tensor) -> float:
    """Max abs difference between ``model(inputs)`` (eval mode) and ONNX Runtime's."""
    with eval_mode(model), torch.no_grad():
        expected = model(inputs.detach().float().to(_device(model))).float().cpu().numpy()
    got = run_onnx(path, inputs)
    if got.shape != expected.shape:
        raise PlPruningError(f"ONNX Runtime's output has shape {got.shape}, PyTorch's {expected.shape}")
    return float(np.abs(got - expected).max())
