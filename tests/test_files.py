"""Outputs are written atomically: the old file or the new one, never half of one."""

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
