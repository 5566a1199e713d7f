"""Where the offline evaluation and corpus files live (`../shared/data` layout, see its README)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "PASER_DATA_DIR"

# A source checkout sits next to `shared/`; an installed package has no such sibling and needs the variable.
_CHECKOUT_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: `explicit`, else `$PASER_DATA_DIR`, else `../shared/data` beside the checkout.

    Refuses (FileNotFoundError naming where it looked and how to set it) when the directory does not exist.
    """
    if explicit is not None:
        chosen, origin = Path(explicit), "--data-dir"
    elif os.environ.get(DATA_DIR_ENV):
        chosen, origin = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    else:
        chosen, origin = _CHECKOUT_DEFAULT, "the default beside the checkout"
    if not chosen.is_dir():
        raise FileNotFoundError(
            f"data directory {chosen} (from {origin}) does not exist; pass --data-dir or set {DATA_DIR_ENV}"
        )
    return chosen


def data_file(relative: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The file `relative` (e.g. `eval/piqa_valid.jsonl`) in `data_dir(explicit)`; missing is an error naming it."""
    path = data_dir(explicit) / relative
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} is missing (see the data README for the expected layout)")
    return path
