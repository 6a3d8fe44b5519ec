import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_cifar_archive() -> Path:
    """The real CIFAR-10 JPEG archive beside the repository (as in CI)."""
    path = Path(os.environ.get("PL_PRUNING_CIFAR_ARCHIVE", SHARED_DATA / "cifar10-jpg.tar.gz"))
    if not path.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {path}")
    return path


@pytest.fixture(scope="session")
def cli() -> list[str]:
    """The command that runs the app, from the interpreter running the tests."""
    return [sys.executable, "-m", "pl_pruning"]
