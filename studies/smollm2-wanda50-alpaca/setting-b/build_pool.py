"""Build setting B's pool (issue 27, item 6): Alpaca rows and rows of the labelled T0 dev pool, mixed, so that
pruning can damage one kind of row more than another. Reads the shared data (`$PASER_DATA_DIR`, else
`../shared/data` beside the checkout; `paser.data.paths`) and writes the pool outside the repository's tracked
files (default `runs/data/alpaca-t0-mixed.jsonl.gz`, which config.yaml reads; `runs/` is ignored by git):

    python studies/smollm2-wanda50-alpaca/setting-b/build_pool.py [--out runs/data/alpaca-t0-mixed.jsonl.gz]

The pool: a seeded uniform draw of `--alpaca` Alpaca-52K rows with a non-empty output (ids `alpaca/<0-based
line>`, category `Alpaca`, dataset `alpaca`), and a seeded draw of `--t0-per-category` rows of each of the 8 T0
categories (`paser.data.heldout.even_draw`; ids, category, dataset and task as the file has them), shuffled
together. The same arguments give the same file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from paser.common.io import write_atomic  # noqa: E402
from paser.data.heldout import even_draw  # noqa: E402
from paser.data.paths import data_file  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"
T0_FILE = "recovery/t0_labelled_dev.jsonl.gz"
T0_FIELDS = ("id", "instruction", "input", "output", "category", "dataset", "task")
ALPACA_CATEGORY = "Alpaca"
DEFAULT_OUT = Path("runs/data/alpaca-t0-mixed.jsonl.gz")

Row = dict[str, Any]


def mixed_pool(
    alpaca: Sequence[Row], t0: Sequence[Row], alpaca_rows: int, t0_per_category: int, seed: int
) -> list[Row]:
    """The mixed pool from the rows of the two files (in file order): `alpaca_rows` Alpaca rows drawn uniformly
    among those with a non-empty output and `t0_per_category` T0 rows per category (`even_draw`), shuffled with
    `seed`. Refuses (ValueError) a draw larger than what a file holds."""
    usable = [line for line, row in enumerate(alpaca) if row.get("output", "").strip()]
    if alpaca_rows > len(usable):
        raise ValueError(f"{alpaca_rows} Alpaca rows asked for, {len(usable)} have an output")
    generator = random.Random(seed)
    lines = sorted(generator.sample(usable, alpaca_rows))
    rows = [
        {
            "id": f"alpaca/{line}",
            "instruction": alpaca[line]["instruction"],
            "input": alpaca[line].get("input", ""),
            "output": alpaca[line]["output"],
            "category": ALPACA_CATEGORY,
            "dataset": "alpaca",
        }
        for line in lines
    ]
    categories = [row["category"] for row in t0]
    wanted = t0_per_category * len(set(categories))
    chosen = even_draw(categories, wanted, seed)
    counts = {category: sum(categories[position] == category for position in chosen) for category in set(categories)}
    short = {category: count for category, count in counts.items() if count < t0_per_category}
    if short:
        raise ValueError(f"T0 categories with fewer than {t0_per_category} rows: {short}")
    rows += [{field: t0[position][field] for field in T0_FIELDS} for position in chosen]
    generator.shuffle(rows)
    return rows


def _read_jsonl_gz(path: Path) -> list[Row]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the pool file (default {DEFAULT_OUT})")
    parser.add_argument("--alpaca", type=int, default=660, help="Alpaca rows (default 660)")
    parser.add_argument("--t0-per-category", type=int, default=80, help="T0 rows per category (default 80, 640)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both draws and the shuffle (default 0)")
    parser.add_argument("--data-dir", help="the shared data folder (default: $PASER_DATA_DIR, else ../shared/data)")
    args = parser.parse_args(argv)
    alpaca = _read_jsonl_gz(data_file(ALPACA_FILE, args.data_dir))
    t0 = _read_jsonl_gz(data_file(T0_FILE, args.data_dir))
    rows = mixed_pool(alpaca, t0, args.alpaca, args.t0_per_category, args.seed)

    def write(staging: Path) -> None:
        with gzip.open(staging, "wt", encoding="utf-8") as stream:
            stream.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    write_atomic(args.out, write)
    print(f"{len(rows)} rows ({args.alpaca} Alpaca, {len(rows) - args.alpaca} T0) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
