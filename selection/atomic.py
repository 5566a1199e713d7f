"""Atomic file writes: readers see the old file or the whole new one, never a partial write.

Every artifact paser writes (shards, markers, caches, outputs) goes through `write_atomic`, so a run
killed mid-write leaves nothing half-written behind for a rerun to trust.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(staging_path)` on a fresh file beside `path`, then rename it onto `path`.

    Creates the parent folder. The staging file is removed if `write` raises. Returns `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(staging))
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path
