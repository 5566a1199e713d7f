"""A cheap identity of a checkpoint folder, for keying caches of what a model computed (rejected answers,
stage hashes of `paser run`)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def checkpoint_identity(path: str | Path) -> str | None:
    """A cheap identity of a local checkpoint folder: sha256 over its config, pruning record and weight files'
    names, sizes and modification times, so re-pruning into the same folder invalidates cached answers.
    None for a hub id (not a local folder)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if file.name in ("config.json", "pruning.json"):
            digest.update(file.name.encode() + file.read_bytes())
        elif file.suffix in (".safetensors", ".bin"):
            status = file.stat()
            digest.update(f"{file.name}:{status.st_size}:{status.st_mtime_ns}".encode())
    return digest.hexdigest()
