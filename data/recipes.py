"""Corpus recipes: turn a public instruction dataset's own shape into the corpus schema, as JSON Lines.

The corpus schema is what `paser.selection.corpus` reads: Alpaca rows (`instruction`, `input`, `output`) or
chat rows (`messages`: `{"role", "content"}` turns, the last the assistant's, the one before it the
user's). One recipe per public shape:

- `alpaca`: `tatsu-lab/alpaca`, `yahma/alpaca-cleaned` or a local copy -> instruction, input, output
  (the hub's extra `text` column, a pre-rendered prompt, is dropped).
- `dolly`: databricks-dolly-15k (`instruction`, `context`, `response`, `category`) -> instruction,
  input = context, output = response; `category` is kept as an extra field.
- `lamini`: MBZUAI/LaMini-instruction (`instruction`, `response`, `instruction_source`) -> instruction,
  input = "", output = response; `instruction_source` is kept as an extra field.
- `sharegpt`: ShareGPT-style `conversations: [{"from": "human" | "gpt" | "system", "value"}]` (or rows
  already in `messages` / role-content form) -> `messages` with roles user / assistant / system. Every
  turn is kept (`paser.selection.corpus` reads earlier turns as context); a conversation that does not end
  in an assistant answer to a user turn is cut after its last user -> assistant pair (counted as
  `trimmed_to_last_answer`); one with no such pair is skipped.

A row a recipe cannot convert is skipped and counted by reason (with its first locations), never dropped
silently; a row that cannot be parsed at all is an error naming the file and line. Usage:

    paser data alpaca --source ../shared/data/recovery/alpaca_52k.jsonl.gz --out corpora/alpaca.jsonl
    paser data dolly --out corpora/dolly.jsonl          # no --source: the recipe's first hub id

or from Python: `prepare_corpus("dolly", "databricks/databricks-dolly-15k", Path("dolly.jsonl"))`.
The written file loads with `paser.selection.corpus.load_corpus(CorpusConfig(path=...))`, which still removes
duplicate rows (recipes only change the shape).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paser.common.io import write_atomic
from paser.common.registry import Registry
from paser.selection.corpus import CorpusError, CorpusStats, read_rows

Row = dict[str, Any]

OUTPUT_SUFFIXES = (".jsonl", ".jsonl.gz")
# ShareGPT's `from` values (and the corpus schema's own roles) -> corpus roles.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


class RowSkipped(Exception):
    """Raised by a recipe's row converter for a row it cannot convert; `reason` is the stable skip name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Recipe:
    """One source shape: its name, a one-line description, the hub ids it knows (the first is the default
    source) and `convert(row) -> row in the corpus schema`, which raises `RowSkipped` for a row it cannot
    convert (and may add flags, such as a trimmed conversation, to the `flags` list it is given)."""

    name: str
    description: str
    hub_ids: tuple[str, ...]
    convert: Callable[[Row, list[str]], Row] = field(repr=False)

    def normalise(self, row: Row, flags: list[str] | None = None) -> tuple[Row | None, str | None]:
        """`(converted row, None)`, or `(None, skip reason)` for a row this recipe cannot convert.

        Flags raised on a converted row (kept, but changed beyond its shape) are appended to `flags`.
        """
        try:
            return self.convert(row, [] if flags is None else flags), None
        except RowSkipped as skipped:
            return None, skipped.reason


@dataclass
class RecipeStats(CorpusStats):
    """`CorpusStats` of one recipe run (rows read, skipped and flagged by reason, example locations such
    as `"dolly.jsonl:17"`), plus which recipe read which source into which file."""

    recipe: str = ""
    source: str = ""
    out: str = ""

    @property
    def rows_written(self) -> int:
        """Rows written to `out`: every row read and not skipped."""
        return self.rows_valid

    def summary(self) -> str:
        """One line: rows read and written, then skips and flags by reason with their first locations."""
        line = f"{self.recipe}: read {self.rows_read} rows from {self.source}, wrote {self.rows_written} to {self.out}"
        for label, counts in (("skipped", self.skipped), ("flagged", self.flagged)):
            if counts:
                parts = [
                    f"{reason} {number} (e.g. {', '.join(self.examples[reason][:3])})"
                    for reason, number in sorted(counts.items())
                ]
                line += f"; {label}: " + "; ".join(parts)
        return line

    def to_dict(self) -> dict[str, Any]:
        """`CorpusStats.to_dict` plus recipe, source, out and rows_written."""
        return {
            "recipe": self.recipe,
            "source": self.source,
            "out": self.out,
            "rows_written": self.rows_written,
            **super().to_dict(),
        }


def _text(row: Row, name: str, *, required: bool) -> str:
    """`row[name]` as a string; absent or null is `""` when not required, else `missing_field:<name>`."""
    value = row.get(name)
    if value is None:
        if required:
            raise RowSkipped(f"missing_field:{name}")
        return ""
    if not isinstance(value, str):
        raise RowSkipped(f"non_string_field:{name}")
    return value


def _instruction_row(instruction: str, input_text: str, output: str) -> Row:
    # The same emptiness rules as selection.corpus, so every written row loads there.
    if not instruction.strip():
        raise RowSkipped("empty_instruction")
    if not output.strip():
        raise RowSkipped("empty_response")
    return {"instruction": instruction, "input": input_text, "output": output}


def convert_alpaca(row: Row, flags: list[str]) -> Row:
    """Alpaca (`instruction`, optional `input`, `output`) -> the same three fields; others are dropped."""
    return _instruction_row(
        _text(row, "instruction", required=True),
        _text(row, "input", required=False),
        _text(row, "output", required=True),
    )


def convert_dolly(row: Row, flags: list[str]) -> Row:
    """Dolly (`instruction`, optional `context`, `response`, `category`) -> instruction, input = context,
    output = response, and `category` when the row has one."""
    converted = _instruction_row(
        _text(row, "instruction", required=True),
        _text(row, "context", required=False),
        _text(row, "response", required=True),
    )
    if row.get("category") is not None:
        converted["category"] = row["category"]
    return converted


def convert_lamini(row: Row, flags: list[str]) -> Row:
    """LaMini (`instruction`, `response`, `instruction_source`) -> instruction, input = "", output =
    response, and `instruction_source` when the row has one."""
    converted = _instruction_row(_text(row, "instruction", required=True), "", _text(row, "response", required=True))
    if row.get("instruction_source") is not None:
        converted["instruction_source"] = row["instruction_source"]
    return converted


def convert_sharegpt(row: Row, flags: list[str]) -> Row:
    """ShareGPT (`conversations` of `{"from", "value"}`) or chat (`messages` of `{"role", "content"}`) ->
    `{"messages": [...]}` with roles user / assistant / system.

    Skip reasons: `bad_conversation` (no `conversations`/`messages` list, a turn that is not an object or
    lacks a string text), `unknown_role` (a role not in `SHAREGPT_ROLES`), `no_user_assistant_pair`,
    `empty_instruction` / `empty_response` (the last user turn / the answer to it is blank). Turns after
    the last user -> assistant pair are cut and the row flagged `trimmed_to_last_answer`.
    """
    turns = row.get("conversations", row.get("messages"))
    if not isinstance(turns, list):
        raise RowSkipped("bad_conversation")
    messages: list[Row] = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise RowSkipped("bad_conversation")
        role = turn.get("from", turn.get("role"))
        content = turn.get("value", turn.get("content"))
        if not isinstance(content, str):
            raise RowSkipped("bad_conversation")
        if role not in SHAREGPT_ROLES:
            raise RowSkipped("unknown_role")
        messages.append({"role": SHAREGPT_ROLES[role], "content": content})
    answer = next(
        (
            index
            for index in range(len(messages) - 1, 0, -1)
            if messages[index]["role"] == "assistant" and messages[index - 1]["role"] == "user"
        ),
        None,
    )
    if answer is None:
        raise RowSkipped("no_user_assistant_pair")
    if not messages[answer - 1]["content"].strip():
        raise RowSkipped("empty_instruction")
    if not messages[answer]["content"].strip():
        raise RowSkipped("empty_response")
    if answer < len(messages) - 1:
        flags.append("trimmed_to_last_answer")
    return {"messages": messages[: answer + 1]}


RECIPES: Registry[Recipe] = Registry("corpus recipe")
for _recipe in (
    Recipe(
        "alpaca",
        "Alpaca rows (instruction, input, output); the hub's rendered `text` column is dropped",
        ("yahma/alpaca-cleaned", "tatsu-lab/alpaca"),
        convert_alpaca,
    ),
    Recipe(
        "dolly",
        "databricks-dolly-15k: context becomes input, response becomes output, category kept",
        ("databricks/databricks-dolly-15k",),
        convert_dolly,
    ),
    Recipe(
        "lamini",
        "LaMini-instruction: response becomes output with an empty input, instruction_source kept",
        ("MBZUAI/LaMini-instruction",),
        convert_lamini,
    ),
    Recipe(
        "sharegpt",
        "ShareGPT conversations (from/value: human, gpt, system) become chat messages, every turn kept",
        (),
        convert_sharegpt,
    ),
):
    RECIPES.register(_recipe.name, _recipe)


def get_recipe(name: str) -> Recipe:
    """The recipe registered as `name`; refuses (`UnknownNameError`, a ValueError) an unknown name, listing the
    known ones."""
    return RECIPES.get(name)


def prepare_corpus(
    recipe: str,
    source: str | Path,
    out: Path,
    *,
    split: str = "train",
    limit: int | None = None,
) -> RecipeStats:
    """Read `source` with `paser.selection.corpus.read_rows` (a .jsonl / .jsonl.gz / .json / .parquet file, a
    datasets folder, or a hub id through `datasets.load_dataset`), convert every row (the first `limit`
    only, when given) with the recipe named `recipe`, and write the converted rows to `out` as JSON Lines
    (gzipped when `out` ends in `.gz`), atomically.

    Returns the counts (`RecipeStats`). Refuses: an unknown recipe (ValueError listing the known ones),
    an `out` that is not `.jsonl` / `.jsonl.gz`, a `limit` below 1 (ValueError); a source that cannot be
    read or a row that cannot be parsed (`CorpusError` naming the file and line, or the hub id); a source
    with no convertible row (`CorpusError` with the skip counts; `out` is then left as it was).
    """
    chosen = get_recipe(recipe)
    out = Path(out)
    if not out.name.lower().endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"{out}: the output must be JSON Lines, named {' or '.join(OUTPUT_SUFFIXES)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    stats = RecipeStats(recipe=chosen.name, source=str(source), out=str(out))
    rows = read_rows(source, split)
    if limit is not None:
        rows = itertools.islice(rows, limit)

    def write(staging: Path) -> None:
        opener = gzip.open if out.name.lower().endswith(".gz") else open
        with opener(staging, "wt", encoding="utf-8") as handle:
            for location, row in rows:
                stats.rows_read += 1
                flags: list[str] = []
                converted, reason = chosen.normalise(row, flags)
                if converted is None:
                    stats.count(reason, location)
                    continue
                for flag in flags:
                    stats.count(flag, location, dropped=False)
                handle.write(json.dumps(converted, ensure_ascii=False) + "\n")
        if stats.rows_written == 0:
            raise CorpusError(
                f"{source}: recipe {chosen.name!r} converted none of the {stats.rows_read} rows read; "
                f"skipped by reason: {dict(sorted(stats.skipped.items()))} (first at {stats.examples})"
            )

    write_atomic(out, write)
    return stats


def build_parser() -> argparse.ArgumentParser:
    """The `paser data` arguments: RECIPE, --source, --out, --split, --limit."""
    known = "; ".join(f"{recipe.name}: {recipe.description}" for recipe in RECIPES.values())
    parser = argparse.ArgumentParser(
        prog="paser data",
        description="Normalise a corpus to paser's corpus schema (JSON Lines). " + known,
    )
    parser.add_argument("recipe", help=f"one of {', '.join(RECIPES)}")
    parser.add_argument(
        "--source",
        help="local .jsonl/.jsonl.gz/.json/.parquet file, datasets folder or hub id (default: the recipe's "
        "first hub id)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output file, .jsonl or .jsonl.gz")
    parser.add_argument("--split", default="train", help="split of a datasets folder or hub dataset")
    parser.add_argument("--limit", type=int, help="convert only the first N rows of the source")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`paser data RECIPE [--source S] --out F [--split] [--limit]`: prepare the corpus, print one line.

    Errors (unknown recipe, unreadable source, no default source) are raised for the caller to report.
    """
    args = build_parser().parse_args(argv)
    recipe = get_recipe(args.recipe)
    source = args.source
    if source is None:
        if not recipe.hub_ids:
            raise ValueError(f"recipe {recipe.name!r} has no default hub dataset; pass --source")
        source = recipe.hub_ids[0]
    stats = prepare_corpus(recipe.name, source, args.out, split=args.split, limit=args.limit)
    print(f"[paser] {stats.summary()}")
    return 0
