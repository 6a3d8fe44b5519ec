"""Fresh-process half of the pruned-checkpoint round trip (run by tests/test_checkpoint.py).

Usage: ``python load_pruned_checkpoint.py DIR``. ``DIR`` holds what the test wrote:
``pruned.ckpt`` (a Lightning checkpoint of a pruned ImageClassifier), ``pruned.pt``
(:func:`save_pruned` of its network), ``reference.pt`` (inputs and the pruned model's
outputs) and ``module_kwargs.json`` (the arguments that built the original module).
Nothing about the pruned shapes is known here except what the files hold. Prints one
JSON line: max abs output differences per loading path, and the channel counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from pl_pruning.checkpoint import load_pruned
from pl_pruning.data import DigitsDataModule
from pl_pruning.measure import channel_counts
from pl_pruning.module import ImageClassifier


def diff(model: torch.nn.Module, x: torch.Tensor, ref: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x) - ref).abs().max())


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def main(folder: Path) -> None:
    torch.manual_seed(0)
    ckpt = folder / "pruned.ckpt"
    ref = torch.load(folder / "reference.pt")
    x, y = ref["inputs"], ref["outputs"]
    kwargs = json.loads((folder / "module_kwargs.json").read_text())
    out: dict = {}

    loaded = ImageClassifier.load_from_checkpoint(ckpt)
    out["load_from_checkpoint"] = diff(loaded, x, y)
    out["channels"] = channel_counts(loaded.net)

    dm = DigitsDataModule(batch_size=32)
    for stage in ("validate", "test"):
        module = ImageClassifier(**kwargs)  # the original, unpruned architecture
        getattr(trainer(limit_val_batches=2, limit_test_batches=2), stage)(
            module, datamodule=dm, ckpt_path=ckpt)
        out[stage] = diff(module, x, y)

    module = ImageClassifier(**kwargs)
    fit = trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1)
    fit.fit(module, datamodule=dm, ckpt_path=ckpt)  # resumes: optimizer state of pruned shapes
    out["fit_resumed_epochs"] = fit.current_epoch
    out["fit_channels"] = channel_counts(module.net)
    out["fit_finite"] = all(bool(torch.isfinite(p).all()) for p in module.parameters())

    out["load_pruned"] = diff(load_pruned(folder / "pruned.pt"), x, y)
    out["load_pruned_lightning_ckpt"] = diff(load_pruned(ckpt), x, y)
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
