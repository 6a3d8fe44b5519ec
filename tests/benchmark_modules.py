"""The benchmark scripts are not a package: their tests load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(path: str, name: str) -> ModuleType:
    """The module of ``benchmarks/<path>``, imported under ``name`` with its folder on
    ``sys.path``, as when it runs as a script (its imports of its neighbours work)."""
    file = ROOT / "benchmarks" / path
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
