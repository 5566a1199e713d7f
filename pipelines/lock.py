"""One paser process per output folder: `paser select` and `paser run` hold `FOLDER/.lock` while they write.

Two processes writing one folder would both score everything and interleave their manifests and artifacts,
the last writer winning. The lock is an exclusive `flock` on the file, which the OS releases when its
process exits or dies, so a lock file left by a killed process blocks nothing: the next process takes it over.
The file records the holder's pid and command, for the message that refuses a second process.

`output_folder` makes the folder and holds its lock, and takes back what a failed command added to it, so a
refusal leaves no empty folder or stray lock file behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
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
    with _locked(folder, path) as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": command}))
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _locked(folder: Path, path: Path) -> Iterator[TextIO]:
    """The lock file, opened and exclusively locked. A holder may remove the file while it holds it
    (`output_folder` taking back a failed command's files), so a lock taken on a file that is no longer at `path`
    is let go and the file now there is locked instead."""
    while True:
        # Opened without truncating: a refused process must not erase the holder's pid before reading it.
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise FolderLockedError(
                f"{folder} is in use by {holder}, which holds {path}; wait for it to finish or choose another --out"
            ) from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(handle.fileno()), current):
            break
        handle.close()
    with handle:
        yield handle


@contextmanager
def output_folder(folder: str | Path, command: str, keeps_work: Callable[[Path], bool]) -> Iterator[Path]:
    """Make `folder` (and its missing parents) and hold its lock for the duration, as `paser {command}`
    (`folder_lock`); yields the folder.

    When the body raises, the folder is left as it was found, unless `keeps_work(folder)` says it now holds work
    a rerun resumes (scores, finished stages): what the command added to it is removed, its lock file included,
    and so are the folder and the parents it made. So a refusal leaves no empty folder or stray `.lock` behind.
    Refuses what `folder_lock` refuses, having made nothing.
    """
    folder = Path(folder)
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    found = set(os.listdir(folder)) if folder.is_dir() else set()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(folder, command):
            try:
                yield folder
            except Exception:
                if not keeps_work(folder):
                    _remove_entries(folder, set(os.listdir(folder)) - found)
                raise
    except Exception:
        for path in made:  # deepest first; a folder that holds anything stays, and so do its parents
            if not path.is_dir() or any(path.iterdir()):
                break
            path.rmdir()
        raise


def _remove_entries(folder: Path, names: set[str]) -> None:
    for name in names:
        entry = folder / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
