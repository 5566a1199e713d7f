import pytest

from selection.atomic import write_atomic


def test_write_replaces_the_file_and_leaves_no_staging_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    assert write_atomic(target, lambda staging: staging.write_text("new")) == target
    assert target.read_text() == "new"
    assert sorted(path.name for path in target.parent.iterdir()) == ["out.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_staging_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def failing(staging):
        staging.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, failing)
    assert target.read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.txt"]
