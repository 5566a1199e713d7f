"""Corpus loading and validation: any supported file or dataset becomes a stream (or list) of `Sample`.

A row is either Alpaca-shaped (`instruction`, `input`, `output`) or chat-shaped (`messages`: a list of
`{"role", "content"}` whose last message is the assistant's response). Every valid row becomes one
`Sample` with a stable id; every invalid row is either counted by reason in `CorpusStats` or refused with
an error naming the file and line.

Sources (`read_rows`): JSON Lines (`.jsonl`, `.jsonl.gz`, read line by line), a JSON array (`.json`,
`.json.gz`, read whole), Parquet (`.parquet`, read by record batches), a directory written by
`datasets.Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a Hugging Face hub dataset id.

Row shapes:

- Alpaca: `instruction` and `output` are required strings; `response` is accepted in place of `output`
  when `output` is absent; `input` is optional (absent or null reads as `""`). A null value counts as a
  missing field, because columnar formats (Parquet, datasets) store an absent key as null.
- Chat: a row with a `messages` key is read as chat, whatever other keys it has. Roles are `system`,
  `user` and `assistant`, contents are strings; the final message must be the assistant's (the
  response) and the one before it the user's (the instruction, with `input = ""`); all earlier messages
  become `context`.

Skip reasons (stable names; each skipped row is counted once, under the first check it fails, in this
order):

- `missing_field:instruction`, `missing_field:output` — the field is absent or null.
- `non_string_field:instruction`, `non_string_field:input`, `non_string_field:output` — present but
  not a string.
- `bad_messages` — a chat row whose `messages` is malformed (not a non-empty list of role/content
  objects, an unknown role, a non-string content, or not ending in a user turn then an assistant turn).
- `empty_instruction` — the instruction (Alpaca) or last user message (chat) is empty or whitespace.
- `empty_response` — the output (Alpaca) or final assistant message (chat) is empty or whitespace.
- `duplicate` — same instruction, input, response and context as an earlier row (the first is kept).

Later stages add their own reasons to the same `CorpusStats` (e.g. `too_long` dropped, `truncated`
kept) through `CorpusStats.count`. Text is kept exactly as read: emptiness is tested on the stripped
text, but no field is stripped.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import random
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One normalised training example.

    `instruction` + `input` form the user turn, `response` is what training teaches (and what degradation
    scoring measures). `context` holds earlier chat turns as `(role, content)` pairs (system message
    included), empty for Alpaca rows. `source_index` is the 0-based row position in the source; `raw` is
    the original row, written back unchanged into `selection.jsonl`.
    """

    id: str
    instruction: str
    input: str
    response: str
    context: tuple[tuple[str, str], ...] = ()
    source_index: int = -1
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def user_text(self) -> str:
        """The user turn as one string: instruction, then input after a blank line when there is one."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


class CorpusError(ValueError):
    """A corpus that cannot be read as asked: missing or corrupt file, unsupported format, bad ids, no
    valid row. The message names the file (and the line, for JSON and JSON Lines)."""


EMBED_FIELDS = ("instruction", "input", "response")
_FILE_KINDS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json", ".json.gz": "json", ".parquet": "parquet"}
FILE_SUFFIXES = tuple(_FILE_KINDS)
SUPPORTED_FORMATS = (
    *FILE_SUFFIXES,
    "a directory saved by datasets' save_to_disk",
    "a Hugging Face hub dataset id",
)
MAX_EXAMPLES_PER_REASON = 5
CHAT_ROLES = ("system", "user", "assistant")

# A hub id is "name" or "owner/name"; anything else that does not exist locally is a missing path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
_PARQUET_BATCH_ROWS = 4096
_DATASET_BATCH_ROWS = 1024


@dataclass
class CorpusConfig:
    """Which corpus to load and how to read it."""

    path: str = field(
        metadata={
            "help": "JSON Lines (.jsonl, .jsonl.gz), JSON array (.json, .json.gz), Parquet (.parquet), a "
            "directory saved by datasets' save_to_disk, or a Hugging Face hub dataset id."
        }
    )
    split: str = field(
        default="train",
        metadata={"help": "Split to read from a datasets directory holding several splits, or from the hub."},
    )
    id_field: str | None = field(
        default=None,
        metadata={
            "help": "Row field used as the sample id (str or int, unique over the corpus). Default: the "
            "0-based row position in the source, as a string."
        },
    )
    embed_fields: tuple[str, ...] = field(
        default=("instruction", "input"),
        metadata={"help": f"Sample fields joined into the text that clustering embeds; any of {EMBED_FIELDS}."},
    )
    drop_duplicates: bool = field(
        default=True,
        metadata={"help": "Skip rows whose instruction, input, response and context repeat an earlier row."},
    )
    limit: int | None = field(
        default=None,
        metadata={"help": "Read only the first N rows of the source (before validation); for tests and benchmarks."},
    )
    exclude_rows: str | None = field(
        default=None,
        metadata={
            "help": "A file of 0-based source row positions (one per line) to skip, counted as `excluded`: e.g. "
            "the rows a pruning's calibration used (pruning.json calibration.rows_used_positions)."
        },
    )
    sample: int | None = field(
        default=None,
        metadata={
            "help": "Keep a seeded uniform random sample of N valid rows (after validation, duplicates and "
            "exclusions; in source order): a pool drawn from a larger corpus. The rest count as `not_sampled`."
        },
    )
    sample_seed: int = field(default=0, metadata={"help": "Seed of the `sample` draw."})

    def __post_init__(self) -> None:
        # YAML and the CLI give lists; the config stays hashable and immutable in this field.
        self.embed_fields = tuple(self.embed_fields)
        _check_embed_fields(self.embed_fields)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of rows, got {self.limit}")
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"sample must be a positive number of rows, got {self.sample}")
        if self.id_field is not None and not self.id_field:
            raise ValueError("id_field must be a field name or None, got an empty string")


@dataclass
class CorpusStats:
    """Row counts of a corpus and of every stage that drops or flags its rows.

    `skipped` counts dropped rows by reason, `flagged` counts rows kept but noted (e.g. `truncated`);
    `examples` keeps up to `MAX_EXAMPLES_PER_REASON` row locations per reason (`"file.jsonl:123"`) so a
    user can look at them. `rows_valid` is always `rows_read` minus the dropped rows.
    """

    rows_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rows_valid(self) -> int:
        """Rows read and not dropped by any reason."""
        return self.rows_read - sum(self.skipped.values())

    def count(self, reason: str, location: str, *, dropped: bool = True) -> None:
        """Count one row under `reason`: dropped (default; lowers `rows_valid`) or kept but flagged.

        Refuses (ValueError) a reason already used the other way, so a reason means one thing.
        """
        counts, other = (self.skipped, self.flagged) if dropped else (self.flagged, self.skipped)
        if reason in other:
            kind = "flagged" if dropped else "dropped"
            raise ValueError(f"reason {reason!r} is already counted as {kind}; use a distinct reason name")
        counts[reason] = counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES_PER_REASON:
            examples.append(location)

    def merge(self, other: CorpusStats) -> None:
        """Add another stats object (e.g. another shard of the same corpus) into this one, in place."""
        for reason, number in other.skipped.items():
            if reason in self.flagged:
                raise ValueError(f"reason {reason!r} is dropped in one stats object and flagged in the other")
            self.skipped[reason] = self.skipped.get(reason, 0) + number
        for reason, number in other.flagged.items():
            if reason in self.skipped:
                raise ValueError(f"reason {reason!r} is flagged in one stats object and dropped in the other")
            self.flagged[reason] = self.flagged.get(reason, 0) + number
        for reason, locations in other.examples.items():
            examples = self.examples.setdefault(reason, [])
            examples.extend(locations[: MAX_EXAMPLES_PER_REASON - len(examples)])
        self.rows_read += other.rows_read

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary; reasons sorted by name so the output is stable."""
        return {
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "skipped": dict(sorted(self.skipped.items())),
            "flagged": dict(sorted(self.flagged.items())),
            "examples": {reason: list(self.examples[reason]) for reason in sorted(self.examples)},
        }


@dataclass
class Corpus:
    """The valid samples of a source in source order, the counts of what was skipped, and the source.

    `samples` is a list when read by `load_corpus`, or a `paser.selection.store.StoredSamples` reading a corpus
    store (what `paser select` and `paser run` use, so a large corpus is not held in memory)."""

    samples: Sequence[Sample]
    stats: CorpusStats
    source: str


def load_corpus(config: CorpusConfig) -> Corpus:
    """Read, normalise and validate the source named by `config`, all samples in memory.

    Returns the valid samples in source order (ids: `config.id_field`'s value, else the 0-based row
    position, as strings) with `CorpusStats` counting every skipped row by reason. Refuses with
    `CorpusError`: a missing, unreadable or corrupt source (naming file and line where there is one), an
    unsupported format, a missing, non-str/int or repeated id when `id_field` is set, and a source with
    no valid row (naming the skip counts). For a corpus too large to hold as `Sample`s, stream it with
    `iter_samples` (e.g. into `paser.selection.store.write_corpus_store`).
    """
    stats = CorpusStats()
    samples = list(iter_samples(config, stats))
    return Corpus(samples=samples, stats=stats, source=str(config.path))


def iter_samples(config: CorpusConfig, stats: CorpusStats, *, keep_raw: bool = True) -> Iterator[Sample]:
    """Stream the valid samples of the source named by `config`, one row at a time, in source order.

    Yields exactly the samples `load_corpus` returns (same ids, validation and skip reasons) and counts
    every row into `stats` as it goes, so `stats` is complete once the iterator is exhausted. Memory does
    not grow with the rows yielded, except for duplicate detection (one 16-byte content digest per valid
    row, see `content_digest`) and, when `config.id_field` is set, the id of every row (to refuse a
    repeat). With `keep_raw=False` a sample's `raw` is left empty (`{}`), for callers that re-read raw
    rows later (from the source by `source_index`, or from a `paser.selection.store.CorpusStore`).

    Raises the same `CorpusError`s as `load_corpus`, when the offending row is reached; the refusal of a
    source with no valid row comes after its last row was read.
    """
    excluded = read_row_positions(config.exclude_rows) if config.exclude_rows is not None else frozenset()
    samples = _valid_samples(config, stats, keep_raw, excluded)
    if config.sample is None:
        yield from samples
        return
    yield from sample_rows(samples, config.sample, config.sample_seed, stats)


def read_row_positions(path: str | os.PathLike[str]) -> frozenset[int]:
    """The 0-based row positions listed in `path`, one integer per line (blank lines ignored). Refuses a missing
    file and a line that is not a non-negative integer (CorpusError naming the file and line)."""
    source = Path(path)
    if not source.is_file():
        raise CorpusError(f"corpus.exclude_rows: {path} does not exist")
    positions = set()
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if not text.isdigit():
            raise CorpusError(f"{path}:{number}: expected a 0-based row position, got {text[:40]!r}")
        positions.add(int(text))
    return frozenset(positions)


def sample_rows(samples: Iterable[Sample], size: int, seed: int, stats: CorpusStats) -> Iterator[Sample]:
    """A seeded uniform sample of `size` of `samples` without replacement, yielded in source order (reservoir
    sampling, Algorithm R: memory holds `size` samples). Every sample left out is counted as `not_sampled` in
    `stats`; fewer than `size` samples are all kept."""
    rng = random.Random(seed)
    reservoir: list[Sample] = []
    for seen, sample in enumerate(samples):
        if seen < size:
            reservoir.append(sample)
            continue
        slot = rng.randrange(seen + 1)
        if slot < size:
            reservoir[slot], sample = sample, reservoir[slot]
        stats.count("not_sampled", f"row {sample.source_index}")
    yield from sorted(reservoir, key=lambda kept: kept.source_index)


def _valid_samples(
    config: CorpusConfig, stats: CorpusStats, keep_raw: bool, excluded: frozenset[int]
) -> Iterator[Sample]:
    seen_digests: set[bytes] = set()
    id_locations: dict[str, str] = {}
    any_valid = False
    rows: Iterator[tuple[str, dict[str, Any]]] = read_rows(config.path, config.split)
    if config.limit is not None:
        # islice stops pulling from the reader, so a streaming source is read only up to the limit.
        rows = itertools.islice(rows, config.limit)
    for source_index, (location, row) in enumerate(rows):
        stats.rows_read += 1
        if source_index in excluded:
            stats.count("excluded", location)
            continue
        if config.id_field is None:
            sample_id = str(source_index)
        else:
            sample_id = _row_id(row, config.id_field, location, id_locations)
        try:
            instruction, input_text, response, context = _normalise_row(row)
        except _SkippedRow as skipped:
            stats.count(skipped.reason, location)
            continue
        if config.drop_duplicates:
            digest = content_digest(instruction, input_text, response, context)
            if digest in seen_digests:
                stats.count("duplicate", location)
                continue
            seen_digests.add(digest)
        any_valid = True
        yield Sample(
            id=sample_id,
            instruction=instruction,
            input=input_text,
            response=response,
            context=context,
            source_index=source_index,
            raw=row if keep_raw else {},
        )
    if not any_valid:
        raise CorpusError(
            f"{config.path}: no valid row among {stats.rows_read} rows read; skipped by reason: {stats.skipped}"
        )


def content_digest(instruction: str, input_text: str, response: str, context: tuple[tuple[str, str], ...]) -> bytes:
    """A 16-byte BLAKE2b digest of a sample's content: what duplicate detection compares.

    Every string is length-prefixed, so no two different contents share an encoding (`("ab", "c")` and
    `("a", "bc")` differ); the number of context turns is hashed too. Two different contents collide
    with probability about n² / 2¹²⁹ over n rows (≈1e-26 for 3M rows), which we accept in exchange for
    a fixed 16 bytes per row instead of the whole text.
    """
    digest = hashlib.blake2b(digest_size=16)
    fields = (instruction, input_text, response, *(text for turn in context for text in turn))
    digest.update(len(context).to_bytes(8, "little"))
    for text in fields:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.digest()


def read_rows(path: str | os.PathLike[str], split: str = "train") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(location, row)` for every row of the source, in source order.

    `location` is `"name.jsonl:17"` (1-based line) for JSON Lines, `"name.json:17 (row 3)"` (line where
    the row starts, 0-based row) for a JSON array, `"name.parquet:row 3"` (0-based) for Parquet and
    `"name[split]:row 3"` for datasets. JSON Lines are read line by line (blank lines are not rows and
    are passed over) and Parquet by record batches; a JSON array is parsed whole. A path that does not
    exist but has the shape of a hub id (`name` or `owner/name`, no file suffix) is loaded with
    `datasets.load_dataset`. Refuses with `CorpusError`: a missing path, an unsupported extension, a
    corrupt or undecodable file, JSON that is invalid or a row that is not an object (naming file and
    line), an unknown split, a hub dataset that cannot be loaded.
    """
    source = os.fspath(path)
    local = Path(source).expanduser()
    kind = source_kind(source)
    if kind == "datasets":
        return _read_dataset_dir(local, split)
    if kind == "jsonl":
        return _read_jsonl(local)
    if kind == "json":
        return _read_json_array(local)
    if kind == "parquet":
        return _read_parquet(local)
    return _read_hub_dataset(source, split)


def is_hub_id(source: str) -> bool:
    """Whether `source` has a hub dataset id's shape (`name` or `org/name`, no file suffix): what a corpus source
    that is no local path must be."""
    return bool(_HUB_ID.match(source)) and not source.lower().endswith(FILE_SUFFIXES)


def source_kind(path: str | os.PathLike[str]) -> str:
    """How `read_rows` reads `path`, decided without reading it: "datasets" (a folder), "jsonl", "json",
    "parquet", or "hub" (no such local path, but a hub id's shape). Refuses (CorpusError naming the path) a path
    that does not exist and is no hub id, and a file of an unsupported format."""
    source = os.fspath(path)
    local = Path(source).expanduser()
    if local.is_dir():
        return "datasets"
    if local.exists():
        name = local.name.lower()
        kind = next((kind for suffix, kind in _FILE_KINDS.items() if name.endswith(suffix)), None)
        if kind is not None:
            return kind
        raise CorpusError(f"{source}: unsupported file format; supported: {', '.join(SUPPORTED_FORMATS)}")
    if is_hub_id(source):
        return "hub"
    raise CorpusError(f"{source}: no such file or directory")


def check_corpus(config: CorpusConfig) -> None:
    """Refuse (CorpusError), before a command makes its output folder, a corpus that cannot be read at all: a
    source `source_kind` refuses, and an `exclude_rows` file `read_row_positions` refuses. Reads no corpus row
    (a corrupt row is refused, naming its line, when it is reached)."""
    source_kind(config.path)
    if config.exclude_rows is not None:
        read_row_positions(config.exclude_rows)


def embed_text(sample: Sample, fields: Sequence[str] = ("instruction", "input")) -> str:
    """The text clustering embeds: the non-empty `fields` of `sample`, in the given order, joined by a
    blank line (may be `""` if every chosen field is empty). Refuses (ValueError) a field not in
    `EMBED_FIELDS`."""
    _check_embed_fields(fields)
    return "\n\n".join(text for text in (getattr(sample, name) for name in fields) if text)


def concept_text(sample: Sample) -> str:
    """The text concept (keyword) extraction reads: instruction, input and response joined by blank lines."""
    return embed_text(sample, EMBED_FIELDS)


class _SkippedRow(Exception):
    """Raised inside row normalisation; carries the skip reason counted by `iter_samples`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_embed_fields(fields: Sequence[str]) -> None:
    if not fields:
        raise ValueError(f"embed fields must name at least one of {EMBED_FIELDS}")
    unknown = [name for name in fields if name not in EMBED_FIELDS]
    if unknown:
        raise ValueError(f"unknown embed field(s) {unknown}; known: {EMBED_FIELDS}")


def _row_id(row: dict[str, Any], id_field: str, location: str, id_locations: dict[str, str]) -> str:
    value = row.get(id_field)
    # bool is an int subclass, but True/False as ids are almost surely a wrong field.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CorpusError(
            f"{location}: id field {id_field!r} must be a str or int, got {type(value).__name__}"
            + ("" if id_field in row else " (field absent)")
        )
    sample_id = str(value)
    if sample_id in id_locations:
        raise CorpusError(
            f"{location}: id {sample_id!r} (field {id_field!r}) repeats the id of {id_locations[sample_id]}"
        )
    id_locations[sample_id] = location
    return sample_id


def _normalise_row(row: dict[str, Any]) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    """`(instruction, input, response, context)` of a row; raises `_SkippedRow` with the reason."""
    if "messages" in row:
        instruction, response, context = _normalise_chat(row["messages"])
        input_text = ""
    else:
        instruction = row.get("instruction")
        response = row.get("output")
        response_field = "output"
        if response is None and row.get("response") is not None:
            response, response_field = row["response"], "response"
        input_text = row.get("input")
        if instruction is None:
            raise _SkippedRow("missing_field:instruction")
        if response is None:
            raise _SkippedRow("missing_field:output")
        if not isinstance(instruction, str):
            raise _SkippedRow("non_string_field:instruction")
        if input_text is None:
            input_text = ""
        elif not isinstance(input_text, str):
            raise _SkippedRow("non_string_field:input")
        if not isinstance(response, str):
            raise _SkippedRow(f"non_string_field:{response_field}")
        context = ()
    if not instruction.strip():
        raise _SkippedRow("empty_instruction")
    if not response.strip():
        raise _SkippedRow("empty_response")
    return instruction, input_text, response, context


def _normalise_chat(messages: Any) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """`(instruction, response, context)` of a chat `messages` list; raises `_SkippedRow("bad_messages")`."""
    if not isinstance(messages, list) or len(messages) < 2:
        raise _SkippedRow("bad_messages")
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise _SkippedRow("bad_messages")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES or not isinstance(content, str):
            raise _SkippedRow("bad_messages")
        turns.append((role, content))
    # Anything between the last user turn and the final answer would be lost, so the row must end
    # exactly with a user turn followed by the assistant's response.
    if turns[-1][0] != "assistant" or turns[-2][0] != "user":
        raise _SkippedRow("bad_messages")
    return turns[-2][1], turns[-1][1], tuple(turns[:-2])


def _open_binary(path: Path) -> Any:
    # Bytes are decoded per line (or per file) by us, so a UTF-8 error can name its exact line.
    try:
        return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    except OSError as error:
        raise CorpusError(f"{path}: cannot open: {error}") from error


# What reading a corrupt or truncated (possibly gzipped) file raises.
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _invalid_json(path: Path, line_number: int, error: json.JSONDecodeError) -> CorpusError:
    return CorpusError(f"{path}:{line_number}: invalid JSON ({error.msg}, column {error.colno})")


def _json_row(value: Any, path: Path, line_number: int, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CorpusError(f"{path}:{line_number}: {what} is a {type(value).__name__}, expected a JSON object")
    return value


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_binary(path) as handle:
        lines = iter(handle)
        line_number = 0
        while True:
            try:
                raw_line = next(lines, None)
            except _READ_ERRORS as error:
                raise CorpusError(f"{path}:{line_number + 1}: cannot read the file: {error}") from error
            if raw_line is None:
                return
            line_number += 1
            try:
                # A byte-order mark (editors on Windows write one) is not part of the first row.
                line = raw_line.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(f"{path}:{line_number}: not UTF-8 text: {error}") from error
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise _invalid_json(path, line_number, error) from error
            yield f"{path.name}:{line_number}", _json_row(value, path, line_number, "the line")


def _read_json_array(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_binary(path) as handle:
        try:
            data = handle.read()
        except _READ_ERRORS as error:
            raise CorpusError(f"{path}: cannot read the file: {error}") from error
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark is dropped, as in a JSONL file
    except UnicodeDecodeError as error:
        line_number = 1 + data.count(b"\n", 0, error.start)
        raise CorpusError(f"{path}:{line_number}: not UTF-8 text: {error}") from error
    del data
    decoder = json.JSONDecoder()
    position = _JSON_WHITESPACE.match(text, 0).end()
    if not text.startswith("[", position):
        raise CorpusError(
            f"{path}:{1 + text.count(chr(10), 0, position)}: expected a JSON array of row objects "
            "(for one object per line, name the file .jsonl)"
        )
    position = _JSON_WHITESPACE.match(text, position + 1).end()
    line_number, counted_up_to = 1, 0
    row_index = 0
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            line_number += text.count("\n", counted_up_to, position)
            counted_up_to = position
            try:
                value, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise _invalid_json(path, error.lineno, error) from error
            row = _json_row(value, path, line_number, f"row {row_index}")
            yield f"{path.name}:{line_number} (row {row_index})", row
            row_index += 1
            position = _JSON_WHITESPACE.match(text, position).end()
            if text.startswith(",", position):
                position = _JSON_WHITESPACE.match(text, position + 1).end()
                continue
            if text.startswith("]", position):
                position += 1
                break
            raise CorpusError(
                f"{path}:{1 + text.count(chr(10), 0, position)}: invalid JSON array "
                f"(expected ',' or ']' after row {row_index - 1})"
            )
    trailing = _JSON_WHITESPACE.match(text, position).end()
    if trailing != len(text):
        raise CorpusError(
            f"{path}:{1 + text.count(chr(10), 0, trailing)}: unexpected data after the end of the JSON array"
        )


def _read_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow
    import pyarrow.parquet

    row_index = 0
    try:
        parquet_file = pyarrow.parquet.ParquetFile(path)
        for batch in parquet_file.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                yield f"{path.name}:row {row_index}", row
                row_index += 1
    except (pyarrow.ArrowException, OSError) as error:
        raise CorpusError(f"{path}: cannot read Parquet (after row {row_index}): {error}") from error


def _read_dataset_dir(path: Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    # datasets takes seconds to import; only dataset sources pay for it.
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: not a directory saved by datasets' save_to_disk: {error}") from error
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise CorpusError(f"{path}: no split {split!r}; available splits: {sorted(loaded)}")
        return _read_dataset(loaded[split], f"{path.name}[{split}]")
    return _read_dataset(loaded, path.name)


def _read_hub_dataset(dataset_id: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split=split)
    except (OSError, ValueError) as error:
        raise CorpusError(
            f"{dataset_id}: not a local path, and loading it as a Hugging Face hub dataset failed: {error}"
        ) from error
    return _read_dataset(dataset, f"{dataset_id}[{split}]")


def _read_dataset(dataset: Any, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    row_index = 0
    for batch in dataset.iter(batch_size=_DATASET_BATCH_ROWS):
        columns = list(batch)
        for values in zip(*(batch[column] for column in columns), strict=True):
            yield f"{name}:row {row_index}", dict(zip(columns, values, strict=True))
            row_index += 1
