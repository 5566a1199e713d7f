"""Out-of-distribution held-out sets built from the shared data: rows in the corpus schema, never copied
into the repository.

Each builder reads one file of the data directory (`paser.data.paths.data_dir`: `--data-dir`, else
`$PASER_DATA_DIR`, else `../shared/data` beside the checkout) and returns Alpaca rows (`id`, `instruction`,
`input`, `output`), which `paser.recovery.train.load_training_rows` reads like any corpus file:

- `gsm8k`: `eval/gsm8k_test.jsonl`, question -> answer (the worked solution, ending in `#### <number>`); the
  first LIMIT rows in file order (default: all 1,319). Ids `gsm8k/<0-based line>`.
- `humaneval`: `eval/HumanEval.jsonl.gz`, prompt -> canonical_solution; the first LIMIT tasks (default: all
  164). Ids are the task ids (`HumanEval/0`, ...).
- `t0`: `recovery/t0_labelled_dev.jsonl.gz`, instruction -> output, keeping `category`, `dataset` and
  `task` (so the run reports the NLL per category); a fixed seeded draw of LIMIT rows (default 800) spread
  evenly over the 8 categories, in file order. Ids are the file's own.

`paser run` builds them into its run folder for `evaluation.heldout: {NAME: builtin:NAME[:LIMIT]}`; by hand:

    paser data heldout gsm8k --out heldout/gsm8k.jsonl --limit 300
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paser.data.paths import data_file
from paser.selection.atomic import write_atomic
from paser.selection.corpus import read_rows

Row = dict[str, Any]
OUTPUT_SUFFIXES = (".jsonl", ".jsonl.gz")
T0_SEED = 0


@dataclass(frozen=True)
class HeldoutBuilder:
    """One built-in held-out set: its name, a one-line description, the data file it reads (relative to the
    data directory), its row count when no limit is given (None: every row) and `build(rows, limit) -> rows`,
    which turns the file's `(location, row)` pairs into corpus rows."""

    name: str
    description: str
    relative: str
    default_limit: int | None
    build: Callable[[Iterator[tuple[str, Row]], int | None], list[Row]] = field(repr=False)


def _first(rows: Iterator[tuple[str, Row]], limit: int | None) -> Iterator[tuple[int, Row]]:
    for index, (_, row) in enumerate(rows):
        if limit is not None and index >= limit:
            return
        yield index, row


def build_gsm8k(rows: Iterator[tuple[str, Row]], limit: int | None) -> list[Row]:
    """GSM8K test rows `{question, answer}` -> `{id, instruction: question, input: "", output: answer}`."""
    return [
        {"id": f"gsm8k/{index}", "instruction": row["question"], "input": "", "output": row["answer"]}
        for index, row in _first(rows, limit)
    ]


def build_humaneval(rows: Iterator[tuple[str, Row]], limit: int | None) -> list[Row]:
    """HumanEval rows -> `{id: task_id, instruction: prompt, input: "", output: canonical_solution}`."""
    return [
        {"id": row["task_id"], "instruction": row["prompt"], "input": "", "output": row["canonical_solution"]}
        for _, row in _first(rows, limit)
    ]


def build_t0(rows: Iterator[tuple[str, Row]], limit: int | None) -> list[Row]:
    """A seeded draw of `limit` labelled T0 rows, as even over the categories as their sizes allow, in file
    order. Each category's rows are shuffled once (seed `T0_SEED`) and the categories, in sorted order, give
    one row each in turn until `limit` rows are drawn (a category that runs out stops giving); no limit: every
    row."""
    table = [row for _, row in rows]
    if limit is None or limit >= len(table):
        chosen = list(range(len(table)))
    else:
        by_category: dict[str, list[int]] = {}
        for index, row in enumerate(table):
            by_category.setdefault(row["category"], []).append(index)
        generator = random.Random(T0_SEED)
        queues = []
        for category in sorted(by_category):
            indices = by_category[category]
            generator.shuffle(indices)
            queues.append(indices)
        chosen = []
        for turn in range(max(len(queue) for queue in queues)):
            chosen += [queue[turn] for queue in queues if turn < len(queue)][: limit - len(chosen)]
            if len(chosen) == limit:
                break
        chosen.sort()
    keep = ("id", "instruction", "input", "output", "category", "dataset", "task")
    return [{key: table[index][key] for key in keep if key in table[index]} for index in chosen]


HELDOUT_BUILDERS: dict[str, HeldoutBuilder] = {
    builder.name: builder
    for builder in (
        HeldoutBuilder("gsm8k", "GSM8K test: question -> worked answer", "eval/gsm8k_test.jsonl", None, build_gsm8k),
        HeldoutBuilder(
            "humaneval",
            "HumanEval: prompt -> canonical solution",
            "eval/HumanEval.jsonl.gz",
            None,
            build_humaneval,
        ),
        HeldoutBuilder(
            "t0",
            "labelled T0 prompts (8 categories), a seeded draw even over the categories",
            "recovery/t0_labelled_dev.jsonl.gz",
            800,
            build_t0,
        ),
    )
}


def get_heldout_builder(name: str) -> HeldoutBuilder:
    """The built-in held-out set `name`; refuses (ValueError) an unknown name, listing the known ones."""
    if name not in HELDOUT_BUILDERS:
        raise ValueError(f"unknown built-in held-out set {name!r}; known: {', '.join(sorted(HELDOUT_BUILDERS))}")
    return HELDOUT_BUILDERS[name]


def heldout_source(name: str, data_dir: str | Path | None = None) -> Path:
    """The data file built-in set `name` reads; refuses an unknown name (ValueError) and a missing data
    directory or file (FileNotFoundError naming it)."""
    return data_file(get_heldout_builder(name).relative, data_dir)


def heldout_rows(name: str, limit: int | None = None, data_dir: str | Path | None = None) -> list[Row]:
    """The rows of built-in set `name` (at most `limit`; None: the set's default), in the corpus schema.

    Refuses an unknown name or a `limit` below 1 (ValueError) and a missing data file (FileNotFoundError).
    """
    builder = get_heldout_builder(name)
    if limit is not None and limit < 1:
        raise ValueError(f"held-out set {name}: limit must be a positive number of rows, got {limit}")
    return builder.build(read_rows(heldout_source(name, data_dir)), builder.default_limit if limit is None else limit)


def write_heldout(name: str, out: str | Path, limit: int | None = None, data_dir: str | Path | None = None) -> int:
    """Write the rows of built-in set `name` to `out` (JSON Lines, gzipped when `out` ends in `.gz`),
    atomically; returns the number of rows written. Refuses what `heldout_rows` refuses and an `out` that is
    not `.jsonl` / `.jsonl.gz` (ValueError)."""
    out = Path(out)
    if not out.name.lower().endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"{out}: the output must be JSON Lines, named {' or '.join(OUTPUT_SUFFIXES)}")
    rows = heldout_rows(name, limit, data_dir)

    def write(staging: Path) -> None:
        opener = gzip.open if out.name.lower().endswith(".gz") else open
        with opener(staging, "wt", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    write_atomic(out, write)
    return len(rows)


def build_parser() -> argparse.ArgumentParser:
    """The `paser data heldout` arguments: NAME, --out, --limit, --data-dir."""
    known = "; ".join(f"{builder.name}: {builder.description}" for builder in HELDOUT_BUILDERS.values())
    parser = argparse.ArgumentParser(
        prog="paser data heldout", description="Write a built-in held-out set as corpus rows (JSON Lines). " + known
    )
    parser.add_argument("name", help=f"one of {', '.join(HELDOUT_BUILDERS)}")
    parser.add_argument("--out", required=True, type=Path, help="output file, .jsonl or .jsonl.gz")
    parser.add_argument("--limit", type=int, help="rows to keep (default: the set's own default)")
    parser.add_argument("--data-dir", dest="data_dir", help="offline data folder (default: $PASER_DATA_DIR)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`paser data heldout NAME --out F [--limit N] [--data-dir D]`: write the set, print one line."""
    args = build_parser().parse_args(argv)
    written = write_heldout(args.name, args.out, args.limit, args.data_dir)
    source = heldout_source(args.name, args.data_dir)
    print(f"[paser] held-out set {args.name}: wrote {written} rows from {source} to {args.out}")
    return 0
