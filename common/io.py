"""paser's file writes: atomic (readers see the old file or the whole new one, never a partial write), in JSON,
JSON lines or Parquet (`write_json`, `write_jsonl`, `write_parquet`), and the one file digest (`file_sha256`).

Every artifact paser writes (shards, markers, caches, outputs) goes through `write_atomic`, so a run
killed mid-write leaves nothing half-written behind for a rerun to trust. A staged file or folder is published
with the mode an ordinary `open()` or `mkdir` would give it under the umask (`give_ordinary_mode(s)`), not the
owner-only mode `mkstemp`/`mkdtemp` create it with, so a run folder is as readable as its umask says.
Light on purpose, like `paser.common.console`: every layer imports it, and pandas only reaches it as the table
`write_parquet` is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

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


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (`/proc/self/status`); elsewhere set
    and restored, with the strictest mask (0o077) in between, so a file another thread creates meanwhile is
    never more open than it should be."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def give_ordinary_mode(path: str | os.PathLike[str]) -> Path:
    """Set `path`'s mode to what an ordinary `open()` (0o666) or, for a folder, `mkdir` (0o777) gives under
    the umask: what a file staged by `mkstemp` (0o600) or a folder staged by `mkdtemp` (0o700) must get before
    it is renamed into place. Returns `path`."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())
    return path


def give_ordinary_modes(folder: str | os.PathLike[str]) -> Path:
    """`give_ordinary_mode` on `folder` and everything under it: for a folder staged by `mkdtemp` and filled by
    a library (`save_pretrained`, `save_to_disk`), whose own writers may stage files owner-only (safetensors
    does), before it is renamed into place. Returns `folder`."""
    folder = give_ordinary_mode(folder)
    for parent, folders, files in os.walk(folder):
        for name in (*folders, *files):
            give_ordinary_mode(Path(parent, name))
    return folder


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(staging_path)` on a fresh file beside `path`, then rename it onto `path`.

    Creates the parent folder. The file gets the mode an ordinary `open()` gives under the umask
    (`give_ordinary_mode`). The staging file is removed if `write` raises. The first write into a folder in a
    process also removes the staging files that dead writers left there (`sweep_stale_staging_files`).
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
        give_ordinary_mode(staging)
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


def write_json(path: Path, payload: Any) -> Path:
    """Write `payload` as indented JSON, atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=str)))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write one JSON object per line, atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as stream:
            for row in rows:
                stream.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    return write_atomic(path, write)


def write_parquet(path: Path, table: pd.DataFrame) -> Path:
    """Write a DataFrame as Parquet, atomically."""
    return write_atomic(path, lambda tmp: table.to_parquet(tmp, index=False))
