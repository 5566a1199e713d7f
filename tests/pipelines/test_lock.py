import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paser.pipelines.lock import FolderLockedError, folder_lock

REPOSITORY = Path(__file__).resolve().parents[2]
HOLD_THE_LOCK = """
import sys, time
from paser.pipelines.lock import folder_lock
with folder_lock(sys.argv[1], "select"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_held_by_a_live_process_refuses_a_second_one_naming_the_folder_and_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path)], cwd=REPOSITORY, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError) as refused, folder_lock(tmp_path, "run"):
            pytest.fail("took a lock another process holds")
        assert str(refused.value) == (
            f"{tmp_path} is in use by paser select (pid {holder.pid}), which holds {tmp_path / '.lock'}; "
            "wait for it to finish or choose another --out"
        )
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path, "run") as path:  # the killed holder's lock blocks nothing
        assert json.loads(path.read_text()) == {"pid": os.getpid(), "command": "run"}


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "command": "select"}))
    with folder_lock(tmp_path, "select") as path:
        assert json.loads(path.read_text()) == {"pid": os.getpid(), "command": "select"}


def test_a_second_lock_in_the_same_process_is_refused_and_the_lock_is_released_on_exit(tmp_path):
    with (
        folder_lock(tmp_path, "run"),
        pytest.raises(FolderLockedError, match="in use by paser run"),
        folder_lock(tmp_path, "run"),
    ):
        pass
    with folder_lock(tmp_path, "run"):
        pass


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_the_lock_file_gets_the_mode_an_ordinary_open_gives_under_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with folder_lock(tmp_path, "run") as path:
            mode = path.stat().st_mode & 0o777
    finally:
        os.umask(previous)
    assert oct(mode) == oct(0o666 & ~umask)
