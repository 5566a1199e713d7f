import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from paser.selection.corpus import (
    EMBED_FIELDS,
    CorpusConfig,
    CorpusStats,
    Sample,
    embed_text,
    iter_samples,
    load_corpus,
)
from paser.selection.store import (
    CorpusStore,
    EmbeddingWriter,
    StoredSamples,
    StoredTexts,
    StoreError,
    open_embeddings,
    write_corpus_store,
)

CHAT_MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3? ünïcødé"},
    {"role": "assistant", "content": "6"},
]


def make_samples(n_rows: int) -> list[Sample]:
    """Alpaca rows, with a chat row at position 1, ids that do not sort like positions."""
    samples = []
    for position in range(n_rows):
        if position == 1:
            raw = {"messages": CHAT_MESSAGES, "source": "chat"}
            samples.append(
                Sample(
                    id=f"row-{position}",
                    instruction=CHAT_MESSAGES[3]["content"],
                    input="",
                    response="6",
                    context=tuple((m["role"], m["content"]) for m in CHAT_MESSAGES[:3]),
                    source_index=position * 2,
                    raw=raw,
                )
            )
            continue
        raw = {
            "instruction": f"Task {position}",
            "input": f"in {position}" * (position % 2),
            "output": f"out {position}",
        }
        samples.append(
            Sample(
                id=f"row-{position}",
                instruction=raw["instruction"],
                input=raw["input"],
                response=raw["output"],
                source_index=position * 2,
                raw=raw,
            )
        )
    return samples


@pytest.fixture
def store_of_ten(tmp_path):
    samples = make_samples(10)
    info = write_corpus_store(samples, tmp_path / "corpus.parquet", row_group_rows=3, show_progress=False)
    return samples, info, CorpusStore(info.path)


# --- corpus store ---------------------------------------------------------------------------------------


def without_raw(sample: Sample) -> Sample:
    return Sample(sample.id, sample.instruction, sample.input, sample.response, sample.context, sample.source_index)


def test_stored_samples_read_like_the_list_they_replace(store_of_ten):
    """Iteration (row group by row group), indexing (negative too) and slicing (steps too) give the samples as
    written, without raw rows; an index outside the rows is an IndexError."""
    samples, _, store = store_of_ten
    stored = StoredSamples(store)
    expected = [without_raw(sample) for sample in samples]
    assert len(stored) == 10
    assert list(stored) == expected
    assert all(sample.raw == {} for sample in stored)
    assert stored[1] == expected[1] and stored[1].context == expected[1].context
    assert stored[-1] == expected[-1]
    assert stored[2:8] == expected[2:8]
    assert stored[::4] == expected[::4]
    assert stored[9:3:-2] == expected[9:3:-2]
    assert stored[20:] == []
    with pytest.raises(IndexError, match="index 10 out of range for 10 rows"):
        stored[10]


def test_stored_samples_encode_as_the_list_does(store_of_ten, tiny_tokenizer):
    """`encode_corpus` takes its batches by iterating, so a store-backed corpus encodes as the list does."""
    from paser.selection.formatting import encode_corpus

    samples, _, store = store_of_ten
    listed, _, _ = encode_corpus([without_raw(sample) for sample in samples], tiny_tokenizer, 64, show_progress=False)
    stored, _, _ = encode_corpus(StoredSamples(store), tiny_tokenizer, 64, show_progress=False)
    assert [(row.id, row.input_ids, row.prompt_length) for row in stored] == [
        (row.id, row.input_ids, row.prompt_length) for row in listed
    ]


@pytest.mark.parametrize("fields", [("instruction", "input"), EMBED_FIELDS])
def test_stored_texts_are_the_embed_texts_of_the_chosen_rows(store_of_ten, fields):
    samples, _, store = store_of_ten
    positions = [0, 2, 3, 5, 6, 8, 9]  # store order with gaps, as the scored rows of a corpus are
    texts = StoredTexts(store, positions, fields, block_rows=2)
    expected = [embed_text(samples[position], fields) for position in positions]
    assert len(texts) == 7
    assert list(texts) == expected
    assert texts[1:4] == expected[1:4] and texts[-1] == expected[-1]


def test_stored_texts_refuse_bad_positions_and_fields(store_of_ten):
    _, _, store = store_of_ten
    with pytest.raises(StoreError, match="position 10 is outside the store's 10 rows"):
        StoredTexts(store, [0, 10])
    with pytest.raises(ValueError, match="summary"):
        StoredTexts(store, [0], ("instruction", "summary"))


def test_round_trip_keeps_every_field_including_chat_context_and_raw(store_of_ten):
    samples, _, store = store_of_ten
    read = store.samples([sample.id for sample in samples])
    assert read == samples
    assert [sample.raw for sample in read] == [sample.raw for sample in samples]
    assert read[1].context == (("system", "Be brief."), ("user", "What is 2+2?"), ("assistant", "4"))


def test_store_reports_rows_ids_and_columns_in_row_order(store_of_ten):
    samples, info, store = store_of_ten
    assert (len(store), info.rows) == (10, 10)
    assert store.ids() == [f"row-{position}" for position in range(10)]
    assert store.column("source_index").to_pylist() == [2 * position for position in range(10)]


def test_row_groups_hold_at_most_row_group_rows(store_of_ten):
    _, info, store = store_of_ten
    metadata = pq.ParquetFile(info.path).metadata
    assert (info.row_groups, store.num_row_groups) == (4, 4)
    assert [metadata.row_group(group).num_rows for group in range(4)] == [3, 3, 3, 1]


def test_subset_comes_back_in_the_order_asked_with_repeats(store_of_ten):
    samples, _, store = store_of_ten
    wanted = ["row-9", "row-0", "row-4", "row-1", "row-9"]
    assert [sample.id for sample in store.samples(wanted)] == wanted
    assert store.samples(wanted)[3] == samples[1]
    assert store.positions(wanted).tolist() == [9, 0, 4, 1, 9]


def test_subset_reads_only_the_row_groups_holding_the_ids(store_of_ten, monkeypatch):
    _, _, store = store_of_ten
    groups_read = []
    read_row_group = store._file.read_row_group
    monkeypatch.setattr(
        store._file, "read_row_group", lambda group, **kw: groups_read.append(group) or read_row_group(group, **kw)
    )
    store.samples(["row-7", "row-6", "row-0"])
    assert groups_read == [0, 2]


def test_unknown_id_is_refused_naming_it(store_of_ten):
    _, info, store = store_of_ten
    with pytest.raises(StoreError, match=rf"{info.path}: 2 id\(s\) not in the store: 'row-10', 'zzz'"):
        store.samples(["row-1", "row-10", "zzz"])


def test_raw_rows_are_the_source_rows(store_of_ten):
    samples, _, store = store_of_ten
    assert store.raw_rows(["row-1", "row-2"]) == [samples[1].raw, samples[2].raw]


def test_samples_without_raw_skip_the_raw_column(store_of_ten):
    _, _, store = store_of_ten
    assert store.samples(["row-1"], with_raw=False)[0].raw == {}


def test_raw_rows_are_refused_for_samples_stored_without_raw(tmp_path):
    samples = [Sample(id="a", instruction="x", input="", response="y")]
    store = CorpusStore(write_corpus_store(samples, tmp_path / "c.parquet", show_progress=False).path)
    assert store.samples(["a"])[0].raw == {}
    with pytest.raises(StoreError, match="stored without their raw row.*first id 'a'"):
        store.raw_rows(["a"])


def test_iter_texts_joins_fields_as_embed_text(store_of_ten):
    samples, _, store = store_of_ten
    blocks = list(store.iter_texts(("instruction", "input"), batch_rows=4))
    assert [len(block) for block in blocks] == [4, 4, 2]
    assert sum(blocks, []) == [embed_text(sample) for sample in samples]


def test_iter_batches_gives_the_asked_columns(store_of_ten):
    _, _, store = store_of_ten
    batches = list(store.iter_batches(columns=["id", "response"], batch_rows=6))
    assert [batch.schema.names for batch in batches] == [["id", "response"]] * 2
    assert sum(batch.num_rows for batch in batches) == 10


def test_unknown_column_is_refused_listing_the_known_ones(store_of_ten):
    _, _, store = store_of_ten
    with pytest.raises(StoreError, match=r"unknown column\(s\) \['output'\]; known: \['id', 'source_index'"):
        store.column("output")


def test_sample_lookup_gives_the_same_samples_without_raw(store_of_ten):
    samples, _, store = store_of_ten
    lookup = store.sample_lookup()
    assert len(lookup) == 10
    assert [lookup[sample.id] for sample in reversed(samples)] == list(reversed(samples))
    assert embed_text(lookup["row-1"], EMBED_FIELDS) == embed_text(samples[1], EMBED_FIELDS)
    with pytest.raises(StoreError, match="1 id\\(s\\) not in the store: 'nope'"):
        lookup["nope"]


def test_repeated_id_is_refused_and_no_store_is_left(tmp_path):
    samples = make_samples(5)
    samples[3] = Sample(id="row-1", instruction="x", input="", response="y")
    path = tmp_path / "corpus.parquet"
    with pytest.raises(StoreError, match="ids must be unique; 1 repeat\\(s\\), e.g. 'row-1' at rows 1 and 3"):
        write_corpus_store(samples, path, row_group_rows=2, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failing_sample_stream_leaves_the_old_store_untouched(tmp_path):
    path = write_corpus_store(make_samples(4), tmp_path / "corpus.parquet", show_progress=False).path

    def broken_stream():
        yield from make_samples(2)
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError, match="reader died"):
        write_corpus_store(broken_stream(), path, row_group_rows=1, show_progress=False)
    assert len(CorpusStore(path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.parquet"]


def test_raw_row_that_is_not_json_is_refused_naming_the_id(tmp_path):
    samples = [Sample(id="a", instruction="x", input="", response="y", raw={"when": object()})]
    with pytest.raises(StoreError, match="sample 'a': its raw row is not JSON-serialisable"):
        write_corpus_store(samples, tmp_path / "c.parquet", show_progress=False)


def test_text_without_a_utf8_form_is_refused_naming_the_sample_and_field(tmp_path):
    samples = [*make_samples(2), Sample(id="odd", instruction="x", input="", response="lone \ud800")]
    with pytest.raises(StoreError, match="sample 'odd': field 'response' is not valid Unicode"):
        write_corpus_store(samples, tmp_path / "c.parquet", show_progress=False)


def test_empty_sample_stream_is_refused(tmp_path):
    with pytest.raises(StoreError, match="no samples to write"):
        write_corpus_store([], tmp_path / "c.parquet", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_parquet_file_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"instruction": ["x"], "output": ["y"]}), path)
    with pytest.raises(StoreError, match=f"{path}: not a corpus store"):
        CorpusStore(path)


def test_store_written_from_a_corpus_stream_matches_load_corpus(tmp_path):
    rows = [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "", "output": "b"},
        {"messages": CHAT_MESSAGES},
        {"instruction": "c", "output": "d", "extra": [1, 2.5, None]},
    ]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = CorpusConfig(path=str(source))
    stats = CorpusStats()
    info = write_corpus_store(iter_samples(config, stats), tmp_path / "c.parquet", show_progress=False)
    expected = load_corpus(config)
    store = CorpusStore(info.path)
    assert store.samples(store.ids()) == expected.samples
    assert store.raw_rows(store.ids()) == [sample.raw for sample in expected.samples]
    assert stats == expected.stats


# --- embeddings -----------------------------------------------------------------------------------------


def test_embeddings_written_in_blocks_read_back_as_a_read_only_memmap(tmp_path):
    matrix = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    path = tmp_path / "embeddings.npy"
    with EmbeddingWriter(path, 10, 4) as writer:
        writer.write(6, matrix[6:])
        writer.write(0, matrix[:6].astype(np.float64))
    read = open_embeddings(path, n_rows=10, dim=4)
    assert isinstance(read, np.memmap)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, matrix)
    with pytest.raises(ValueError, match="read-only"):
        read[0, 0] = 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.npy"]


def test_embeddings_with_unwritten_rows_are_refused_and_nothing_is_published(tmp_path):
    path = tmp_path / "embeddings.npy"
    with (
        pytest.raises(StoreError, match="3 of 10 rows were never written \\(first: row 7\\)"),
        EmbeddingWriter(path, 10, 4) as writer,
    ):
        writer.write(0, np.ones((7, 4)))
    assert list(tmp_path.iterdir()) == []


def test_error_while_embedding_removes_the_staging_file(tmp_path):
    with pytest.raises(RuntimeError, match="embedder died"), EmbeddingWriter(tmp_path / "e.npy", 10, 4) as writer:
        writer.write(0, np.ones((5, 4)))
        raise RuntimeError("embedder died")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("offset", "block", "message"),
    [
        (8, np.ones((3, 4)), "rows 8..10 are outside the matrix of 10 rows"),
        (0, np.ones((3, 5)), r"a block must be \(rows, 4\), got shape \(3, 5\)"),
        (2, np.array([[0, 0, 0, 0], [0, np.nan, 0, 0]]), "non-finite values in row 3"),
    ],
    ids=["past the end", "wrong width", "nan"],
)
def test_bad_block_is_refused(tmp_path, offset, block, message):
    with EmbeddingWriter(tmp_path / "embeddings.npy", 10, 4) as writer:
        with pytest.raises(StoreError, match=message):
            writer.write(offset, block)
        writer.write(0, np.zeros((10, 4)))


def test_embeddings_of_another_shape_are_refused(tmp_path):
    path = tmp_path / "embeddings.npy"
    np.save(path, np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(StoreError, match=rf"{path}: shape \(5, 4\) does not match the expected \(6, 4\)"):
        open_embeddings(path, n_rows=6)
    np.save(path, np.zeros((5, 4), dtype=np.float64))
    with pytest.raises(StoreError, match="expected a 2-D float32 matrix, got shape \\(5, 4\\) dtype float64"):
        open_embeddings(path)
