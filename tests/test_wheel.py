"""The built wheel: it holds every module and every Hydra config of the tree (the configs,
kept in ``conf/`` at the repository root, as the package ``pl_pruning.conf``), and once
installed in a fresh virtual environment ``pl-prune`` composes its config and runs from it,
away from the source tree.

The fresh environment sees the test interpreter's dependencies (torch, Lightning, Hydra)
through a ``.pth`` file instead of installing them again; only the wheel goes into it."""

import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A real run of a few seconds: one baseline epoch on digits, one pruning step, nothing timed.
SHORT_RUN = ["experiment=digits_quick", "trainer.max_epochs=1", "pruning.fit.max_epochs=3",
             "pruning.controller.final_epochs=0", "pruning.controller.max_steps=1", "measure.latency=false", "callbacks=none", "logger=none"]


def _run(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the project's files (no build folders in the tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("pl_pruning", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(dist), str(src)], cwd=src)
    (path,) = dist.glob("pl_pruning-*.whl")
    return path


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed; its dependencies are the test
    interpreter's, seen through a .pth file."""
    env = tmp_path_factory.mktemp("venv")
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=env).strip())
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: the test interpreter's own pl_pruning (seen through the .pth) is left alone.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
          "--no-build-isolation", "--ignore-installed", "--no-index", str(wheel)], cwd=env)
    return env


def test_the_wheel_holds_every_module_and_config_of_the_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pl_pruning").rglob("*.py")}
    configs = {"pl_pruning/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "conf").rglob("*")
               if p.suffix in (".yaml", ".py")}
    assert "pl_pruning/conf/config.yaml" in configs and "pl_pruning/conf/experiment/digits_quick.yaml" in configs
    assert modules | configs <= names, sorted((modules | configs) - names)


@pytest.mark.slow
def test_the_installed_wheel_composes_its_config_and_runs_away_from_the_tree(fresh_env, tmp_path):
    where = _run([str(fresh_env / "bin" / "python"), "-c",
                  "import pl_pruning, pl_pruning.conf; print(pl_pruning.__file__); print(pl_pruning.conf.__file__)"],
                 cwd=tmp_path).split()
    for path in where:
        assert Path(path).resolve().is_relative_to(fresh_env.resolve()), where
    assert Path(where[1]).parent.name == "conf" and Path(where[1]).parent.parent.name == "pl_pruning"

    pl_prune = str(fresh_env / "bin" / "pl-prune")
    job = _run([pl_prune, "--cfg", "job", "experiment=digits_quick"], cwd=tmp_path)
    assert "name: small_cnn" in job and "max_epochs: 5" in job

    _run([pl_prune, f"hydra.run.dir={tmp_path / 'run'}", *SHORT_RUN], cwd=tmp_path)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["model"]["name"] == "small_cnn"
    assert results["pruned"]["macs"] < results["baseline"]["macs"]
