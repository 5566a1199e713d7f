"""The per-token JSD the scorer can keep beside its scores (`DegradationConfig.keep_token_jsd`), for recovery's
token-level weighting (`paser.recovery.token_weights`).

Degradation scoring computes `JSD(p_o,t || p_p,t)` at every response token position t of every row and reduces it
to the row's mean (`cds`). Kept, the per-token values go into one `.npz` file per score shard, beside the shard's
Parquet file (`shard-00000.token_jsd.npz`), holding three arrays:

- `ids`: the rows' ids (unicode), in the shard's order;
- `offsets`: int64, rows + 1 values: row i's tokens are `values[offsets[i]:offsets[i + 1]]`;
- `values`: float16, the JSD (nats, in [0, ln 2]) at each response token, in token order.

Disk cost: 2 bytes per response token (float16), plus 8 bytes and the id per row: about 400 MB for a million rows
of 200-token responses (the scores table itself is ~60 bytes a row). float16 keeps ~3 significant digits (a
relative error of at most 2^-11 on values above 6e-5, an absolute one of at most 3e-8 below): plenty for a weight,
not for re-deriving `cds` bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from paser.common.io import write_atomic

SUFFIX = ".token_jsd.npz"


def token_jsd_path(data_path: Path) -> Path:
    """The per-token JSD file beside a score shard's data file (`shard-00000.parquet` → `shard-00000.token_jsd.npz`)."""
    return data_path.with_name(data_path.name.split(".", 1)[0] + SUFFIX)


def write_token_jsd(path: Path, ids: Sequence[str], values: Sequence[np.ndarray]) -> Path:
    """Write the rows' per-token JSD (`values[i]` for row `ids[i]`) as float16, atomically; returns `path`."""
    if len(ids) != len(values):
        raise ValueError(f"{len(ids)} ids but {len(values)} per-token JSD arrays")
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in values], out=offsets[1:])
    flat = np.concatenate([np.asarray(row, dtype=np.float16) for row in values]) if values else np.zeros(0, np.float16)

    def write(staging: Path) -> None:
        with staging.open("wb") as stream:
            np.savez(stream, ids=np.array(list(ids), dtype=str), offsets=offsets, values=flat)

    return write_atomic(Path(path), write)


def read_token_jsd_file(path: Path) -> dict[str, np.ndarray]:
    """One per-token JSD file as {row id: float16 values}. Refuses (ValueError naming the file) a file without the
    three arrays or whose offsets do not cover its values."""
    with np.load(path, allow_pickle=False) as data:
        if not {"ids", "offsets", "values"} <= set(data.files):
            raise ValueError(f"{path}: not a per-token JSD file (needs arrays ids, offsets, values)")
        ids, offsets, values = data["ids"], data["offsets"], data["values"]
    if len(offsets) != len(ids) + 1 or offsets[0] != 0 or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{path}: offsets do not split the {len(values)} values into {len(ids)} rows")
    return {str(row_id): values[offsets[i] : offsets[i + 1]] for i, row_id in enumerate(ids)}


def read_token_jsd(path: str | Path) -> dict[str, np.ndarray]:
    """The kept per-token JSD as {row id: float16 values}, from one `.npz` file or from a score shard folder (every
    `shard-*.token_jsd.npz` in it, e.g. `paser select`'s `OUT/score_shards`). Refuses (ValueError) a path that does
    not exist, a folder without such files, and an id found twice."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(f"shard-*{SUFFIX}"))
        if not files:
            raise ValueError(f"{path}: no shard-*{SUFFIX} files; score with scoring.keep_token_jsd=true")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"per-token JSD not found: {path}")
    kept: dict[str, np.ndarray] = {}
    for file in files:
        for row_id, values in read_token_jsd_file(file).items():
            if row_id in kept:
                raise ValueError(f"{file}: row {row_id!r} has per-token JSD in more than one file")
            kept[row_id] = values
    return kept
