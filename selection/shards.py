"""Result shards with completion markers: how long stages (scoring, embedding) survive a crash.

A shard folder holds `meta.json` (the fingerprint of the inputs that produced it) and, per shard `i`,
its data file `shard-0000i<suffix>` and then its marker `shard-0000i.done` (row count, first/last id and the
sha256 of the ids). A shard counts as finished only when its marker exists and describes exactly the rows
the current run puts there; a crash between data and marker leaves no marker, so the shard is recomputed.
Every file is written atomically. The local and the Ray engine write the same files, so either can resume
what the other started.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from paser.common.io import write_atomic


def ids_hash(ids: Sequence[str]) -> str:
    """sha256 hex digest of the ids, newline-joined."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def shard_bounds(rows: int, shard_size: int) -> list[tuple[int, int]]:
    """`(start, stop)` of every shard of `shard_size` rows over `rows` rows (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [(start, min(start + shard_size, rows)) for start in range(0, rows, shard_size)]


def _marker(ids: Sequence[str]) -> dict[str, Any]:
    return {"rows": len(ids), "first_id": ids[0], "last_id": ids[-1], "ids_sha256": ids_hash(ids)}


class ShardStore:
    """A folder of shards made from the inputs described by `fingerprint` (a JSON-serialisable dict).

    Opening creates the folder and its `meta.json`, or checks that an existing one was made from the same
    inputs: a folder written for other inputs is refused (RuntimeError naming the changed keys) unless
    `overwrite`, which deletes its shards first. `what` names the contents in error messages.
    """

    def __init__(
        self,
        folder: Path,
        fingerprint: dict[str, Any],
        *,
        suffix: str,
        what: str,
        overwrite: bool = False,
    ) -> None:
        self.folder, self.suffix, self.what = Path(folder), suffix, what
        self.fingerprint = fingerprint
        self._prepare(overwrite)

    def data_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}{self.suffix}"

    def marker_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.done"

    def is_done(self, index: int, ids: Sequence[str]) -> bool:
        """Whether shard `index` is finished for exactly `ids`; a marker for other rows is an error."""
        marker_path = self.marker_path(index)
        if not marker_path.exists():
            return False
        marker = json.loads(marker_path.read_text())
        if marker != _marker(ids):
            raise RuntimeError(f"{marker_path} does not describe the rows this run puts in shard {index}: {marker}")
        if not self.data_path(index).exists():
            raise RuntimeError(f"{marker_path} exists but its data file {self.data_path(index)} does not")
        return True

    def write(self, index: int, ids: Sequence[str], write: Callable[[Path], object]) -> None:
        """Write shard `index` through `write(staging_path)`, then its marker (both atomically)."""
        if not ids:
            raise ValueError(f"shard {index} of {self.what} has no rows")
        write_atomic(self.data_path(index), write)
        write_atomic(self.marker_path(index), lambda path: path.write_text(json.dumps(_marker(ids))))

    def _prepare(self, overwrite: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "meta.json"
        if meta_path.exists():
            recorded = json.loads(meta_path.read_text())
            if recorded == self.fingerprint:
                return
            if not overwrite:
                changed = sorted(
                    key
                    for key in self.fingerprint.keys() | recorded.keys()
                    if recorded.get(key) != self.fingerprint.get(key)
                )
                raise RuntimeError(
                    f"{self.folder} holds {self.what} of different inputs (changed: {', '.join(changed)}); "
                    "use a fresh shard directory, or pass overwrite=True to discard the old shards"
                )
            for stale in [*self.folder.glob("shard-*"), meta_path]:
                stale.unlink()
        elif any(self.folder.glob("shard-*")):
            raise RuntimeError(f"{self.folder} has shard files but no meta.json; use a fresh shard directory")
        write_atomic(meta_path, lambda path: path.write_text(json.dumps(self.fingerprint, indent=1)))
