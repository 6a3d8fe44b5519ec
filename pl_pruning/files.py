"""Output files written atomically: to a temporary file beside the target, then renamed
over it, so a run killed while writing leaves the previous file or none, never half a file.
The file ends with the mode a plain ``open(path, "w")`` gives (0666 less the umask), not the
temporary file's 0600: others on a shared cluster read what the umask lets them.

    with atomic_path("results.json") as tmp:
        tmp.write_text(text)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic"]


def _new_file_mode() -> int:
    """0666 less the process's umask (read by setting it and putting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in ``path``'s folder (same suffix); renamed to ``path`` when the
    block ends without an exception, removed otherwise."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _new_file_mode())  # mkstemp's 0600 otherwise
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
