"""Loading weights named by ``model.checkpoint``: Lightning checkpoints or plain state dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pl_pruning.errors import PlPruningError


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, hyper_parameters)`` from a Lightning ``.ckpt`` or a saved state dict.

    Keys of a Lightning checkpoint of ``ImageClassifier`` start with ``net.``; that
    prefix is removed so the result loads into the bare network.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PlPruningError(f"model.checkpoint={str(path)!r} is not a file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any unreadable file: name it, not the pickle internals
        raise PlPruningError(f"model.checkpoint={str(path)!r} is not a PyTorch checkpoint: {err}") from err
    if isinstance(blob, dict) and "state_dict" in blob:
        state, hparams = blob["state_dict"], dict(blob.get("hyper_parameters") or {})
    elif isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        state, hparams = blob, {}
    else:
        raise PlPruningError(f"model.checkpoint={str(path)!r} holds neither a state dict nor a Lightning checkpoint")
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return state, hparams


def load_weights(net: nn.Module, path: str | Path, what: str) -> None:
    """Load ``path`` into ``net``; a checkpoint of another architecture is one clear error.

    ``what`` names the architecture the caller expects (for the message).
    """
    state, hparams = read_state_dict(path)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        saved = hparams.get("net")
        made_by = f" (it was made by {saved})" if saved else ""
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        if mismatched:
            k = mismatched[0]
            details.append(f"{len(mismatched)} shape mismatches, e.g. {k}: checkpoint "
                           f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise PlPruningError(f"model.checkpoint={str(path)!r} does not fit {what}{made_by}: "
                             + "; ".join(details))
    net.load_state_dict(state)
