"""benchmarks/parking.py: an unfinished benchmark run survives a fresh machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("parking", ROOT / "benchmarks" / "parking.py")
parking = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parking)


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


def test_parked_checkpoints_are_not_ignored_by_git():
    """``*.ckpt`` is ignored everywhere else: a parked run must still be committable."""
    import subprocess

    ignored = subprocess.run(["git", "check-ignore", "-q", "benchmarks/compare/partial/r_seed0/checkpoints/last.ckpt"],
                             cwd=ROOT, capture_output=True)
    elsewhere = subprocess.run(["git", "check-ignore", "-q", "benchmarks/compare/outputs/r_seed0/last.ckpt"],
                               cwd=ROOT, capture_output=True)
    assert (ignored.returncode, elsewhere.returncode) == (1, 0)
