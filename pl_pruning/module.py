"""``ImageClassifier``: a LightningModule around any classification ``nn.Module``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from pl_pruning.checkpoint import restore_pruned_shapes
from pl_pruning.errors import PlPruningError
from pl_pruning.models import build_model, model_spec
from pl_pruning.validate import check_choice, check_number

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step", "none")


class ImageClassifier(L.LightningModule):
    """Cross-entropy classifier with SGD/AdamW and a cosine or step schedule.

    Args:
        net: the network, or the keyword arguments of
            :func:`pl_pruning.models.build_model` (how checkpoints rebuild it).
        num_classes: for the accuracy metric; read from the network's spec when omitted.
        input_shape: ``(C, H, W)`` of one sample; sets ``example_input_array``.
        optimizer: ``"sgd"`` or ``"adamw"``.
        lr, momentum, weight_decay, nesterov: optimizer settings (momentum and nesterov
            are SGD's).
        scheduler: ``"cosine"`` (to 0 over ``max_epochs``), ``"step"`` (``gamma`` every
            ``step_size`` epochs) or ``"none"``.

    ``configure_optimizers`` reads ``self.parameters()`` each time it is called, so it
    builds a valid optimizer again after filters have been removed.

    Raises:
        PlPruningError: an unknown optimizer or scheduler, or ``lr <= 0``.

    Example::

        model = ImageClassifier(build_model("small_cnn", in_channels=1), input_shape=(1, 8, 8))
        L.Trainer(max_epochs=5).fit(model, datamodule=DigitsDataModule())
    """

    def __init__(self, net: nn.Module | Mapping[str, Any], num_classes: int | None = None,
                 input_shape: Sequence[int] | None = None, optimizer: str = "sgd",
                 lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = True, scheduler: str = "cosine", step_size: int = 30,
                 gamma: float = 0.1) -> None:
        super().__init__()
        self.check_optimization(optimizer=optimizer, lr=lr, scheduler=scheduler)
        if isinstance(net, Mapping):
            net = build_model(**net)
        spec = model_spec(net)
        if num_classes is None:
            if spec is None:
                raise PlPruningError("num_classes is required for a network not built by build_model")
            num_classes = int(spec["num_classes"])
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        # The spec (not the module) goes into the checkpoint, so that
        # ``load_from_checkpoint(path)`` rebuilds the original architecture by itself.
        self.hparams["net"] = spec
        if input_shape is not None:
            self.example_input_array = torch.zeros(1, *input_shape)
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    @staticmethod
    def check_optimization(**settings: Any) -> None:
        """The optimizer settings given (``optimizer``, ``lr``, ``scheduler``), checked as
        the constructor checks them; for settings changed later (a fine-tuning LR).

        Raises:
            PlPruningError: an unknown optimizer or scheduler, or ``lr <= 0``."""
        if "optimizer" in settings:
            check_choice("optimizer", settings["optimizer"], OPTIMIZERS)
        if "scheduler" in settings:
            check_choice("scheduler", settings["scheduler"], SCHEDULERS)
        if "lr" in settings:
            check_number("lr", settings["lr"], 0.0, low_open=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.val_acc(logits, y)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("test_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.test_acc(logits, y)
        self.log("test_acc", self.test_acc)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resize the layers to a pruned checkpoint's shapes before its weights load.

        ``load_from_checkpoint`` and ``Trainer.fit/validate/test(ckpt_path=...)`` build
        the original, unpruned network from ``hparams["net"]``; Lightning then calls this
        hook before ``load_state_dict`` (and, for single-device and DDP strategies, before
        the model is wrapped and its optimizers are built), so the shapes are adapted from
        the state dict here. A LightningModule of your own does the same with one line::

            from pl_pruning.checkpoint import restore_pruned_shapes

            def on_load_checkpoint(self, checkpoint):
                restore_pruned_shapes(self, checkpoint["state_dict"])

        See :mod:`pl_pruning.checkpoint` for why shapes come from the state dict.
        """
        restore_pruned_shapes(self, checkpoint["state_dict"])

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                nesterov=hp.nesterov and hp.momentum > 0)
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return opt
        if hp.scheduler == "cosine":
            t_max = self.trainer.max_epochs if self._trainer is not None and self.trainer.max_epochs else 1
            sched: Any = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t_max))
        else:
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_size, gamma=hp.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
