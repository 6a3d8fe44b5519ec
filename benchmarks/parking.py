"""Carry an unfinished benchmark run from one session's machine to the next.

A long run (a baseline's training, a comparison's fine-tune) works in ``outputs/<run>/``,
which git ignores and a fresh machine does not have. ``park`` copies each unfinished run's
resume point and its CSV logs to ``partial/<run>/`` (committed); ``unpark`` puts them back
before the same command runs again, so the run continues from its last epoch instead of
starting over; ``release`` drops the parked copy once the run has finished.
"""

from __future__ import annotations

import shutil
import zipfile
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
    for rel in resume_points:
        if zipfile.is_zipfile(folder / rel):  # a checkpoint written by torch.save
            relocate(folder / rel, folder)
    print(f"continuing from {parked}")
    return True


def relocate(checkpoint: Path, folder: Path) -> None:
    """Point a Lightning checkpoint's ``ModelCheckpoint`` state at the run's new ``folder``.

    The state names the folder it was written in by absolute path; Lightning resumed
    elsewhere keeps only ``best_model_path`` (a file that is not there) and forgets the best
    score, so the first epoch after resuming would become "best". Every path under the old
    run folder (the ancestor of ``dirpath`` named like ``folder``) is rewritten under ``folder``."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    new, changed = str(folder.resolve()), False
    for cb in state.get("callbacks", {}).values():
        old = _old_folder(cb.get("dirpath") if isinstance(cb, dict) else None, folder.name)
        if old is None or old == new:
            continue

        def moved(path, old=old):
            return new + path[len(old):] if isinstance(path, str) and path.startswith(old + "/") else path

        for key, value in list(cb.items()):
            cb[key] = {moved(k): v for k, v in value.items()} if key == "best_k_models" else moved(value)
        changed = True
    if changed:
        torch.save(state, checkpoint)


def _old_folder(dirpath: str | None, name: str) -> str | None:
    if not isinstance(dirpath, str):
        return None
    return next((str(p) for p in (Path(dirpath), *Path(dirpath).parents) if p.name == name), None)


def release(partial: Path, name: str) -> None:
    """A finished run's parked copy is history: remove it."""
    parked = partial / name
    if parked.is_dir():
        shutil.rmtree(parked)
        print(f"removed {parked} (the run has finished)")
