"""The benchmark scripts are not a package: their tests load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # compare/run.py imports benchmarks/parking.py


def load_benchmark(path: str, name: str) -> ModuleType:
    """The module of ``benchmarks/<path>``, imported under ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
