"""On-disk stores for corpora too large to hold as Python objects: samples in Parquet, embeddings in a memmap.

A 3M-row corpus as `Sample` objects (with their raw rows) takes tens of GB of Python heap; the same rows
in one Parquet file take a few GB of disk and nothing in memory until read. The flow at scale:

    stats = CorpusStats()
    info = write_corpus_store(iter_samples(config, stats, keep_raw=True), store_path)
    store = CorpusStore(info.path)
    with EmbeddingWriter(run_dir / "embeddings.npy", len(store), 384) as writer:
        offset = 0
        for texts in store.iter_texts(config.embed_fields):
            writer.write(offset, embed(texts))
            offset += len(texts)
    embeddings = open_embeddings(run_dir / "embeddings.npy", n_rows=len(store))  # read-only memmap
    ...
    chosen = store.samples(selected_ids)        # reads only the row groups holding those ids

Both writers are atomic: the file appears under its name only once complete, so a crash never leaves a
store that a rerun would trust.
"""

from __future__ import annotations

import json
import operator
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from paser.common.console import progress_bar
from paser.common.io import give_ordinary_mode, write_atomic
from paser.selection.corpus import Sample, embed_text

# Written into the Parquet schema metadata, so a store is told apart from any other Parquet file.
STORE_FORMAT_KEY = b"paser.corpus_store"
STORE_FORMAT_VERSION = b"1"
STORE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source_index", pa.int64(), nullable=False),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        # Earlier chat turns as a JSON list of [role, content] pairs ("[]" for Alpaca rows).
        pa.field("context", pa.string(), nullable=False),
        # The source row as a JSON object; null when the sample was read without it (keep_raw=False).
        pa.field("raw", pa.string(), nullable=True),
    ],
    metadata={STORE_FORMAT_KEY: STORE_FORMAT_VERSION},
)
STORE_COLUMNS = tuple(STORE_SCHEMA.names)
SAMPLE_TEXT_COLUMNS = ("id", "source_index", "instruction", "input", "response", "context")
DEFAULT_BATCH_ROWS = 65_536


class StoreError(ValueError):
    """A store that cannot be written or read as asked: not a store, wrong shape, unknown ids, missing raw
    rows, an incomplete embedding matrix. The message names the file (and the ids or rows)."""


@dataclass(frozen=True)
class CorpusStoreInfo:
    """What `write_corpus_store` wrote: the file, its rows, its row groups and its size in bytes."""

    path: Path
    rows: int
    row_groups: int
    bytes: int


def write_corpus_store(
    samples: Iterable[Sample],
    path: str | os.PathLike[str],
    *,
    row_group_rows: int = DEFAULT_BATCH_ROWS,
    show_progress: bool = True,
) -> CorpusStoreInfo:
    """Stream `samples` into one Parquet file at `path`, `row_group_rows` rows per row group, in order.

    Only one row group of samples is held at a time, so memory does not grow with the corpus (the final
    id check reads the id column back: ~100 MB for 2.6M short ids). Columns: `STORE_SCHEMA` (text as
    given, `context` and `raw` as JSON strings; `raw` is null for a sample whose `raw` is empty, i.e. read
    with `keep_raw=False`). Written to a staging file beside `path` and renamed onto it once complete,
    after checking that ids are unique. Returns what was written. Refuses (StoreError) `row_group_rows <
    1`, no samples, a repeated id (naming it and its rows), a raw row that is not JSON-serialisable and
    text with no UTF-8 form (a lone surrogate, which JSON allows; naming the sample and field); the
    staging file is removed and `path` left as it was. Errors raised by `samples` itself (e.g. a
    `CorpusError` from `iter_samples`) pass through, with the same clean-up.
    """
    path = Path(path)
    if row_group_rows < 1:
        raise StoreError(f"row_group_rows must be >= 1, got {row_group_rows}")
    rows_written = 0

    def write(staging: Path) -> None:
        nonlocal rows_written
        stream = progress_bar(samples, desc="reading corpus", show=show_progress)
        with pq.ParquetWriter(staging, STORE_SCHEMA, compression="zstd") as writer:
            group: list[Sample] = []
            for sample in stream:
                group.append(sample)
                if len(group) == row_group_rows:
                    writer.write_table(_samples_table(group), row_group_size=row_group_rows)
                    rows_written += len(group)
                    group = []
            if group:
                writer.write_table(_samples_table(group), row_group_size=row_group_rows)
                rows_written += len(group)
        if rows_written == 0:
            raise StoreError(f"{path}: no samples to write")
        # Unique ids are what makes `CorpusStore.samples(ids)` well defined; the check reads only the id
        # column back, so it costs no memory while streaming.
        _IdIndex(pq.read_table(staging, columns=["id"]).column("id"), path)

    write_atomic(path, write)
    metadata = pq.ParquetFile(path).metadata
    return CorpusStoreInfo(
        path=path, rows=metadata.num_rows, row_groups=metadata.num_row_groups, bytes=path.stat().st_size
    )


def _samples_table(samples: list[Sample]) -> pa.Table:
    """One row group's worth of samples as an Arrow table of `STORE_SCHEMA`."""
    raw_json: list[str | None] = []
    for sample in samples:
        if not sample.raw:
            raw_json.append(None)
            continue
        try:
            raw_json.append(json.dumps(sample.raw, ensure_ascii=False))
        except (TypeError, ValueError) as error:
            raise StoreError(f"sample {sample.id!r}: its raw row is not JSON-serialisable: {error}") from error
    columns = {
        "id": [sample.id for sample in samples],
        "source_index": [sample.source_index for sample in samples],
        "instruction": [sample.instruction for sample in samples],
        "input": [sample.input for sample in samples],
        "response": [sample.response for sample in samples],
        "context": [json.dumps(sample.context, ensure_ascii=False) for sample in samples],
        "raw": raw_json,
    }
    try:
        return pa.table(columns, schema=STORE_SCHEMA)
    except UnicodeEncodeError as error:
        raise _unencodable_sample(samples, columns) from error


def _unencodable_sample(samples: list[Sample], columns: dict[str, list[Any]]) -> StoreError:
    """The error naming the first sample whose text has no UTF-8 form (a lone surrogate, which JSON allows)."""
    for name, values in columns.items():
        for row, value in enumerate(values):
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as error:
                    return StoreError(
                        f"sample {samples[row].id!r}: field {name!r} is not valid Unicode ({error.reason} at "
                        f"character {error.start}) and cannot be stored as UTF-8"
                    )
    return StoreError("a sample's text cannot be stored as UTF-8")


class _IdIndex:
    """id -> row position over a store's id column: the ids sorted, as a fixed-width numpy string array,
    plus the permutation back to row order. Costs (4 · longest id + 8) bytes per row (~94 MB for 2.6M
    positional ids, against ~300 MB for a dict of str); a lookup is a binary search."""

    def __init__(self, ids: pa.ChunkedArray | pa.Array, path: Path):
        id_array = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=str)
        self.order = np.argsort(id_array, kind="stable")
        self.sorted_ids = id_array[self.order]
        del id_array
        repeated = np.flatnonzero(self.sorted_ids[1:] == self.sorted_ids[:-1])
        if repeated.size:
            example = str(self.sorted_ids[repeated[0]])
            rows = np.sort(self.order[repeated[0] : repeated[0] + 2])
            raise StoreError(
                f"{path}: ids must be unique; {repeated.size} repeat(s), "
                f"e.g. {example!r} at rows {rows[0]} and {rows[1]}"
            )
        self.path = path

    def positions(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row positions (int64) of `ids`, in the order given; refuses unknown ids, naming a few."""
        wanted = np.asarray(ids, dtype=str)
        if wanted.ndim != 1:
            raise StoreError(f"ids must be a flat sequence of strings, got shape {wanted.shape}")
        where = np.searchsorted(self.sorted_ids, wanted)
        found = where < len(self.sorted_ids)
        found[found] = self.sorted_ids[where[found]] == wanted[found]
        if not found.all():
            missing = wanted[~found]
            shown = ", ".join(repr(str(value)) for value in missing[:5])
            raise StoreError(f"{self.path}: {missing.size} id(s) not in the store: {shown}")
        return self.order[where].astype(np.int64)


class CorpusStore:
    """Read access to a corpus store written by `write_corpus_store`.

    Opening reads only the Parquet footer; the id index (needed by `positions`, `samples`, `raw_rows`,
    `sample_lookup`) is built on first use from the id column. Refuses (StoreError) a missing file and a
    Parquet file that is not a store (wrong or missing columns, no store marker in its metadata).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such corpus store")
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as error:
            raise StoreError(f"{self.path}: cannot read Parquet: {error}") from error
        schema = self._file.schema_arrow
        if (schema.metadata or {}).get(STORE_FORMAT_KEY) != STORE_FORMAT_VERSION or tuple(
            schema.names
        ) != STORE_COLUMNS:
            raise StoreError(
                f"{self.path}: not a corpus store (format {STORE_FORMAT_VERSION.decode()}) written by "
                f"write_corpus_store; columns {schema.names}, expected {list(STORE_COLUMNS)}"
            )
        metadata = self._file.metadata
        group_rows = [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]
        # Row position where each row group starts, plus the total: row group of a position by bisection.
        self._group_starts = np.concatenate([[0], np.cumsum(group_rows, dtype=np.int64)])
        self._index: _IdIndex | None = None

    def __len__(self) -> int:
        return int(self._group_starts[-1])

    def __repr__(self) -> str:
        return f"CorpusStore({str(self.path)!r}, rows={len(self)}, row_groups={self.num_row_groups})"

    @property
    def num_row_groups(self) -> int:
        """Number of Parquet row groups (the unit `samples` and `raw_rows` read)."""
        return len(self._group_starts) - 1

    def ids(self) -> list[str]:
        """Every sample id, in row order (a Python list: ~60 bytes per id; `column("id")` is the compact form)."""
        return self.column("id").to_pylist()

    def column(self, name: str) -> pa.ChunkedArray:
        """A whole column as an Arrow array in row order (one chunk per row group); refuses an unknown name."""
        self._check_columns([name])
        return self._file.read(columns=[name]).column(name)

    def iter_batches(
        self, columns: Sequence[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of at most `batch_rows` rows of `columns` (default: all), in row order."""
        names = list(columns) if columns is not None else list(STORE_COLUMNS)
        self._check_columns(names)
        if batch_rows < 1:
            raise StoreError(f"batch_rows must be >= 1, got {batch_rows}")
        return self._file.iter_batches(batch_size=batch_rows, columns=names)

    def iter_texts(
        self, fields: Sequence[str] = ("instruction", "input"), batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[list[str]]:
        """The text of every row, joined from `fields` as `paser.selection.corpus.embed_text` joins them, in lists
        of at most `batch_rows` in row order: what the embedder reads, one block at a time."""
        fields = tuple(fields)
        for batch in self.iter_batches(columns=list(fields), batch_rows=batch_rows):
            values = {name: batch.column(name).to_pylist() for name in fields}
            texts = []
            for row in range(batch.num_rows):
                texts.append(embed_text(_text_sample(**{name: values[name][row] for name in fields}), fields))
            yield texts

    def positions(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row positions (int64) of `ids` in the order given (repeats allowed); refuses unknown ids (StoreError)."""
        return self._id_index().positions(ids)

    def samples(self, ids: Sequence[str] | np.ndarray, *, with_raw: bool = True) -> list[Sample]:
        """The samples with these ids, in the order given, read from only the row groups holding them.

        With `with_raw=False` the raw column is not read and each `raw` is `{}`; otherwise a row stored
        without its raw row also gives `raw == {}`. Refuses unknown ids (StoreError, naming a few).
        """
        columns = [*SAMPLE_TEXT_COLUMNS, "raw"] if with_raw else list(SAMPLE_TEXT_COLUMNS)
        rows = self._read_rows(self.positions(ids), columns)
        return [_sample_from_row(row, with_raw=with_raw) for row in rows]

    def raw_rows(self, ids: Sequence[str] | np.ndarray) -> list[dict[str, Any]]:
        """The source rows of these ids as read from the corpus, in the order given.

        Refuses unknown ids and rows stored without their raw row (StoreError, naming the first id).
        """
        rows = self._read_rows(self.positions(ids), ["id", "raw"])
        missing = [row["id"] for row in rows if row["raw"] is None]
        if missing:
            raise StoreError(
                f"{self.path}: {len(missing)} row(s) were stored without their raw row (written from samples "
                f"read with keep_raw=False), first id {missing[0]!r}"
            )
        return [json.loads(row["raw"]) for row in rows]

    def sample_lookup(self) -> SampleLookup:
        """Every sample's text held in memory (Arrow buffers, about the size of the text in UTF-8; no raw
        rows), looked up by id: for consumers that ask for one row at a time in no predictable order, such
        as the concept extraction of the CCG (`lambda i: concept_text(lookup[i])`)."""
        table = self._file.read(columns=list(SAMPLE_TEXT_COLUMNS))
        return SampleLookup(table, self._id_index(), self._group_starts)

    def _id_index(self) -> _IdIndex:
        if self._index is None:
            self._index = _IdIndex(self.column("id"), self.path)
        return self._index

    def _check_columns(self, names: Sequence[str]) -> None:
        unknown = [name for name in names if name not in STORE_COLUMNS]
        if unknown:
            raise StoreError(f"{self.path}: unknown column(s) {unknown}; known: {list(STORE_COLUMNS)}")

    def _read_rows(self, positions: np.ndarray, columns: list[str]) -> list[dict[str, Any]]:
        """Rows at `positions` (in that order) as dicts of `columns`, reading each needed row group once."""
        rows: list[dict[str, Any] | None] = [None] * len(positions)
        groups = np.searchsorted(self._group_starts, positions, side="right") - 1
        for group in np.unique(groups):
            wanted = np.flatnonzero(groups == group)
            local = positions[wanted] - self._group_starts[group]
            chosen = self._file.read_row_group(int(group), columns=columns).take(pa.array(local))
            for slot, row in zip(wanted, chosen.to_pylist(), strict=True):
                rows[slot] = row
        return rows  # type: ignore[return-value]


class SampleLookup:
    """`lookup[id] -> Sample` (without raw) from text columns held in memory; built by
    `CorpusStore.sample_lookup`. Refuses an unknown id (StoreError)."""

    def __init__(self, table: pa.Table, index: _IdIndex, group_starts: np.ndarray):
        self._columns = {name: table.column(name) for name in SAMPLE_TEXT_COLUMNS}
        # Chunk boundaries of the in-memory columns (one chunk per row group, as read).
        chunk_lengths = [len(chunk) for chunk in self._columns["id"].chunks]
        self._chunk_starts = np.concatenate([[0], np.cumsum(chunk_lengths, dtype=np.int64)])
        if self._chunk_starts[-1] != group_starts[-1]:
            raise StoreError(f"{index.path}: read {self._chunk_starts[-1]} rows, the footer says {group_starts[-1]}")
        self._index = index

    def __len__(self) -> int:
        return int(self._chunk_starts[-1])

    def __getitem__(self, sample_id: str) -> Sample:
        position = int(self._index.positions([sample_id])[0])
        chunk = int(np.searchsorted(self._chunk_starts, position, side="right")) - 1
        local = position - int(self._chunk_starts[chunk])
        row = {name: column.chunk(chunk)[local].as_py() for name, column in self._columns.items()}
        return _sample_from_row(row, with_raw=False)


class StoredSamples(Sequence[Sample]):
    """Every sample of a corpus store (without raw rows), in row order, as a read-only sequence over the file:
    iteration streams one row group at a time, and an index or slice reads only the row groups holding its
    rows. Nothing per row is kept in memory, so a pipeline can hand a 3M-row corpus around as `samples`
    without a copy of it (480k synthetic rows as a list of `Sample`s took 0.67 GB).
    """

    def __init__(self, store: CorpusStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __repr__(self) -> str:
        return f"StoredSamples({self.store!r})"

    def __iter__(self) -> Iterator[Sample]:
        for batch in self.store.iter_batches(columns=list(SAMPLE_TEXT_COLUMNS)):
            for row in batch.to_pylist():
                yield _sample_from_row(row, with_raw=False)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        positions = _positions_of(index, len(self))
        rows = self.store._read_rows(positions, list(SAMPLE_TEXT_COLUMNS))
        samples = [_sample_from_row(row, with_raw=False) for row in rows]
        return samples if isinstance(index, slice) else samples[0]


class StoredTexts(Sequence[str]):
    """The texts of the store's rows at `positions` (in that order), joined from `fields` as
    `paser.selection.corpus.embed_text` joins them: what the embedder reads, as a sequence over the file (slices
    read only their rows' row groups; iteration goes `block_rows` positions at a time), so the texts of a
    3M-row corpus are never all in memory. Refuses (StoreError) a position outside the store."""

    def __init__(
        self,
        store: CorpusStore,
        positions: Sequence[int] | np.ndarray,
        fields: Sequence[str] = ("instruction", "input"),
        block_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self.store, self.fields, self.block_rows = store, tuple(fields), block_rows
        self.positions = np.asarray(positions, dtype=np.int64)
        embed_text(_text_sample(), self.fields)  # refuses an unknown field now, not at the first read
        outside = self.positions[(self.positions < 0) | (self.positions >= len(store))]
        if outside.size:
            raise StoreError(f"{store.path}: position {int(outside[0])} is outside the store's {len(store)} rows")

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), self.block_rows):
            yield from self[start : start + self.block_rows]

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        rows = self.store._read_rows(self.positions[_positions_of(index, len(self))], list(self.fields))
        texts = [embed_text(_text_sample(**row), self.fields) for row in rows]
        return texts if isinstance(index, slice) else texts[0]


def _positions_of(index: int | slice, length: int) -> np.ndarray:
    """The positions an index or slice of a sequence of `length` names (IndexError outside it)."""
    if isinstance(index, slice):
        return np.arange(*index.indices(length), dtype=np.int64)
    position = operator.index(index)
    if position < 0:
        position += length
    if not 0 <= position < length:
        raise IndexError(f"index {index} out of range for {length} rows")
    return np.array([position], dtype=np.int64)


def _text_sample(instruction: str = "", input: str = "", response: str = "") -> Sample:
    # A Sample carrying only the text fields, so `embed_text` stays the one definition of the joined text.
    return Sample(id="", instruction=instruction, input=input, response=response)


def _sample_from_row(row: dict[str, Any], *, with_raw: bool) -> Sample:
    """A store row (a dict of its columns) as a `Sample`; `raw` is `{}` unless asked for and stored."""
    return Sample(
        id=row["id"],
        instruction=row["instruction"],
        input=row["input"],
        response=row["response"],
        context=tuple((role, content) for role, content in json.loads(row["context"])),
        source_index=row["source_index"],
        raw=json.loads(row["raw"]) if with_raw and row["raw"] is not None else {},
    )


class EmbeddingWriter:
    """Writes an (n_rows, dim) float32 matrix into a `.npy` file block by block through a memory map.

    The matrix lives in a staging file beside `path` (so the page cache, not the heap, holds it) and is
    renamed onto `path` by `finish` once every row has been written; used as a context manager, `finish`
    runs on a clean exit and the staging file is removed on an error. Refuses (StoreError) sizes below 1,
    blocks of the wrong width, beyond the end, or holding NaN/inf, and `finish` with rows unwritten.

        with EmbeddingWriter(path, n_rows, 384) as writer:
            writer.write(0, first_block)
            writer.write(len(first_block), second_block)
    """

    def __init__(self, path: str | os.PathLike[str], n_rows: int, dim: int):
        if n_rows < 1 or dim < 1:
            raise StoreError(f"{path}: an embedding matrix needs n_rows >= 1 and dim >= 1, got ({n_rows}, {dim})")
        self.path = Path(path)
        self.shape = (int(n_rows), int(dim))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{self.path.name}-", suffix=".tmp", dir=self.path.parent)
        os.close(handle)
        self._staging = Path(staging)
        self._matrix: np.memmap | None = np.lib.format.open_memmap(
            self._staging, mode="w+", dtype=np.float32, shape=self.shape
        )
        self._written = np.zeros(self.shape[0], dtype=bool)

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is not None:
            self.abort()
        elif self._matrix is not None:
            try:
                self.finish()
            except BaseException:
                self.abort()
                raise

    def write(self, offset: int, block: np.ndarray) -> None:
        """Write `block` (rows, dim) into rows `offset .. offset + rows - 1` (cast to float32)."""
        if self._matrix is None:
            raise StoreError(f"{self.path}: the writer is already finished or aborted")
        values = np.asarray(block)
        if values.ndim != 2 or values.shape[1] != self.shape[1]:
            raise StoreError(f"{self.path}: a block must be (rows, {self.shape[1]}), got shape {values.shape}")
        if not np.issubdtype(values.dtype, np.number):
            raise StoreError(f"{self.path}: a block must be numeric, got dtype {values.dtype}")
        if offset < 0 or offset + len(values) > self.shape[0]:
            raise StoreError(
                f"{self.path}: rows {offset}..{offset + len(values) - 1} are outside the matrix of {self.shape[0]} rows"
            )
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise StoreError(f"{self.path}: non-finite values in row {offset + bad}")
        self._matrix[offset : offset + len(values)] = values
        self._written[offset : offset + len(values)] = True

    @property
    def rows_written(self) -> int:
        """Distinct rows written so far."""
        return int(self._written.sum())

    def finish(self) -> Path:
        """Flush and publish the matrix under `path`; refuses (StoreError) while rows are unwritten."""
        if self._matrix is None:
            raise StoreError(f"{self.path}: the writer is already finished or aborted")
        if not self._written.all():
            first = int(np.flatnonzero(~self._written)[0])
            raise StoreError(
                f"{self.path}: {self.shape[0] - self.rows_written} of {self.shape[0]} rows were never written "
                f"(first: row {first})"
            )
        self._matrix.flush()
        self._matrix = None
        give_ordinary_mode(self._staging)
        os.replace(self._staging, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the staging file; `path` is left as it was."""
        self._matrix = None
        if self._staging.exists():
            self._staging.unlink()


def open_embeddings(path: str | os.PathLike[str], *, n_rows: int | None = None, dim: int | None = None) -> np.memmap:
    """The (N, d) float32 matrix of a `.npy` file as a read-only memory map (pages load on access).

    Refuses (StoreError) a missing file, a file that is not a 2-D float32 `.npy`, and a shape other than
    the expected `n_rows` / `dim` where given (e.g. embeddings of another corpus than the store's).
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such embedding file")
    try:
        matrix = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as error:
        raise StoreError(f"{path}: not a .npy array: {error}") from error
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise StoreError(f"{path}: expected a 2-D float32 matrix, got shape {matrix.shape} dtype {matrix.dtype}")
    expected = (n_rows if n_rows is not None else matrix.shape[0], dim if dim is not None else matrix.shape[1])
    if matrix.shape != expected:
        raise StoreError(f"{path}: shape {matrix.shape} does not match the expected {expected}")
    return matrix
