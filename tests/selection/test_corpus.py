import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from paser.selection.corpus import (
    MAX_EXAMPLES_PER_REASON,
    CorpusConfig,
    CorpusError,
    CorpusStats,
    Sample,
    concept_text,
    content_digest,
    embed_text,
    iter_samples,
    load_corpus,
    read_rows,
)

DATA_DIR = Path(os.environ.get("PASER_DATA_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
GOOD_ROW = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def shared_data_file(relative: str) -> Path:
    path = DATA_DIR / relative
    if not path.exists():
        pytest.skip(f"shared data file {path} is absent (set PASER_DATA_DIR)")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def load(path: Path, **options: Any):
    return load_corpus(CorpusConfig(path=str(path), **options))


@pytest.fixture(scope="module")
def alpaca_52k():
    return load(shared_data_file("recovery/alpaca_52k.jsonl.gz"))


# --- the shared corpora ---------------------------------------------------------------------------------


def test_alpaca_52k_reads_every_row(alpaca_52k):
    assert alpaca_52k.stats.rows_read == 52_002


def test_alpaca_52k_skips_exactly_its_28_empty_outputs_and_nothing_else(alpaca_52k):
    assert alpaca_52k.stats.skipped == {"empty_response": 28}
    assert alpaca_52k.stats.rows_valid == len(alpaca_52k.samples) == 51_974


def test_alpaca_52k_has_no_exact_duplicates(alpaca_52k):
    assert "duplicate" not in alpaca_52k.stats.skipped


def test_alpaca_52k_empty_response_examples_point_at_lines_with_empty_output(alpaca_52k):
    locations = alpaca_52k.stats.examples["empty_response"]
    assert len(locations) == MAX_EXAMPLES_PER_REASON
    with gzip.open(shared_data_file("recovery/alpaca_52k.jsonl.gz"), "rt", encoding="utf-8") as handle:
        lines = handle.readlines()
    for location in locations:
        name, line_number = location.split(":")
        assert name == "alpaca_52k.jsonl.gz"
        assert json.loads(lines[int(line_number) - 1])["output"] == ""


def test_alpaca_52k_sample_keeps_row_position_as_id_and_raw_row(alpaca_52k):
    first = alpaca_52k.samples[0]
    assert (first.id, first.source_index, first.context) == ("0", 0, ())
    assert first.raw == {"instruction": first.instruction, "input": first.input, "output": first.response}


def test_cherry_json_array_loads_all_3111_rows():
    corpus = load(shared_data_file("recovery/cherry_alpaca_5_percent.json"))
    assert corpus.stats.rows_read == corpus.stats.rows_valid == 3_111
    assert corpus.samples[0].instruction == "Design a wellness plan for the given audience"


# --- formats --------------------------------------------------------------------------------------------

ROWS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Translate.", "input": "Bonjour", "output": " Hello \n"},
    {"instruction": "Say nothing.", "input": "", "output": "  "},
]


def expected_samples() -> list[tuple[str, str, str, str]]:
    return [("0", "Add 2 and 3.", "", "5"), ("1", "Translate.", "Bonjour", " Hello \n")]


def as_tuples(corpus) -> list[tuple[str, str, str, str]]:
    return [(sample.id, sample.instruction, sample.input, sample.response) for sample in corpus.samples]


def test_gzipped_jsonl_loads(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in ROWS)
    assert as_tuples(load(path)) == expected_samples()


def test_gzipped_json_array_loads(tmp_path):
    path = tmp_path / "rows.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(ROWS, handle)
    assert as_tuples(load(path)) == expected_samples()


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.json"])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_row(tmp_path, name):
    path = tmp_path / name
    text = "".join(json.dumps(row) + "\n" for row in ROWS) if name.endswith("l") else json.dumps(ROWS)
    path.write_text(text, encoding="utf-8-sig")
    assert as_tuples(load(path)) == expected_samples()


def test_json_array_locations_give_line_and_row(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(ROWS, indent=1), encoding="utf-8")
    assert load(path).stats.examples == {"empty_response": ["rows.json:12 (row 2)"]}


def test_parquet_file_loads(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "rows.parquet"
    parquet.write_table(pyarrow.Table.from_pylist(ROWS), path, row_group_size=2)
    corpus = load(path)
    assert as_tuples(corpus) == expected_samples()
    assert corpus.stats.examples == {"empty_response": ["rows.parquet:row 2"]}


def test_parquet_chat_rows_load(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "chat.parquet"
    messages = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    parquet.write_table(pyarrow.Table.from_pylist([{"messages": messages}]), path)
    sample = load(path).samples[0]
    assert (sample.instruction, sample.response) == ("Hi?", "Hello.")


def test_saved_dataset_dict_loads_the_requested_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    other = [{"instruction": "Other split.", "input": "", "output": "x"}]
    splits = {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(other)}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    corpus = load(tmp_path / "saved", split="train")
    assert as_tuples(corpus) == expected_samples()
    assert corpus.stats.examples == {"empty_response": ["saved[train]:row 2"]}
    assert load(tmp_path / "saved", split="test").samples[0].instruction == "Other split."


def test_saved_single_dataset_loads(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    assert as_tuples(load(tmp_path / "saved")) == expected_samples()


def test_saved_dataset_dict_without_the_split_is_refused_listing_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(CorpusError, match=r"no split 'validation'; available splits: \['train'\]"):
        load(tmp_path / "saved", split="validation")


def test_directory_that_is_not_a_saved_dataset_is_refused(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty: not a directory saved by datasets"):
        load(tmp_path / "empty")


def test_hub_id_is_loaded_with_load_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    requested = []

    def fake_load_dataset(dataset_id, split):
        requested.append((dataset_id, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_corpus(CorpusConfig(path="owner/corpus", split="train"))
    assert requested == [("owner/corpus", "train")]
    assert corpus.stats.examples == {"empty_response": ["owner/corpus[train]:row 2"]}


def test_hub_load_failure_is_refused_naming_the_id(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline_load_dataset(dataset_id, split):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline_load_dataset)
    with pytest.raises(CorpusError, match="owner/corpus: not a local path.*hub unreachable"):
        load_corpus(CorpusConfig(path="owner/corpus"))


def test_missing_file_is_refused_naming_the_path(tmp_path):
    with pytest.raises(CorpusError, match=f"{tmp_path / 'absent.jsonl'}: no such file"):
        load(tmp_path / "absent.jsonl")


def test_unknown_extension_is_refused_listing_supported_formats(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("instruction,output\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"rows.csv: unsupported file format; supported: \.jsonl, \.jsonl\.gz"):
        load(path)


# --- row shapes -----------------------------------------------------------------------------------------


def test_chat_row_splits_into_context_instruction_and_response(tmp_path):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
    ]
    sample = load(write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])).samples[0]
    assert sample.context == (("system", "Be brief."), ("user", "What is 2+2?"), ("assistant", "4"))
    assert (sample.instruction, sample.input, sample.response) == ("And 3+3?", "", "6")
    assert sample.raw == {"messages": messages}


def test_null_input_reads_as_empty_input(tmp_path):
    row = {"instruction": "Say hi.", "input": None, "output": "Hi."}
    assert load(write_jsonl(tmp_path / "rows.jsonl", [row])).samples[0].input == ""


def test_absent_input_reads_as_empty_input(tmp_path):
    row = {"instruction": "Say hi.", "output": "Hi."}
    assert load(write_jsonl(tmp_path / "rows.jsonl", [row])).samples[0].input == ""


def test_response_field_is_read_when_output_is_absent(tmp_path):
    row = {"instruction": "Say hi.", "response": "Hi."}
    assert load(write_jsonl(tmp_path / "rows.jsonl", [row])).samples[0].response == "Hi."


def test_text_is_kept_unstripped(tmp_path):
    row = {"instruction": "  Say hi. ", "input": "\tto me\n", "output": "\n Hi. \n"}
    sample = load(write_jsonl(tmp_path / "rows.jsonl", [row])).samples[0]
    assert (sample.instruction, sample.input, sample.response) == ("  Say hi. ", "\tto me\n", "\n Hi. \n")


def test_blank_lines_are_not_rows_and_keep_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD_ROW) + "\n\n  \n" + json.dumps(ROWS[2]) + "\n", encoding="utf-8")
    corpus = load(path)
    assert corpus.stats.rows_read == 2
    assert corpus.stats.examples == {"empty_response": ["rows.jsonl:4"]}


# --- counted skips --------------------------------------------------------------------------------------


def chat(*turns: tuple[Any, Any]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


BAD_ROWS = {
    "absent instruction": ({"input": "", "output": "x"}, "missing_field:instruction"),
    "null instruction": ({"instruction": None, "output": "x"}, "missing_field:instruction"),
    "absent output": ({"instruction": "x", "input": ""}, "missing_field:output"),
    "null output": ({"instruction": "x", "output": None}, "missing_field:output"),
    "integer instruction": ({"instruction": 7, "output": "x"}, "non_string_field:instruction"),
    "list input": ({"instruction": "x", "input": ["a"], "output": "x"}, "non_string_field:input"),
    "object output": ({"instruction": "x", "output": {"text": "x"}}, "non_string_field:output"),
    "number response alias": ({"instruction": "x", "response": 1}, "non_string_field:response"),
    "whitespace instruction": ({"instruction": " \n", "output": "x"}, "empty_instruction"),
    "empty output": ({"instruction": "x", "output": ""}, "empty_response"),
    "whitespace output": ({"instruction": "x", "output": " \t\n"}, "empty_response"),
    "messages not a list": ({"messages": "user: hi"}, "bad_messages"),
    "no messages": ({"messages": []}, "bad_messages"),
    "message not an object": ({"messages": ["hi", "hello"]}, "bad_messages"),
    "message without role": (
        {"messages": [{"content": "hi"}, {"role": "assistant", "content": "a"}]},
        "bad_messages",
    ),
    "unknown role": (chat(("user", "hi"), ("tool", "42")), "bad_messages"),
    "non-string content": (chat(("user", "hi"), ("assistant", None)), "bad_messages"),
    "ends with the user": (chat(("assistant", "hello"), ("user", "hi")), "bad_messages"),
    "only an answer": (chat(("assistant", "hello")), "bad_messages"),
    "two answers in a row": (chat(("user", "hi"), ("assistant", "a"), ("assistant", "b")), "bad_messages"),
    "system before the answer": (chat(("user", "hi"), ("system", "s"), ("assistant", "a")), "bad_messages"),
    "empty user turn": (chat(("user", "  "), ("assistant", "a")), "empty_instruction"),
    "empty answer": (chat(("user", "hi"), ("assistant", "\n")), "empty_response"),
}


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_row_is_skipped_and_counted_with_its_reason_and_location(tmp_path, row, reason):
    corpus = load(write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW, row]))
    assert corpus.stats.skipped == {reason: 1}
    assert corpus.stats.examples == {reason: ["rows.jsonl:2"]}
    assert [sample.id for sample in corpus.samples] == ["0"]


def test_exact_duplicate_is_skipped_keeping_the_first(tmp_path):
    corpus = load(write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW, ROWS[0], GOOD_ROW]))
    assert corpus.stats.skipped == {"duplicate": 1}
    assert corpus.stats.examples == {"duplicate": ["rows.jsonl:3"]}
    assert [sample.id for sample in corpus.samples] == ["0", "1"]


def test_rows_differing_only_in_chat_context_are_not_duplicates(tmp_path):
    rows = [
        chat(("user", "hi"), ("assistant", "a")),
        chat(("system", "s"), ("user", "hi"), ("assistant", "a")),
    ]
    assert len(load(write_jsonl(tmp_path / "rows.jsonl", rows)).samples) == 2


def test_duplicates_are_kept_when_not_dropped(tmp_path):
    corpus = load(write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW, GOOD_ROW]), drop_duplicates=False)
    assert corpus.stats.skipped == {}
    assert len(corpus.samples) == 2


# --- refusals -------------------------------------------------------------------------------------------


def test_broken_json_line_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD_ROW) + "\n" + json.dumps(GOOD_ROW) + "\n" + '{"instruction": "x",\n')
    with pytest.raises(CorpusError, match=f"{path}:3: invalid JSON"):
        load(path)


def test_json_line_that_is_not_an_object_is_refused_with_file_and_line(tmp_path):
    with pytest.raises(CorpusError, match=r"rows.jsonl:2: the line is a list, expected a JSON object"):
        load(write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW, ["x", "y"]]))


def test_invalid_utf8_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(json.dumps(GOOD_ROW).encode() + b"\n" + b'{"instruction": "\xff"}\n')
    with pytest.raises(CorpusError, match=f"{path}:2: not UTF-8 text"):
        load(path)


def test_corrupt_gzip_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(b"this is not gzip data\n")
    with pytest.raises(CorpusError, match=f"{path}:1: cannot read the file"):
        load(path)


def test_truncated_gzip_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(GOOD_ROW) + "\n").encode() * 50)[:-20])
    with pytest.raises(CorpusError, match=f"{path}:\\d+: cannot read the file"):
        load(path)


def test_corrupt_parquet_is_refused_naming_the_file(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(CorpusError, match=f"{path}: cannot read Parquet"):
        load(path)


def test_broken_json_array_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": "a" "output": "b"}\n]')
    with pytest.raises(CorpusError, match=f"{path}:3: invalid JSON"):
        load(path)


def test_json_array_element_that_is_not_an_object_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n{"instruction": "a", "output": "b"},\n"just text"\n]')
    with pytest.raises(CorpusError, match=f"{path}:3: row 1 is a str, expected a JSON object"):
        load(path)


def test_json_file_that_is_not_an_array_is_refused(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"data": ROWS}))
    with pytest.raises(CorpusError, match=f"{path}:1: expected a JSON array of row objects"):
        load(path)


def test_json_array_with_trailing_data_is_refused(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(ROWS) + "\n[]")
    with pytest.raises(CorpusError, match=f"{path}:2: unexpected data after the end of the JSON array"):
        load(path)


def test_source_without_a_valid_row_is_refused_naming_file_and_skip_counts(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [ROWS[2], {"instruction": "x"}])
    with pytest.raises(CorpusError, match=f"{path}: no valid row among 2 rows read.*'empty_response': 1"):
        load(path)


def test_repeated_id_is_refused_naming_both_locations(tmp_path):
    rows = [dict(GOOD_ROW, uid="a"), dict(ROWS[0], uid="b"), dict(ROWS[1], uid="a")]
    with pytest.raises(CorpusError, match=r"rows.jsonl:3: id 'a' \(field 'uid'\) repeats the id of rows.jsonl:1"):
        load(write_jsonl(tmp_path / "rows.jsonl", rows), id_field="uid")


def test_absent_id_is_refused_naming_the_line(tmp_path):
    rows = [dict(GOOD_ROW, uid="a"), ROWS[0]]
    with pytest.raises(CorpusError, match=r"rows.jsonl:2: id field 'uid' must be a str or int.*absent"):
        load(write_jsonl(tmp_path / "rows.jsonl", rows), id_field="uid")


def test_id_that_is_not_str_or_int_is_refused(tmp_path):
    with pytest.raises(CorpusError, match=r"rows.jsonl:1: id field 'uid' must be a str or int, got float"):
        load(write_jsonl(tmp_path / "rows.jsonl", [dict(GOOD_ROW, uid=1.5)]), id_field="uid")


# --- ids and limit --------------------------------------------------------------------------------------


def test_default_ids_are_row_positions_that_survive_skips(tmp_path):
    corpus = load(write_jsonl(tmp_path / "rows.jsonl", [ROWS[2], *ROWS[:2]]))
    assert [(sample.id, sample.source_index) for sample in corpus.samples] == [("1", 1), ("2", 2)]


def test_ids_are_stable_across_loads(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    assert [sample.id for sample in load(path).samples] == [sample.id for sample in load(path).samples]


def test_id_field_values_become_string_ids(tmp_path):
    rows = [dict(GOOD_ROW, uid=10), dict(ROWS[0], uid="x-1")]
    corpus = load(write_jsonl(tmp_path / "rows.jsonl", rows), id_field="uid")
    assert [sample.id for sample in corpus.samples] == ["10", "x-1"]


def test_limit_reads_only_the_first_rows(tmp_path):
    corpus = load(write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW, *ROWS]), limit=3)
    assert corpus.stats.rows_read == 3
    assert [sample.id for sample in corpus.samples] == ["0", "1", "2"]


def test_limit_stops_reading_before_later_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD_ROW) + "\nnot json\n", encoding="utf-8")
    assert load(path, limit=1).stats.rows_read == 1


def test_read_rows_yields_locations_and_rows_in_order(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    assert list(read_rows(path)) == [(f"rows.jsonl:{line}", row) for line, row in enumerate(ROWS, start=1)]


# --- stats ----------------------------------------------------------------------------------------------


def test_stats_keep_at_most_five_examples_per_reason():
    stats = CorpusStats(rows_read=10)
    for line in range(1, 8):
        stats.count("empty_response", f"rows.jsonl:{line}")
    assert stats.skipped == {"empty_response": 7}
    assert stats.examples["empty_response"] == [f"rows.jsonl:{line}" for line in range(1, 6)]
    assert stats.rows_valid == 3


def test_flagged_rows_do_not_lower_valid_rows():
    stats = CorpusStats(rows_read=4)
    stats.count("too_long", "rows.jsonl:1")
    stats.count("truncated", "rows.jsonl:2", dropped=False)
    assert (stats.rows_valid, stats.skipped, stats.flagged) == (3, {"too_long": 1}, {"truncated": 1})


def test_a_reason_cannot_be_both_dropped_and_flagged():
    stats = CorpusStats(rows_read=2)
    stats.count("too_long", "rows.jsonl:1")
    with pytest.raises(ValueError, match="'too_long' is already counted as dropped"):
        stats.count("too_long", "rows.jsonl:2", dropped=False)


def test_merge_adds_counts_and_caps_examples():
    first = CorpusStats(rows_read=10, skipped={"duplicate": 4}, examples={"duplicate": ["a:1", "a:2", "a:3", "a:4"]})
    second = CorpusStats(rows_read=5, skipped={"duplicate": 2}, flagged={"truncated": 1})
    second.examples = {"duplicate": ["b:1", "b:2"], "truncated": ["b:3"]}
    first.merge(second)
    assert (first.rows_read, first.rows_valid) == (15, 9)
    assert (first.skipped, first.flagged) == ({"duplicate": 6}, {"truncated": 1})
    assert first.examples == {"duplicate": ["a:1", "a:2", "a:3", "a:4", "b:1"], "truncated": ["b:3"]}


def test_stats_dict_is_json_serialisable_and_sorted(tmp_path):
    corpus = load(write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW, ROWS[2], {"output": "x"}]))
    summary = json.loads(json.dumps(corpus.stats.to_dict()))
    assert summary == {
        "rows_read": 3,
        "rows_valid": 1,
        "skipped": {"empty_response": 1, "missing_field:instruction": 1},
        "flagged": {},
        "examples": {"empty_response": ["rows.jsonl:2"], "missing_field:instruction": ["rows.jsonl:3"]},
    }


# --- streaming ------------------------------------------------------------------------------------------


def mixed_rows() -> list[Any]:
    """Good Alpaca and chat rows with bad rows and duplicates (Alpaca and chat) among them."""
    return [
        GOOD_ROW,
        ROWS[2],
        chat(("system", "s"), ("user", "hi"), ("assistant", "a")),
        {"instruction": 7, "output": "x"},
        GOOD_ROW,
        ROWS[1],
        chat(("system", "s"), ("user", "hi"), ("assistant", "a")),
        chat(("user", "hi"), ("assistant", "a")),
        {"messages": []},
        ROWS[0],
    ]


def test_iter_samples_gives_exactly_load_corpus_samples_and_stats(tmp_path):
    config = CorpusConfig(path=str(write_jsonl(tmp_path / "rows.jsonl", mixed_rows())))
    stats = CorpusStats()
    streamed = list(iter_samples(config, stats))
    loaded = load_corpus(config)
    assert streamed == loaded.samples
    assert [sample.raw for sample in streamed] == [sample.raw for sample in loaded.samples]
    assert stats == loaded.stats
    assert [sample.id for sample in streamed] == ["0", "2", "5", "7", "9"]
    assert stats.skipped == {
        "empty_response": 1,
        "non_string_field:instruction": 1,
        "duplicate": 2,
        "bad_messages": 1,
    }


def test_iter_samples_yields_rows_before_the_source_is_read_to_the_end(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD_ROW) + "\n" + '{"instruction": "x",\n', encoding="utf-8")
    samples = iter_samples(CorpusConfig(path=str(path)), CorpusStats())
    assert next(samples).id == "0"
    with pytest.raises(CorpusError, match=f"{path}:2: invalid JSON"):
        next(samples)


def test_iter_samples_without_raw_leaves_raw_empty(tmp_path):
    config = CorpusConfig(path=str(write_jsonl(tmp_path / "rows.jsonl", mixed_rows())))
    samples = list(iter_samples(config, CorpusStats(), keep_raw=False))
    assert samples == load_corpus(config).samples
    assert all(sample.raw == {} for sample in samples)


def test_iter_samples_refuses_a_source_without_a_valid_row_after_reading_it(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [ROWS[2], {"instruction": "x"}])
    stats = CorpusStats()
    with pytest.raises(CorpusError, match=f"{path}: no valid row among 2 rows read"):
        list(iter_samples(CorpusConfig(path=str(path)), stats))
    assert stats.rows_read == 2


def test_content_digest_is_16_bytes_and_tells_field_boundaries_apart():
    digest = content_digest("ab", "c", "r", ())
    assert len(digest) == 16
    assert digest == content_digest("ab", "c", "r", ())
    assert digest != content_digest("a", "bc", "r", ())
    assert content_digest("u", "", "r", (("system", "s"),)) != content_digest("u", "", "r", ())
    assert content_digest("u", "", "r", (("user", "ab"),)) != content_digest("u", "", "r", (("usera", "b"),))


def test_rows_differing_only_in_field_boundaries_are_not_duplicates(tmp_path):
    rows = [{"instruction": "ab", "input": "c", "output": "r"}, {"instruction": "a", "input": "bc", "output": "r"}]
    assert len(load(write_jsonl(tmp_path / "rows.jsonl", rows)).samples) == 2


def test_lone_surrogates_do_not_break_duplicate_detection(tmp_path):
    path = tmp_path / "rows.jsonl"
    line = '{"instruction": "odd \\ud800 text", "output": "x"}\n'
    path.write_text(line * 2, encoding="utf-8")
    corpus = load(path)
    assert (len(corpus.samples), corpus.stats.skipped) == (1, {"duplicate": 1})


# --- texts and config -----------------------------------------------------------------------------------

SAMPLE = Sample(id="0", instruction="Translate.", input="Bonjour", response="Hello")


def test_embed_text_defaults_to_instruction_and_input():
    assert embed_text(SAMPLE) == "Translate.\n\nBonjour" == SAMPLE.user_text()


def test_embed_text_passes_over_empty_fields():
    sample = Sample(id="0", instruction="Say hi.", input="", response="Hi.")
    assert embed_text(sample, ("instruction", "input", "response")) == "Say hi.\n\nHi."


def test_embed_text_refuses_an_unknown_field():
    with pytest.raises(ValueError, match=r"unknown embed field\(s\) \['output'\]"):
        embed_text(SAMPLE, ("instruction", "output"))


def test_concept_text_joins_instruction_input_and_response():
    assert concept_text(SAMPLE) == "Translate.\n\nBonjour\n\nHello"


def test_config_accepts_a_list_of_embed_fields():
    assert CorpusConfig(path="x.jsonl", embed_fields=["instruction"]).embed_fields == ("instruction",)


def test_config_refuses_an_unknown_embed_field():
    with pytest.raises(ValueError, match="unknown embed field"):
        CorpusConfig(path="x.jsonl", embed_fields=("prompt",))


def test_config_refuses_a_non_positive_limit():
    with pytest.raises(ValueError, match="limit must be a positive number of rows, got 0"):
        CorpusConfig(path="x.jsonl", limit=0)


# --- pools drawn from a larger corpus ----------------------------------------------------------------------


def numbered_rows(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"Say {i}.", "input": "", "output": f"{i}."} for i in range(n)]


def test_sample_keeps_a_seeded_uniform_subset_in_source_order_and_counts_the_rest(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", numbered_rows(50))
    corpus = load(path, sample=10, sample_seed=3)
    positions = [sample.source_index for sample in corpus.samples]
    assert len(positions) == 10 and positions == sorted(positions)
    assert [sample.id for sample in corpus.samples] == [str(p) for p in positions]  # ids stay source positions
    assert corpus.stats.skipped == {"not_sampled": 40} and corpus.stats.rows_valid == 10
    assert [s.id for s in load(path, sample=10, sample_seed=3).samples] == [s.id for s in corpus.samples]
    assert [s.id for s in load(path, sample=10, sample_seed=4).samples] != [s.id for s in corpus.samples]
    assert len(load(path, sample=80).samples) == 50  # fewer rows than the sample: all kept


def test_sample_is_uniform_over_rows():
    stats = CorpusStats()
    counts = [0] * 20
    for seed in range(400):
        rows = [Sample(id=str(i), instruction="i", input="", response="r", source_index=i) for i in range(20)]
        from paser.selection.corpus import sample_rows

        for kept in sample_rows(rows, 5, seed, stats):
            counts[kept.source_index] += 1
    assert all(60 <= count <= 140 for count in counts)  # expected 100 each


def test_exclude_rows_skips_the_listed_positions_before_sampling(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", numbered_rows(30))
    listed = tmp_path / "calibration_rows.txt"
    listed.write_text("0\n5\n\n29\n", encoding="utf-8")
    corpus = load(path, exclude_rows=str(listed))
    assert {s.source_index for s in corpus.samples} == set(range(30)) - {0, 5, 29}
    assert corpus.stats.skipped == {"excluded": 3}
    sampled = load(path, exclude_rows=str(listed), sample=27)
    assert len(sampled.samples) == 27 and sampled.stats.skipped == {"excluded": 3}


@pytest.mark.parametrize(("text", "message"), [(None, "does not exist"), ("3\nx7\n", r"calibration_rows.txt:2")])
def test_a_bad_exclude_rows_file_is_refused_naming_it(tmp_path, text, message):
    path = write_jsonl(tmp_path / "c.jsonl", numbered_rows(5))
    listed = tmp_path / "calibration_rows.txt"
    if text is not None:
        listed.write_text(text, encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        load(path, exclude_rows=str(listed))


def test_a_non_positive_sample_is_refused():
    with pytest.raises(ValueError, match="sample must be a positive"):
        CorpusConfig(path="x.jsonl", sample=0)
