"""benchmarks/parking.py: an unfinished benchmark run survives a fresh machine."""

from __future__ import annotations

from pathlib import Path

from benchmark_modules import ROOT, load_benchmark

parking = load_benchmark("parking.py", "parking")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_park_copies_unfinished_runs_and_unpark_puts_them_back(tmp_path):
    outputs, partial = tmp_path / "outputs", tmp_path / "partial"
    _write(outputs / "running" / "checkpoints" / "last.ckpt", "epoch 7")
    _write(outputs / "running" / "checkpoints" / "epoch005-val_acc0.8600.ckpt", "best")
    _write(outputs / "running" / "csv" / "version_0" / "metrics.csv", "epoch,val_acc\n")
    _write(outputs / "running" / "results_big.bin", "not needed to resume")
    _write(outputs / "done" / "checkpoints" / "last.ckpt", "epoch 59")
    _write(outputs / "fresh" / "csv" / "version_0" / "metrics.csv", "")  # no epoch finished yet

    parked = parking.park(outputs, partial, ["checkpoints/last.ckpt"], finished=lambda name: name == "done",
                          also=["checkpoints", "csv"])

    assert parked == [partial / "running"]
    assert sorted(p.relative_to(partial).as_posix() for p in partial.rglob("*") if p.is_file()) == [
        "running/checkpoints/epoch005-val_acc0.8600.ckpt", "running/checkpoints/last.ckpt",
        "running/csv/version_0/metrics.csv"]

    fresh_machine = tmp_path / "fresh_outputs" / "running"
    assert parking.unpark(fresh_machine, partial, ["checkpoints/last.ckpt"])
    assert (fresh_machine / "checkpoints" / "last.ckpt").read_text() == "epoch 7"
    assert (fresh_machine / "checkpoints" / "epoch005-val_acc0.8600.ckpt").read_text() == "best"

    # A folder with a resume point of its own is newer than the parked copy: left as it is.
    _write(fresh_machine / "checkpoints" / "last.ckpt", "epoch 9")
    assert not parking.unpark(fresh_machine, partial, ["checkpoints/last.ckpt"])
    assert (fresh_machine / "checkpoints" / "last.ckpt").read_text() == "epoch 9"

    parking.release(partial, "running")
    assert not (partial / "running").exists()
    assert not parking.unpark(tmp_path / "elsewhere" / "running", partial, ["checkpoints/last.ckpt"])


def test_parking_again_replaces_the_older_copy(tmp_path):
    outputs, partial = tmp_path / "outputs", tmp_path / "partial"
    _write(outputs / "r_seed0" / "pruning_checkpoints" / "last.ckpt", "epoch 3")
    _write(partial / "r_seed0" / "pruning_checkpoints" / "stale.ckpt", "from an older session")
    parking.park(outputs, partial, ["pruning_checkpoints/last.ckpt", "checkpoints/last.ckpt"], lambda name: False)
    assert [p.name for p in (partial / "r_seed0").rglob("*.ckpt")] == ["last.ckpt"]
    assert parking.park(tmp_path / "no_outputs", partial, ["checkpoints/last.ckpt"], lambda name: False) == []


def test_parked_checkpoints_and_logs_are_not_ignored_by_git():
    """``*.ckpt`` and ``lightning_logs/`` are ignored everywhere else: a parked run (its
    checkpoint, and the CSV logs its validation curve is read from; an external method's
    CSVLogger writes them under ``lightning_logs/``) must still be committable."""
    import subprocess

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, capture_output=True).returncode == 0

    parked = ["benchmarks/compare/partial/r_seed0/checkpoints/last.ckpt",
              "benchmarks/compare/partial/r_seed0/csv/lightning_logs/version_1/metrics.csv",
              "benchmarks/converged/partial/r/csv/version_0/metrics.csv"]
    elsewhere = ["benchmarks/compare/outputs/r_seed0/last.ckpt", "lightning_logs/version_0/metrics.csv"]
    assert [ignored(p) for p in parked + elsewhere] == [False] * len(parked) + [True] * len(elsewhere)


def test_a_run_resumed_in_another_checkout_keeps_its_best_epoch(tmp_path):
    """A parked Lightning checkpoint names its folder by absolute path; unparked into another
    checkout, the resumed run must still know its best epoch and score (not take the first
    epoch after resuming as the best) and find that epoch's file."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    class Scored(L.LightningModule):
        """Validation score per epoch from a fixed list: best at epoch 1, lower after."""

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, _):
            self.log("score", [0.5, 0.9, 0.6, 0.7][self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)

    def fit(folder: Path, epochs: int, ckpt_path=None) -> ModelCheckpoint:
        best = ModelCheckpoint(dirpath=folder / "checkpoints", monitor="score", mode="max", save_last=True)
        L.Trainer(max_epochs=epochs, callbacks=[best], logger=False, enable_progress_bar=False,
                  enable_model_summary=False).fit(Scored(), data, data, ckpt_path=ckpt_path)
        return best

    first, second = tmp_path / "machine_a" / "outputs", tmp_path / "machine_b" / "outputs"
    fit(first / "run", epochs=2)
    parking.park(first, tmp_path / "partial", ["checkpoints/last.ckpt"], finished=lambda name: False,
                 also=["checkpoints"])
    assert parking.unpark(second / "run", tmp_path / "partial", ["checkpoints/last.ckpt"])

    best = fit(second / "run", epochs=4, ckpt_path=second / "run" / "checkpoints" / "last.ckpt")
    assert best.best_model_score == 0.9  # epoch 1, before parking; not epoch 2's 0.6
    assert Path(best.best_model_path).parent == second / "run" / "checkpoints"
    assert Path(best.best_model_path).is_file()
