"""Carry an unfinished benchmark run from one session's machine to the next.

A long run (a baseline's training, a comparison's fine-tune) works in ``outputs/<run>/``,
which git ignores and a fresh machine does not have. ``park`` copies each unfinished run's
resume point and its CSV logs to ``partial/<run>/`` (committed); ``unpark`` puts them back
before the same command runs again, so the run continues from its last epoch instead of
starting over; ``release`` drops the parked copy once the run has finished.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path


def park(outputs: Path, partial: Path, resume_points: Sequence[str], finished: Callable[[str], bool],
         also: Sequence[str] = ("csv",)) -> list[Path]:
    """Copy every unfinished run in ``outputs`` that has a resume point to ``partial``.

    ``resume_points``: files (relative to a run's folder) a rerun resumes from; ``also``:
    files or folders copied with them (the CSV logs, a checkpoint folder). A run for which
    ``finished(name)`` is true, or that has no resume point yet, is left alone."""
    parked = []
    for folder in sorted(p for p in outputs.glob("*") if p.is_dir()) if outputs.is_dir() else []:
        if finished(folder.name):
            continue
        if not any((folder / p).is_file() for p in resume_points):
            print(f"{folder.name}: no finished epoch yet, nothing to park")
            continue
        target = partial / folder.name
        if target.exists():
            shutil.rmtree(target)
        for rel in (*resume_points, *also):
            source, copy = folder / rel, target / rel
            if source.is_dir():
                shutil.copytree(source, copy, dirs_exist_ok=True)
            elif source.is_file():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy)
        print(f"parked {folder.name} in {target}")
        parked.append(target)
    return parked


def unpark(folder: Path, partial: Path, resume_points: Sequence[str]) -> bool:
    """Put a parked run back in its working ``folder``, unless the folder has a resume point
    of its own (newer than any parked one). Returns whether it did."""
    parked = partial / folder.name
    if not parked.is_dir() or any((folder / p).is_file() for p in resume_points):
        return False
    shutil.copytree(parked, folder, dirs_exist_ok=True)
    print(f"continuing from {parked}")
    return True


def release(partial: Path, name: str) -> None:
    """A finished run's parked copy is history: remove it."""
    parked = partial / name
    if parked.is_dir():
        shutil.rmtree(parked)
        print(f"removed {parked} (the run has finished)")
