"""Every setting checked before the baseline trains, refused as one line naming the user's
key: exit status 2, no traceback, no results.json, no checkpoint (issue-level cases of
docs/RELIABILITY.md)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TESTS = Path(__file__).resolve().parents[1]


def _image_tree(root: Path, corrupt: bool) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    if corrupt:
        (root / "b" / "5.png").write_bytes(b"")  # a zero-byte image
    return root


def _env() -> dict:
    """The app finds the test's own network module (``model._target_=grouped_net.grouped_cnn``)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)}


GROUPED = ["model._target_=grouped_net.grouped_cnn"]
# (overrides, the key named, the rest of the line: after the key, or anywhere if it starts
# with "|"); {tmp} is the case's own folder.
CASES = [
    (["pruning.freeze.fraction=1.5"], "pruning.freeze.fraction", " must be in [0, 1), got 1.5"),
    (["pruning.statistics.num_bins=1"], "pruning.statistics.num_bins", " must be an integer >= 2, got 1"),
    (["pruning.fit.lr=0"], "pruning.fit.lr", " must be > 0, got 0"),
    (["pruning.fit.scheduler=steplr"], "pruning.fit.scheduler", " 'steplr'; choose one of: cosine, step"),
    (["pruning.controller.target_macs=1.5"], "pruning.controller.target_macs", " must be a fraction of the baseline's MACs in (0, 1]"),
    (["pruning.controller.target_macs=1k"], "pruning.controller.target_macs", "=1000 MACs per sample is out of reach"),
    (["pruning.controller.monitor=val_accuracy"], "pruning.controller.monitor", "='val_accuracy' is not logged; the logged keys are"),
    (["pruning.controller.ignored_layers=[net.nope]"], "pruning.controller.ignored_layers", " entry 'net.nope' matches no module"),
    (["pruning.controller.min_channels=1000"], "pruning.controller.min_channels", "=1000 leaves no filter to remove: the widest"),
    (["pruning=two_phase", "pruning.fit.max_epochs=3"], "pruning.fit.max_epochs", "=3 leaves no room for a step"),
    (["pruning.controller.mode=maximum"], "pruning.controller.mode", " 'maximum'; choose one of: max, min"),
    (GROUPED, "pruning.controller.on_unprunable", "|no layer can be pruned: 'net.0' may not be cut because it is coupled "
                                       "with the grouped convolution 'net.3' (groups=4)"),
    (["trainer.devices=0"], "trainer.devices", ": `Trainer(devices=0)` value is not a valid input"),
    (["data=image_folder", "data.root={tmp}/images", "data.image_size=0"], "data.image_size",
     " must be an integer >= 1, got 0"),
    (["data=image_folder", "data.root={tmp}/corrupt", "data.num_workers=0", "data.cache_dir={tmp}/cache"],
     "data.skip_undecodable", "=true to leave them out"),
    (["hydra.run.dir={tmp}/a_file"], "hydra.run.dir", "='{tmp}/a_file' is a file, not a folder"),
    (["hydra.run.dir=/proc/pl_prune_run"], "hydra.run.dir", "='/proc/pl_prune_run' cannot be written"),
]


@pytest.fixture(scope="module")
def refusals(cli, tmp_path_factory):
    """Every case started at once (most of each is the interpreter starting), then waited for."""
    runs = []
    for i, (overrides, _, _) in enumerate(CASES):
        tmp = tmp_path_factory.mktemp(f"case{i}")
        _image_tree(tmp / "images", corrupt=False)
        _image_tree(tmp / "corrupt", corrupt=True)
        (tmp / "a_file").write_text("not a folder")
        args = [o.format(tmp=tmp) for o in overrides]
        run_dir = tmp / "run"
        if not any(a.startswith("hydra.run.dir=") for a in args):
            args.insert(0, f"hydra.run.dir={run_dir}")
        proc = subprocess.Popen([*cli, "trainer.max_epochs=2", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=_env())
        runs.append((tmp, run_dir, proc))
    return [(tmp, run_dir, proc.communicate(timeout=900)[1], proc.returncode) for tmp, run_dir, proc in runs]


@pytest.mark.parametrize("case", range(len(CASES)), ids=[" ".join(o) for o, _, _ in CASES])
def test_refused_before_training_in_one_line_naming_the_key(refusals, case):
    tmp, run_dir, stderr, returncode = refusals[case]
    _, key, rest = CASES[case]
    assert returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("pl-prune: error: ")]
    assert len(errors) == 1, stderr[-3000:]
    rest = rest.format(tmp=tmp)
    assert (key in errors[0] and rest[1:] in errors[0]) if rest.startswith("|") else f"{key}{rest}" in errors[0], \
        errors[0]
    assert "Traceback" not in stderr
    assert not (run_dir / "results.json").exists()
    assert not list(run_dir.glob("**/*.ckpt"))  # refused before the baseline wrote a checkpoint


def test_a_grouped_convolution_network_runs_with_on_unprunable_warn_and_results_say_why(cli, tmp_path):
    proc = subprocess.run([*cli, f"hydra.run.dir={tmp_path}", *GROUPED, "pruning.controller.on_unprunable=warn",
                           "trainer.max_epochs=1", "pruning.fit.max_epochs=2", "pruning.controller.final_epochs=1",
                           "measure.latency=false"], capture_output=True, text=True, timeout=900, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing will be pruned: no layer can be pruned: 'net.0'" in proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pruning"]["preflight"]["can_prune"] is False
    assert "grouped convolution 'net.3'" in results["pruning"]["preflight"]["reason"]
    assert results["macs_reduction"] == 1.0


def _ok(cli, folder, *overrides):
    proc = subprocess.run([*cli, f"hydra.run.dir={folder}", "trainer.max_epochs=1", "pruning=none",
                           "measure.latency=false", *overrides], capture_output=True, text=True, timeout=900)
    return proc


def test_a_run_folder_of_another_configuration_is_refused_before_loading_its_checkpoint(cli, tmp_path):
    first = _ok(cli, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "run_config.yaml").is_file()
    (tmp_path / "results.json").unlink()
    other = _ok(cli, tmp_path, "model.width=0.5")
    assert other.returncode == 2, other.stderr[-3000:]
    errors = [line for line in other.stderr.splitlines() if line.startswith("pl-prune: error: ")]
    assert len(errors) == 1 and "Traceback" not in other.stderr
    assert (f"run folder '{tmp_path}' holds the checkpoints of another configuration (run_config.yaml): "
            "model.width=1.0 there, 0.5 here") in errors[0]
    assert "resuming from" not in other.stderr and not (tmp_path / "results.json").exists()
    # A folder without a record (an older version's): its checkpoint must fit the network.
    (tmp_path / "run_config.yaml").unlink()
    other = _ok(cli, tmp_path, "model.width=0.5")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "holds the checkpoints of another configuration: last.ckpt" not in other.stderr
    assert "checkpoints/last.ckpt='" in other.stderr and "does not fit this configuration's network" in other.stderr
