"""Checkpoints: the one reader of checkpoint files, and pruned networks loaded back.

**One reader.** :func:`read_checkpoint` is the only place that opens a checkpoint file.
It understands a Lightning ``.ckpt`` (of ``ImageClassifier`` or any LightningModule), a
file of :func:`save_pruned` and a plain state dict, and answers with the same
:class:`StoredCheckpoint` for all three; bad files are one :class:`PlPruningError` that
names the file. :func:`read_state_dict`, :func:`load_weights` (the app's
``model.checkpoint``) and :func:`load_pruned` stand on it.

**Pruned shapes come from the state dict, not from a replayed history.** A pruned
state dict already says everything needed: the shape of every weight. Before the weights
load, :func:`restore_pruned_shapes` resizes the layers of a freshly built, unpruned
model (Conv, BatchNorm, Linear, GroupNorm, LayerNorm, PReLU, and any other parameter or
buffer) to the shapes in the state dict; ``load_state_dict`` then fills them. Compared
with recording the pruning history and replaying it:

* nothing extra has to be saved or kept in sync: checkpoints written by Lightning's
  ``ModelCheckpoint``, by a rollback to an earlier network, or by hand all work;
* it needs no example input and no dependency-graph trace at load time;
* it works for any network whose ``forward`` reads its sizes from its layers (true of
  Conv/BN/Linear stacks, residual networks and torchvision's models). A network that
  hard-codes a channel count in ``forward`` (a ``view(-1, 512)``) loads but does not
  run; replaying a history would not save it either.

Depthwise convolutions stay depthwise (``groups`` follows the channel count); other
grouped convolutions keep their ``groups``. A bias that bias compensation created on a
layer built without one is created again.

For Lightning: ``ImageClassifier.on_load_checkpoint`` calls
:func:`restore_pruned_shapes`, so ``Trainer.fit/validate/test(ckpt_path=...)`` and
``ImageClassifier.load_from_checkpoint(path)`` accept checkpoints of pruned models.
Your own LightningModule does the same with one call::

    from pl_pruning.checkpoint import restore_pruned_shapes

    def on_load_checkpoint(self, checkpoint):
        restore_pruned_shapes(self, checkpoint["state_dict"])

Lightning calls this hook before ``load_state_dict`` and, for single-device and DDP
strategies, before the strategy wraps the model and builds the optimizers (see
``_CheckpointConnector.restore_model`` and ``Trainer._run``). Strategies that restore
after setup (FSDP, DeepSpeed, ModelParallel) are not supported.

For plain PyTorch: :func:`save_pruned` / :func:`load_pruned`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pl_pruning.errors import PlPruningError
from pl_pruning.files import atomic_path
from pl_pruning.models import build_model, model_spec

FORMAT = "pl_pruning.pruned"
VERSION = 1
# ImageClassifier keeps its network at ``.net``: its state-dict keys carry this prefix.
NET_PREFIX = "net."

__all__ = ["StoredCheckpoint", "adapt_shapes_on_load", "load_pruned", "load_weights", "read_checkpoint", "read_state_dict",
           "restore_pruned_shapes", "save_pruned"]


@dataclass(frozen=True)
class StoredCheckpoint:
    """What a checkpoint file holds, whichever way it was written.

    Attributes:
        state_dict: the weights, keys as stored.
        prefix: ``"net."`` when the keys are those of a LightningModule around its
            network at ``.net`` (``ImageClassifier``), else ``""``.
        spec: the :func:`pl_pruning.build_model` arguments of the network, when recorded.
        hyper_parameters: a Lightning checkpoint's hyper-parameters (else empty).
    """

    state_dict: dict[str, Tensor]
    prefix: str = ""
    spec: dict[str, Any] | None = None
    hyper_parameters: dict[str, Any] = field(default_factory=dict)

    def state_for(self, model: nn.Module | None = None) -> dict[str, Tensor]:
        """The weights keyed for ``model``: the prefix is dropped unless ``model``'s own
        keys carry it (a LightningModule); with no model, the bare network's keys."""
        if self.prefix and (model is None or not any(k.startswith(self.prefix) for k in model.state_dict())):
            return {k[len(self.prefix):]: v for k, v in self.state_dict.items() if k.startswith(self.prefix)}
        return dict(self.state_dict)


def read_checkpoint(path: str | Path, *, weights_only: bool = True, name: str = "path") -> StoredCheckpoint:
    """Read a Lightning ``.ckpt``, a file of :func:`save_pruned` or a plain state dict.

    Args:
        path: the file.
        weights_only: ``torch.load``'s safe mode; a Lightning checkpoint with custom
            objects in its hyper-parameters or callback states may need ``False``
            (trusted files only).
        name: how the caller's user names the file, for messages (``model.checkpoint``).

    Raises:
        PlPruningError: the file is missing, unreadable, or holds none of the three.
    """
    path = Path(path).expanduser()
    where = f"{name}={str(path)!r}"
    if not path.is_file():
        raise PlPruningError(f"{where} is not a file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # any unreadable file: name it, not the pickle internals
        raise PlPruningError(f"{where} is not a readable PyTorch checkpoint "
                             f"(weights_only={weights_only}): {err}") from err
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        return StoredCheckpoint(blob["state_dict"], blob.get("prefix", ""), blob.get("spec"))
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), Mapping):  # Lightning
        state = dict(blob["state_dict"])
        hparams = dict(blob.get("hyper_parameters") or {})
        spec = hparams.get("net") if isinstance(hparams.get("net"), Mapping) else None
        return StoredCheckpoint(state, _prefix_of(state), dict(spec) if spec else None, hparams)
    if isinstance(blob, dict) and blob and all(isinstance(v, Tensor) for v in blob.values()):
        return StoredCheckpoint(blob, _prefix_of(blob))
    raise PlPruningError(f"{where} holds neither a Lightning checkpoint, a file of save_pruned "
                         "nor a state dict")


def _prefix_of(state: Mapping[str, Tensor]) -> str:
    return NET_PREFIX if any(k.startswith(NET_PREFIX) for k in state) else ""


def read_state_dict(path: str | Path, model: nn.Module | None = None, *,
                    weights_only: bool = True) -> dict[str, Tensor]:
    """The weights of a checkpoint file keyed for ``model`` (see :meth:`StoredCheckpoint.state_for`).

    Example::

        classifier.load_state_dict(read_state_dict("last.ckpt", classifier))
    """
    return read_checkpoint(path, weights_only=weights_only).state_for(model)


def load_weights(net: nn.Module, path: str | Path, what: str, *, name: str = "path",
                 weights_only: bool = False) -> None:
    """Load ``path`` into ``net`` as it is built; a checkpoint of another architecture
    (or width) is one clear error that says what the checkpoint was made by.

    Args:
        net: the network, unpruned, as the caller built it.
        path: a Lightning ``.ckpt``, a file of :func:`save_pruned` or a state dict.
        what: the architecture the caller expects, for the message
            (``"model=small_cnn width=1.0"``).
        name: how the caller's user names the file, for messages.
        weights_only: see :func:`read_checkpoint`; ``False`` by default, as Lightning
            checkpoints of Hydra projects hold OmegaConf objects (a file you trust).

    Raises:
        PlPruningError: an unreadable file, or missing, unexpected or mismatched keys.
    """
    stored = read_checkpoint(path, weights_only=weights_only, name=name)
    state = stored.state_for(net)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if not missing and (mismatched or unexpected) and _pruned_from(net, own, state, mismatched):
        net.load_state_dict(state)  # a pruned network of this architecture: test it, prune it further
        return
    if missing or unexpected or mismatched:
        made_by = f" (it was made by {stored.spec})" if stored.spec else ""
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        if mismatched:
            k = mismatched[0]
            details.append(f"{len(mismatched)} shape mismatches, e.g. {k}: checkpoint "
                           f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise PlPruningError(f"{name}={str(Path(path).expanduser())!r} does not fit {what}{made_by}: "
                             + "; ".join(details))
    net.load_state_dict(state)


def _pruned_from(net: nn.Module, own: Mapping[str, Tensor], state: Mapping[str, Tensor],
                 mismatched: list[str]) -> bool:
    """Whether ``state`` is ``net``'s architecture (``own``: its state dict) with fewer
    channels (every mismatched dimension smaller); if so, ``net``'s layers are resized to
    it (nothing changes otherwise)."""
    if any(len(state[k].shape) != len(own[k].shape) or any(a > b for a, b in zip(state[k].shape, own[k].shape))
           for k in mismatched):
        return False
    trial = copy.deepcopy(net)
    try:
        restore_pruned_shapes(trial, state)
        trial.load_state_dict(state)
    except (PlPruningError, RuntimeError):
        return False
    restore_pruned_shapes(net, state)
    return True


_NORMS = (nn.modules.batchnorm._NormBase,)


def _empty_like(old: Tensor | None, shape: torch.Size, like: Tensor) -> Tensor:
    ref = old if old is not None else like
    return torch.empty(shape, dtype=ref.dtype, device=ref.device)


def _param(old: nn.Parameter | None, shape: torch.Size, like: Tensor) -> nn.Parameter:
    requires_grad = old.requires_grad if old is not None else True
    return nn.Parameter(_empty_like(old, shape, like), requires_grad=requires_grad)


def _resizing(name: str, m: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Attributes and tensors to set on ``m`` so it matches ``state``; ``None`` if it does."""
    prefix = f"{name}." if name else ""
    new: dict[str, Any] = {}
    for key, old in [*m._parameters.items(), *m._buffers.items()]:
        full = prefix + key
        if full not in state:
            continue
        target = state[full]
        if not isinstance(target, Tensor):
            continue
        if old is None:
            if key in m._parameters:  # a bias created by bias compensation
                new[key] = _param(None, target.shape, m.weight if "weight" in m._parameters else target)
            continue
        if old.shape == target.shape:
            continue
        if old.dim() != target.dim():
            raise PlPruningError(f"{full!r}: the checkpoint has shape {tuple(target.shape)}, the model "
                                 f"{tuple(old.shape)}; pruning changes sizes, not the number of dims")
        new[key] = (_param(old, target.shape, old) if key in m._parameters
                    else _empty_like(old, target.shape, old))
    if not new:
        return None
    attrs: dict[str, Any] = {}
    if isinstance(m, nn.modules.conv._ConvNd):
        w = new.get("weight", m.weight)
        if m.transposed:  # weight: (in, out / groups, *kernel)
            in_c, out_c, groups = w.shape[0], w.shape[1] * m.groups, m.groups
        elif m.groups > 1 and m.groups == m.in_channels == m.out_channels:
            if w.shape[1] != 1:
                raise PlPruningError(f"{name!r} is depthwise in the model but not in the checkpoint "
                                     f"(weight {tuple(w.shape)})")
            out_c = in_c = groups = w.shape[0]  # depthwise stays depthwise
        else:  # weight: (out, in / groups, *kernel)
            out_c, groups = w.shape[0], m.groups
            in_c = w.shape[1] * groups
            if out_c % groups:
                raise PlPruningError(f"{name!r}: {out_c} output channels do not split into "
                                     f"groups={groups}")
        attrs.update(out_channels=out_c, in_channels=in_c, groups=groups)
    elif isinstance(m, nn.Linear):
        w = new.get("weight", m.weight)
        attrs.update(out_features=w.shape[0], in_features=w.shape[1])
    elif isinstance(m, _NORMS):
        ref = new.get("weight", new.get("running_mean"))
        if ref is not None:
            attrs["num_features"] = ref.shape[0]
    elif isinstance(m, nn.GroupNorm) and "weight" in new:
        attrs["num_channels"] = new["weight"].shape[0]
    elif isinstance(m, nn.LayerNorm) and "weight" in new:
        attrs["normalized_shape"] = tuple(new["weight"].shape)
    elif isinstance(m, nn.PReLU) and "weight" in new:
        attrs["num_parameters"] = new["weight"].shape[0]
    return {"tensors": new, "attrs": attrs}


def adapt_shapes_on_load(module: nn.Module) -> None:
    """From now on, ``module.load_state_dict(state)`` first resizes its layers to the shapes
    in ``state`` (:func:`restore_pruned_shapes`): resuming ``Trainer.fit(ckpt_path=...)``
    from a checkpoint written after a surgery works for any LightningModule. Idempotent."""
    if getattr(module, "_pl_pruning_adapts_shapes", False):
        return

    def hook(mod: nn.Module, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        if prefix == "":
            restore_pruned_shapes(mod, state_dict)

    module.register_load_state_dict_pre_hook(hook)
    module._pl_pruning_adapts_shapes = True


def restore_pruned_shapes(module: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Resize ``module``'s layers to the shapes in ``state_dict``, before it loads.

    Args:
        module: a model built unpruned (a network, or a LightningModule: then the keys
            start with ``net.`` as in its own state dict).
        state_dict: the (pruned) state dict about to be loaded.

    Returns:
        The names of the modules that were resized (empty for an unpruned checkpoint).
        Their new tensors are uninitialised until ``load_state_dict`` fills them.

    Raises:
        PlPruningError: a tensor whose number of dimensions differs, or a conv whose
            channel counts do not fit its groups. Nothing is changed then.
    """
    changes = []
    for name, m in module.named_modules():
        change = _resizing(name, m, state_dict)
        if change is not None:
            changes.append((name, m, change))
    for _, m, change in changes:  # everything checked above: now change
        for key, tensor in change["tensors"].items():
            if key in m._parameters:
                m._parameters[key] = tensor
            else:
                m._buffers[key] = tensor
        for attr, value in change["attrs"].items():
            setattr(m, attr, value)
    return [name for name, _, _ in changes]


def save_pruned(model: nn.Module, path: str | Path) -> Path:
    """Save a (pruned) network so that :func:`load_pruned` rebuilds it without its code.

    The file holds the state dict and, for networks built by
    :func:`pl_pruning.build_model`, the arguments that built them (a LightningModule
    whose network is at ``.net`` records the network's). Channel counts are in the
    weights' shapes; no pruning history is needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec, prefix = model_spec(model), ""
    if spec is None and isinstance(getattr(model, "net", None), nn.Module):
        spec, prefix = model_spec(model.net), NET_PREFIX
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, "spec": spec, "prefix": prefix,
                    "state_dict": state}, tmp)
    return path


def load_pruned(path: str | Path, model: nn.Module | None = None, *, strict: bool = True,
                weights_only: bool = True) -> nn.Module:
    """Load a checkpoint of a pruned network into an unpruned model of its class.

    Args:
        path: a file of :func:`save_pruned`, a Lightning checkpoint of
            ``ImageClassifier`` or a plain state dict.
        model: the model to load into, built unpruned (your own class, or a
            LightningModule for a checkpoint of one). When omitted, the network is
            rebuilt with :func:`pl_pruning.build_model` from the arguments saved in the
            file, and the bare network is returned.
        strict: passed to ``load_state_dict``.
        weights_only: see :func:`read_checkpoint`.

    Returns:
        ``model`` (or the rebuilt network), resized and loaded, in eval mode.

    Raises:
        PlPruningError: an unreadable file, no ``model`` and no saved build arguments,
            or weights that do not fit the model.

    Example::

        net = load_pruned("outputs/.../pruned_model.pt")   # no code of the run needed
    """
    stored = read_checkpoint(path, weights_only=weights_only)
    if model is None:
        if stored.spec is None:
            raise PlPruningError(f"path={str(path)!r} records no build arguments (the network was not "
                                 "built by pl_pruning.build_model); pass model=<an unpruned instance>")
        model = build_model(**stored.spec)
    state = stored.state_for(model)
    restore_pruned_shapes(model, state)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise PlPruningError(f"path={str(path)!r} does not fit {type(model).__name__}: {err}") from err
    return model.eval()
