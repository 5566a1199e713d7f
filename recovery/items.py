"""Per-item evaluation values, kept beside `metrics.json` in `items.npz` so that intervals can resample the test
items (`paser.pipelines.analysis.uncertainty`), not only the seeds.

An evaluation record carries them as an `items` dict of equally long lists next to the aggregate they add up to:

    record["tasks"]["wikitext2"]["items"] = {"nll_sum": [...], "tokens": [...]}   # one entry per window
    record["tasks"]["piqa"]["items"]      = {"acc": [...], "acc_norm": [...]}      # one entry per question
    record["heldout"]["items"]            = {"nll_sum": [...], "tokens": [...]}   # one entry per held-out row

`split_items` takes them out of the record (metrics.json stays small and readable) into flat arrays named
`{source}.{component}`: `wikitext2.nll_sum`, `piqa.acc`, `heldout.tokens`. A source is a task name or a top-level
key of the record (`heldout`; a named held-out set recorded as `heldout_<name>` becomes source `heldout_<name>`,
the prefix of its `heldout_<name>_nll` metric). Items are in a fixed order (windows in text order, questions by
document id, rows in file order), so the same source of two evaluations lines up item by item.

No torch here: the report reads these files without loading a model stack.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from paser.common.io import write_atomic

ITEMS_FILE = "items.npz"


def split_items(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(a copy of `record` without any `items`, the items as float64 arrays keyed `{source}.{component}`).

    Items are taken from every task record and from every top-level dict of the record that has them. The
    record passed in is not changed. Refuses (ValueError) a source whose components differ in length.
    """
    stripped = copy.deepcopy(record)
    holders = [(task, result) for task, result in stripped.get("tasks", {}).items() if isinstance(result, dict)]
    holders += [(key, value) for key, value in stripped.items() if key != "tasks" and isinstance(value, dict)]
    arrays: dict[str, np.ndarray] = {}
    for source, holder in holders:
        items = holder.pop("items", None)
        if not items:
            continue
        lengths = {name: len(values) for name, values in items.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"items of {source} differ in length: {lengths}")
        for name, values in items.items():
            arrays[f"{source}.{name}"] = np.asarray(values, dtype=np.float64)
    return stripped, arrays


def write_items(items: dict[str, np.ndarray], out_dir: str | Path) -> Path:
    """Write `items` (from `split_items`) to `out_dir/items.npz` atomically (compressed); returns the path."""

    def write(path: Path) -> None:
        with path.open("wb") as stream:
            np.savez_compressed(stream, **items)

    return write_atomic(Path(out_dir) / ITEMS_FILE, write)


def read_items(eval_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of `eval_dir/items.npz`; empty when the evaluation kept no items (written before they were
    recorded, or nothing per item to keep)."""
    path = Path(eval_dir) / ITEMS_FILE
    if not path.is_file():
        return {}
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}
