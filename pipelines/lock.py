"""One paser process per output folder: `paser select` and `paser run` hold `FOLDER/.lock` while they write.

Two processes writing one folder would both score everything and interleave their manifests and artifacts,
the last writer winning. The lock is an exclusive `flock` on the file, which the OS releases when its
process exits or dies, so a lock file left by a killed process blocks nothing: the next process takes it over.
The file records the holder's pid and command, for the message that refuses a second process.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

LOCK_FILE = ".lock"


class FolderLockedError(RuntimeError):
    """Another live process holds the output folder's lock; the message names the folder and that process."""


def _holder(handle: TextIO) -> str:
    """Who holds the lock, as its file says: `paser select (pid 123)`, or `another process` while unwritten."""
    handle.seek(0)
    try:
        record = json.loads(handle.read())
        return f"paser {record['command']} (pid {int(record['pid'])})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold `folder/.lock` for the duration, as `paser {command}`; yields the lock file's path.

    Refuses (FolderLockedError, naming the folder and the holder's command and pid) when another process, or
    another `folder_lock` in this one, holds it. A lock file whose process is gone is taken over. `folder`
    must exist.
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    # Opened without truncating: a refused process must not erase the holder's pid before reading it.
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(
                f"{folder} is in use by {_holder(handle)}, which holds {path}; "
                "wait for it to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": command}))
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
