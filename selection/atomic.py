"""Atomic file writes: readers see the old file or the whole new one, never a partial write.

Every artifact paser writes (shards, markers, caches, outputs) goes through `write_atomic`, so a run
killed mid-write leaves nothing half-written behind for a rerun to trust.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

# Staging files are named `.<name>-<host>-<pid>-<random>.tmp`, so a later writer can tell a dead writer's
# leftovers (same host, no such process) from a live one's.
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
_STAGING = re.compile(r"^\.(?P<name>.+)-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[^-]+\.tmp$")
_swept_folders: set[Path] = set()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_staging_files(folder: Path) -> list[Path]:
    """Remove staging files of `write_atomic` in `folder` left by writers on this host that no longer run (a
    killed process never reaches its `finally`); returns what was removed. A live writer's staging file, one
    from another host (a shared file system) and any other file are left alone."""
    removed = []
    for entry in Path(folder).glob(".*.tmp"):
        match = _STAGING.match(entry.name)
        if match is None or match["host"] != _HOST or _process_alive(int(match["pid"])):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:  # another sweeper was first
            continue
        removed.append(entry)
    return removed


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(staging_path)` on a fresh file beside `path`, then rename it onto `path`.

    Creates the parent folder. The staging file is removed if `write` raises. The first write into a folder
    in a process also removes the staging files that dead writers left there (`sweep_stale_staging_files`).
    Returns `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    if folder not in _swept_folders:
        sweep_stale_staging_files(folder)
        _swept_folders.add(folder)
    prefix = f".{path.name}-{_HOST}-{os.getpid()}-"
    handle, staging = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(staging))
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes, read in 8 MiB blocks: the one file digest of paser's records and hashes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
