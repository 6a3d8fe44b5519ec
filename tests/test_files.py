"""Outputs are written atomically: the old file or the new one, never half of one."""

import os
import stat

import pytest

from pl_pruning.files import atomic_path, write_text_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "results.json", "old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_written_file_has_the_mode_the_umask_allows(tmp_path, umask, mode):
    """Not the temporary file's 0600: others on a shared cluster read the results."""
    old = os.umask(umask)
    try:
        text = write_text_atomic(tmp_path / "results.json", "{}")
        with atomic_path(tmp_path / "pruned_model.pt") as tmp:
            tmp.write_bytes(b"weights")
    finally:
        os.umask(old)
    for path in (text, tmp_path / "pruned_model.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
