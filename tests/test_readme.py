"""The README works as written: every ```python block runs (in a temporary folder), every
``pl-prune`` command composes into a config whose pruning callbacks build, and every
``pl_pruning.<name>`` it mentions exists.

A block that cannot run here (it needs a GPU or a cluster) is marked in the README with
``<!-- not-run: <why> -->`` on the line before it, and only such blocks are skipped.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

from pl_pruning.cli.app import pruning_callbacks

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(.+?)\s*-->$")


def _blocks(language: str) -> list[tuple[int, str, str | None]]:
    """``(first line number, code, not-run reason)`` of every fenced block in ``language``."""
    lines = README.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            reason = NOT_RUN.match(before)
            blocks.append((i + 2, "\n".join(lines[i + 1:end]), reason.group(1) if reason else None))
            i = end
        i += 1
    return blocks


def _python_params():
    for line, code, reason in _blocks("python"):
        marks = [pytest.mark.slow] if ".fit(" in code or "export_onnx(" in code else []
        if reason:
            marks.append(pytest.mark.skip(reason=f"README marks it not-run: {reason}"))
        yield pytest.param(code, id=f"README.md:{line}", marks=marks)


@pytest.mark.parametrize("code", list(_python_params()))
def test_python_block_runs_as_written(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102


def _commands() -> list[str]:
    """Every ``pl-prune`` command of the bash blocks, continuation lines joined."""
    commands = []
    for _, code, _ in _blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "pl-prune":
                commands.append(" ".join(shlex.quote(w) for w in words))
    return commands


def _one_job(args: list[str]) -> list[str]:
    """The overrides of the first job of a sweep (``a=x,y`` -> ``a=x``), without ``-m``."""
    parser = OverridesParser.create()
    overrides = []
    for arg in args:
        if arg.startswith("-"):
            continue
        override = parser.parse_override(arg)
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            arg = f"{arg.split('=', 1)[0]}={first}"
        overrides.append(arg)
    return overrides


def test_the_readme_has_commands_and_blocks():
    assert len(_commands()) >= 8 and len(_blocks("python")) >= 3


@pytest.mark.parametrize("command", _commands())
def test_pl_prune_command_composes_and_builds_its_callbacks(command):
    overrides = _one_job(shlex.split(command)[1:])
    with initialize_config_module(version_base="1.3", config_module="pl_pruning.conf"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    pruning_callbacks(cfg.pruning)  # a misspelt or bad pruning value fails here


def test_every_pl_pruning_name_in_the_readme_exists():
    names = sorted(set(re.findall(r"\bpl_pruning(?:\.[A-Za-z_]\w*)+", README.read_text())))
    assert "pl_pruning.measure.compare" in names
    for name in names:
        parts = name.split(".")
        obj = importlib.import_module(parts[0])
        for i, part in enumerate(parts[1:], start=1):
            if not hasattr(obj, part):  # a submodule not imported yet
                importlib.import_module(".".join(parts[:i + 1]))
            obj = getattr(obj, part)
