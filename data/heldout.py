"""Held-out sets built from the shared data: rows in the corpus schema, never copied into the repository.

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
- `t0_labels`: the same file's label-style rows, whose reference is a short label: categories Sentiment, Topic
  Classification and Paraphrase Identification, references of at most `LABEL_WORDS` words, prompts of at most
  `PROMPT_CHARACTERS` characters; a seeded draw (seed `T0_LABELS_SEED`) of LIMIT rows (default 96) even over
  the three categories, in file order. The prompts of `paser eval`'s `gen_labels` task.
- `alpaca_longform`: `recovery/alpaca_52k.jsonl.gz` rows with a long reference (at least `LONG_REFERENCE`
  characters) and a prompt of at most `PROMPT_CHARACTERS` characters; a seeded uniform draw (seed
  `ALPACA_LONGFORM_SEED`) of LIMIT rows (default 64), in file order. Ids `alpaca/<0-based line>`. The prompts of
  `paser eval`'s `gen_longform` task.

Every builder leaves out the rows whose prompt is in `exclude` (`prompt_key`: instruction and input, case and
whitespace folded) before it draws, so a set can be built apart from a training pool (`paser run` passes its
selection pool's prompts to the generation tasks); the draw is seeded, so the same pool gives the same rows.

`paser run` builds them into its run folder for `evaluation.heldout: {NAME: builtin:NAME[:LIMIT]}`; by hand:

    paser data heldout gsm8k --out heldout/gsm8k.jsonl --limit 300
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paser.common.io import write_atomic
from paser.common.registry import Registry
from paser.data.paths import data_file
from paser.selection.corpus import read_rows

Row = dict[str, Any]
OUTPUT_SUFFIXES = (".jsonl", ".jsonl.gz")
T0_SEED = 0
T0_LABELS_SEED = 1
ALPACA_LONGFORM_SEED = 0
LABEL_CATEGORIES = ("Paraphrase Identification", "Sentiment", "Topic Classification")
LABEL_WORDS = 5
# Prompts longer than this (characters, instruction and input) are left out of the generation sets: decoding
# cost grows with the prompt, and a few IMDb reviews run to thousands of characters.
PROMPT_CHARACTERS = 1200
LONG_REFERENCE = 600


@dataclass(frozen=True)
class HeldoutBuilder:
    """One built-in held-out set: its name, a one-line description, the data file it reads (relative to the
    data directory), its row count when no limit is given (None: every row) and `build(rows, limit, exclude) -> rows`,
    which turns the file's `(location, row)` pairs into corpus rows, leaving out the prompts in `exclude`."""

    name: str
    description: str
    relative: str
    default_limit: int | None
    build: Callable[[Iterator[tuple[str, Row]], int | None, Collection[str]], list[Row]] = field(repr=False)


def prompt_key(instruction: str, input_text: str = "") -> str:
    """A row's prompt as `exclude` compares it: instruction and input joined, casefolded, every run of whitespace
    one space, so the same prompt matches across files that differ only in spacing or case."""
    return " ".join(f"{instruction}\n{input_text}".casefold().split())


def build_gsm8k(rows: Iterator[tuple[str, Row]], limit: int | None, exclude: Collection[str] = ()) -> list[Row]:
    """GSM8K test rows `{question, answer}` -> `{id, instruction: question, input: "", output: answer}`, the
    first `limit` not in `exclude`."""
    built = (
        {"id": f"gsm8k/{index}", "instruction": row["question"], "input": "", "output": row["answer"]}
        for index, (_, row) in enumerate(rows)
    )
    return _first_kept(built, limit, exclude)


def build_humaneval(rows: Iterator[tuple[str, Row]], limit: int | None, exclude: Collection[str] = ()) -> list[Row]:
    """HumanEval rows -> `{id: task_id, instruction: prompt, input: "", output: canonical_solution}`, the first
    `limit` not in `exclude`."""
    built = (
        {"id": row["task_id"], "instruction": row["prompt"], "input": "", "output": row["canonical_solution"]}
        for _, row in rows
    )
    return _first_kept(built, limit, exclude)


def _first_kept(rows: Iterable[Row], limit: int | None, exclude: Collection[str]) -> list[Row]:
    return list(itertools.islice((row for row in rows if not _excluded(row, exclude)), limit))


def _excluded(row: Row, exclude: Collection[str]) -> bool:
    return bool(exclude) and prompt_key(row["instruction"], row.get("input") or "") in exclude


def even_draw(categories: Sequence[str], limit: int | None, seed: int) -> list[int]:
    """Positions (sorted) of a seeded draw of `limit` items as even over `categories` (one label per item) as
    their sizes allow: each category's positions are shuffled once (`random.Random(seed)`, categories in sorted
    order) and the categories, in sorted order, give one item each in turn until `limit` are drawn (a category
    that runs out stops giving). No limit, or one at least the item count: every position."""
    if limit is None or limit >= len(categories):
        return list(range(len(categories)))
    by_category: dict[str, list[int]] = {}
    for position, category in enumerate(categories):
        by_category.setdefault(category, []).append(position)
    generator = random.Random(seed)
    queues = []
    for category in sorted(by_category):
        positions = by_category[category]
        generator.shuffle(positions)
        queues.append(positions)
    chosen: list[int] = []
    for turn in range(max(len(queue) for queue in queues)):
        chosen += [queue[turn] for queue in queues if turn < len(queue)][: limit - len(chosen)]
        if len(chosen) == limit:
            break
    return sorted(chosen)


_T0_FIELDS = ("id", "instruction", "input", "output", "category", "dataset", "task")


def build_t0(rows: Iterator[tuple[str, Row]], limit: int | None, exclude: Collection[str] = ()) -> list[Row]:
    """A seeded draw (`even_draw`, seed `T0_SEED`) of `limit` labelled T0 rows not in `exclude`, as even over the
    categories as their sizes allow, in file order; no limit: every row."""
    table = [row for _, row in rows if not _excluded(row, exclude)]
    chosen = even_draw([row["category"] for row in table], limit, T0_SEED)
    return [{key: table[index][key] for key in _T0_FIELDS if key in table[index]} for index in chosen]


def _short_prompt(row: Row) -> bool:
    return len(row["instruction"]) + len(row.get("input") or "") <= PROMPT_CHARACTERS


def build_t0_labels(rows: Iterator[tuple[str, Row]], limit: int | None, exclude: Collection[str] = ()) -> list[Row]:
    """The label-style T0 rows (categories `LABEL_CATEGORIES`, a reference of 1 to `LABEL_WORDS` words, a
    prompt of at most `PROMPT_CHARACTERS` characters) not in `exclude`: a seeded draw (`even_draw`, seed
    `T0_LABELS_SEED`) of `limit` rows even over the three categories, in file order."""
    table = [
        row
        for _, row in rows
        if row["category"] in LABEL_CATEGORIES
        and 1 <= len(row["output"].split()) <= LABEL_WORDS
        and _short_prompt(row)
        and not _excluded(row, exclude)
    ]
    chosen = even_draw([row["category"] for row in table], limit, T0_LABELS_SEED)
    return [{key: table[index][key] for key in _T0_FIELDS if key in table[index]} for index in chosen]


def build_alpaca_longform(
    rows: Iterator[tuple[str, Row]], limit: int | None, exclude: Collection[str] = ()
) -> list[Row]:
    """Alpaca rows with a reference of at least `LONG_REFERENCE` characters and a prompt of at most
    `PROMPT_CHARACTERS`, not in `exclude`: a seeded uniform draw (seed `ALPACA_LONGFORM_SEED`) of `limit`, in
    file order. Ids `alpaca/<0-based line>`."""
    table = [
        {"id": f"alpaca/{index}", "instruction": row["instruction"], "input": row["input"], "output": row["output"]}
        for index, (_, row) in enumerate(rows)
        if len(row["output"]) >= LONG_REFERENCE and _short_prompt(row)
    ]
    table = [row for row in table if not _excluded(row, exclude)]
    if limit is None or limit >= len(table):
        return table
    return [table[index] for index in sorted(random.Random(ALPACA_LONGFORM_SEED).sample(range(len(table)), limit))]


HELDOUT_BUILDERS: Registry[HeldoutBuilder] = Registry("built-in held-out set")
for _builder in (
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
    HeldoutBuilder(
        "t0_labels",
        "label-style T0 prompts (sentiment, topic, paraphrase), short references, a seeded draw even over them",
        "recovery/t0_labelled_dev.jsonl.gz",
        96,
        build_t0_labels,
    ),
    HeldoutBuilder(
        "alpaca_longform",
        "Alpaca-52K prompts with long references, a seeded draw",
        "recovery/alpaca_52k.jsonl.gz",
        64,
        build_alpaca_longform,
    ),
):
    HELDOUT_BUILDERS.register(_builder.name, _builder)


def get_heldout_builder(name: str) -> HeldoutBuilder:
    """The built-in held-out set `name`; refuses (`UnknownNameError`, a ValueError) an unknown name, listing the
    known ones."""
    return HELDOUT_BUILDERS.get(name)


def heldout_source(name: str, data_dir: str | Path | None = None) -> Path:
    """The data file built-in set `name` reads; refuses an unknown name (ValueError) and a missing data
    directory or file (FileNotFoundError naming it)."""
    return data_file(get_heldout_builder(name).relative, data_dir)


def heldout_rows(
    name: str, limit: int | None = None, data_dir: str | Path | None = None, exclude: Collection[str] = ()
) -> list[Row]:
    """The rows of built-in set `name` (at most `limit`; None: the set's default), in the corpus schema, drawn
    from the rows whose `prompt_key` is not in `exclude`.

    Refuses an unknown name or a `limit` below 1 (ValueError) and a missing data file (FileNotFoundError).
    """
    builder = get_heldout_builder(name)
    if limit is not None and limit < 1:
        raise ValueError(f"held-out set {name}: limit must be a positive number of rows, got {limit}")
    limit = builder.default_limit if limit is None else limit
    return builder.build(read_rows(heldout_source(name, data_dir)), limit, frozenset(exclude))


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
