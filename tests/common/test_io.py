import os
import stat
import tempfile
from pathlib import Path

import pytest

from paser.common.io import write_atomic


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


def _dead_pid() -> int:
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_dead_writers_staging_file_is_swept_by_the_next_write(tmp_path, monkeypatch):
    from paser.common import io

    monkeypatch.setattr(io, "_swept_folders", set())
    host = io._HOST
    dead = tmp_path / f".corpus.parquet-{host}-{_dead_pid()}-abc123.tmp"
    live = tmp_path / f".corpus.parquet-{host}-{os.getpid()}-def456.tmp"
    elsewhere = tmp_path / f".corpus.parquet-otherhost-{_dead_pid()}-ghi789.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for path in (dead, live, elsewhere, unrelated):
        path.write_bytes(b"half a file")
    write_atomic(tmp_path / "stats.json", lambda staging: staging.write_text("{}"))
    assert not dead.exists()
    assert live.exists() and elsewhere.exists() and unrelated.exists()


def test_staging_files_name_their_host_and_process(tmp_path):
    from paser.common import io

    seen = []
    write_atomic(tmp_path / "out.txt", lambda staging: seen.append(staging.name) or staging.write_text("x"))
    match = io._STAGING.match(seen[0])
    assert match and match["name"] == "out.txt" and match["host"] == io._HOST and int(match["pid"]) == os.getpid()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_a_written_file_gets_the_mode_an_ordinary_open_gives_under_the_umask(tmp_path, umask):
    from paser.common.io import current_umask, give_ordinary_modes

    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        written = write_atomic(tmp_path / "out.txt", lambda staging: staging.write_text("x"))
        staged = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700, with a 0600 file inside, as libraries leave them
        (staged / "weights").touch(mode=0o600)
        give_ordinary_modes(staged)
    finally:
        os.umask(previous)
    modes = [stat.S_IMODE(path.stat().st_mode) for path in (written, staged, staged / "weights")]
    assert modes == [0o666 & ~umask, 0o777 & ~umask, 0o666 & ~umask]


def test_json_lines_keep_text_as_written_one_row_a_line(tmp_path):
    from paser.common.io import write_json, write_jsonl

    rows = [{"text": "naïve café\nsecond line"}, {"path": Path("a/b")}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    lines = (tmp_path / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == ['{"text": "naïve café\\nsecond line"}', '{"path": "a/b"}']
    write_json(tmp_path / "stats.json", {"rows": 2})
    assert (tmp_path / "stats.json").read_text() == '{\n  "rows": 2\n}'
