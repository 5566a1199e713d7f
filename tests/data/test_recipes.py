import gzip
import json

import pytest

from paser.data.paths import data_file
from paser.data.recipes import RECIPES, get_recipe, main, prepare_corpus
from paser.selection.corpus import CorpusConfig, CorpusError, load_corpus

# Per recipe: source rows in that dataset's own shape (good and bad), the rows the recipe must write,
# and the skips / flags it must count (reason -> source lines, 1-based as in the JSONL fixture).
CASES = {
    "alpaca": {
        "rows": [
            {"instruction": "Add 2 and 3.", "input": "", "output": "5", "text": "### Instruction: Add 2 and 3."},
            {"instruction": "Translate to English.", "input": "chat", "output": "cat"},
            {"instruction": "Describe the sea.", "input": ""},
            {"instruction": "Name a colour.", "output": "Blue."},
            {"instruction": "Say nothing.", "input": "", "output": "  \n"},
            {"instruction": ["not", "text"], "input": "", "output": "x"},
        ],
        "written": [
            {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
            {"instruction": "Translate to English.", "input": "chat", "output": "cat"},
            {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        ],
        "skipped": {"missing_field:output": [3], "empty_response": [5], "non_string_field:instruction": [6]},
        "flagged": {},
    },
    "dolly": {
        "rows": [
            {"instruction": "Who wrote Hamlet?", "context": "", "response": "Shakespeare.", "category": "open_qa"},
            {
                "instruction": "Summarise the text.",
                "context": "Cats sleep a lot. They also eat.",
                "response": "Cats sleep and eat.",
                "category": "summarization",
            },
            {"instruction": "When did it happen?", "context": "", "category": "closed_qa"},
            {"instruction": "List three birds.", "context": "", "response": "", "category": "brainstorming"},
            {"instruction": "  ", "context": "", "response": "Anything.", "category": "general_qa"},
        ],
        "written": [
            {"instruction": "Who wrote Hamlet?", "input": "", "output": "Shakespeare.", "category": "open_qa"},
            {
                "instruction": "Summarise the text.",
                "input": "Cats sleep a lot. They also eat.",
                "output": "Cats sleep and eat.",
                "category": "summarization",
            },
        ],
        "skipped": {"missing_field:response": [3], "empty_response": [4], "empty_instruction": [5]},
        "flagged": {},
    },
    "lamini": {
        "rows": [
            {
                "instruction": "Write a haiku about rain.",
                "response": "Soft rain on the roof.",
                "instruction_source": "alpaca",
            },
            {
                "instruction": "Define entropy.",
                "response": "A measure of disorder.",
                "instruction_source": "self_instruct",
            },
            {"instruction": "Explain gravity.", "instruction_source": "flan"},
            {"instruction": "Tell a joke.", "response": 42, "instruction_source": "p3"},
        ],
        "written": [
            {
                "instruction": "Write a haiku about rain.",
                "input": "",
                "output": "Soft rain on the roof.",
                "instruction_source": "alpaca",
            },
            {
                "instruction": "Define entropy.",
                "input": "",
                "output": "A measure of disorder.",
                "instruction_source": "self_instruct",
            },
        ],
        "skipped": {"missing_field:response": [3], "non_string_field:response": [4]},
        "flagged": {},
    },
    "sharegpt": {
        "rows": [
            {"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
            {
                "id": "b",
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "2+2?"},
                    {"from": "gpt", "value": "4"},
                    {"from": "human", "value": "And 3+3?"},
                    {"from": "gpt", "value": "6"},
                ],
            },
            {
                "id": "c",
                "conversations": [
                    {"from": "human", "value": "Name a fruit."},
                    {"from": "gpt", "value": "Apple."},
                    {"from": "human", "value": "Another?"},
                ],
            },
            {"id": "d", "conversations": [{"from": "human", "value": "Q"}, {"from": "bing", "value": "A"}]},
            {"id": "e", "conversations": [{"from": "human", "value": "Anyone there?"}]},
            {
                "messages": [
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                ]
            },
            {"id": "g", "conversations": "human: hi"},
            {"id": "h", "conversations": [{"from": "human", "value": "Hi again"}, {"from": "gpt", "value": " "}]},
        ],
        "written": [
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "4"},
                    {"role": "user", "content": "And 3+3?"},
                    {"role": "assistant", "content": "6"},
                ]
            },
            {"messages": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Apple."}]},
            {
                "messages": [
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                ]
            },
        ],
        "skipped": {"unknown_role": [4], "no_user_assistant_pair": [5], "bad_conversation": [7], "empty_response": [8]},
        "flagged": {"trimmed_to_last_answer": [3]},
    },
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def locations(name, lines):
    return [f"{name}:{line}" for line in lines]


def test_every_registered_recipe_has_a_case_and_a_description():
    assert set(CASES) == set(RECIPES)
    assert all(recipe.description and recipe.name == name for name, recipe in RECIPES.items())


@pytest.mark.parametrize("name", sorted(CASES))
def test_recipe_writes_the_golden_rows(name, tmp_path):
    case = CASES[name]
    source = write_jsonl(tmp_path / f"{name}.jsonl", case["rows"])
    out = tmp_path / "out.jsonl"
    prepare_corpus(name, source, out)
    assert read_jsonl(out) == case["written"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_recipe_counts_every_skipped_and_flagged_row_with_its_line(name, tmp_path):
    case = CASES[name]
    source = write_jsonl(tmp_path / f"{name}.jsonl", case["rows"])
    stats = prepare_corpus(name, source, tmp_path / "out.jsonl")
    assert stats.rows_read == len(case["rows"])
    assert stats.rows_written == len(case["written"])
    assert stats.skipped == {reason: len(lines) for reason, lines in case["skipped"].items()}
    assert stats.flagged == {reason: len(lines) for reason, lines in case["flagged"].items()}
    expected_examples = {**case["skipped"], **case["flagged"]}
    assert stats.examples == {reason: locations(source.name, lines) for reason, lines in expected_examples.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_written_corpus_loads_with_no_skips(name, tmp_path):
    case = CASES[name]
    source = write_jsonl(tmp_path / f"{name}.jsonl", case["rows"])
    out = prepare_corpus(name, source, tmp_path / "out.jsonl.gz").out
    corpus = load_corpus(CorpusConfig(path=out))
    assert corpus.stats.skipped == {}
    assert [sample.raw for sample in corpus.samples] == case["written"]


def test_sharegpt_earlier_turns_become_the_samples_context(tmp_path):
    source = write_jsonl(tmp_path / "chat.jsonl", CASES["sharegpt"]["rows"][1:2])
    out = prepare_corpus("sharegpt", source, tmp_path / "out.jsonl").out
    (sample,) = load_corpus(CorpusConfig(path=out)).samples
    assert (sample.instruction, sample.response) == ("And 3+3?", "6")
    assert sample.context == (("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"))


def test_normalise_returns_the_row_or_none_and_the_reason():
    recipe = get_recipe("dolly")
    row = {"instruction": "Hi?", "context": "", "response": "Hello.", "category": "open_qa"}
    assert recipe.normalise(row) == (
        {"instruction": "Hi?", "input": "", "output": "Hello.", "category": "open_qa"},
        None,
    )
    assert recipe.normalise({"instruction": "Hi?"}) == (None, "missing_field:response")


def test_unknown_recipe_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="^unknown corpus recipe 'oasst'; known: alpaca, dolly, lamini, sharegpt$"):
        prepare_corpus("oasst", tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match=r"did you mean dolly\?$"):
        prepare_corpus("doly", tmp_path / "in.jsonl", tmp_path / "out.jsonl")


def test_unparseable_row_names_the_file_and_line(tmp_path):
    source = tmp_path / "broken.jsonl"
    source.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(CorpusError, match=r"broken\.jsonl:2: invalid JSON"):
        prepare_corpus("alpaca", source, out)
    assert not out.exists()


def test_a_source_with_no_convertible_row_is_refused_and_leaves_out_unchanged(tmp_path):
    source = write_jsonl(tmp_path / "dolly.jsonl", [{"instruction": "a", "context": ""}] * 3)
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"converted none of the 3 rows read.*missing_field:response': 3"):
        prepare_corpus("dolly", source, out)
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dolly.jsonl", "out.jsonl"]


def test_output_must_be_json_lines(tmp_path):
    source = write_jsonl(tmp_path / "alpaca.jsonl", CASES["alpaca"]["rows"])
    with pytest.raises(ValueError, match=r"must be JSON Lines, named \.jsonl or \.jsonl\.gz"):
        prepare_corpus("alpaca", source, tmp_path / "out.json")


def test_limit_converts_only_the_first_rows(tmp_path):
    source = write_jsonl(tmp_path / "alpaca.jsonl", CASES["alpaca"]["rows"])
    stats = prepare_corpus("alpaca", source, tmp_path / "out.jsonl", limit=3)
    assert (stats.rows_read, stats.rows_written, stats.skipped) == (3, 2, {"missing_field:output": 1})


def test_parquet_and_json_array_sources_give_the_same_rows(tmp_path):
    import pyarrow
    import pyarrow.parquet

    rows = CASES["dolly"]["rows"][:2]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "dolly.parquet")
    (tmp_path / "dolly.json").write_text(json.dumps(rows), encoding="utf-8")
    for name in ("dolly.parquet", "dolly.json"):
        prepare_corpus("dolly", tmp_path / name, tmp_path / f"{name}.jsonl")
        assert read_jsonl(tmp_path / f"{name}.jsonl") == CASES["dolly"]["written"]


def test_a_hub_id_is_loaded_through_datasets(tmp_path, monkeypatch):
    import datasets

    calls = []
    hub_rows = [{**row, "text": "rendered prompt"} for row in CASES["alpaca"]["written"]]

    def fake_load_dataset(path, split):
        calls.append((path, split))
        return datasets.Dataset.from_list(hub_rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    stats = prepare_corpus("alpaca", "tatsu-lab/alpaca", tmp_path / "out.jsonl", split="train")
    assert calls == [("tatsu-lab/alpaca", "train")]
    assert read_jsonl(tmp_path / "out.jsonl") == CASES["alpaca"]["written"]
    assert stats.source == "tatsu-lab/alpaca"


def test_an_unreachable_hub_is_a_clear_error(tmp_path, monkeypatch):
    import datasets

    def unreachable(path, split):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(CorpusError, match=r"yahma/alpaca-cleaned: not a local path, and loading it as a Hugging Face"):
        prepare_corpus("alpaca", "yahma/alpaca-cleaned", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_main_defaults_the_source_to_the_first_hub_id_and_prints_one_line(tmp_path, monkeypatch, capsys):
    import datasets

    calls = []

    def fake_load_dataset(path, split):
        calls.append((path, split))
        # Arrow columns have one type: the row with an int response cannot be in a hub dataset.
        return datasets.Dataset.from_list(CASES["lamini"]["rows"][:3])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "lamini.jsonl"
    assert main(["lamini", "--out", str(out), "--split", "train"]) == 0
    assert calls == [("MBZUAI/LaMini-instruction", "train")]
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"[paser] lamini: read 3 rows from MBZUAI/LaMini-instruction, wrote 2 to {out}; skipped: "
        "missing_field:response 1 (e.g. MBZUAI/LaMini-instruction[train]:row 2)"
    ]


def test_main_refuses_a_recipe_without_a_default_source(tmp_path):
    with pytest.raises(ValueError, match="recipe 'sharegpt' has no default hub dataset; pass --source"):
        main(["sharegpt", "--out", str(tmp_path / "chat.jsonl")])


def test_a_real_alpaca_slice_round_trips(tmp_path):
    try:
        source = data_file("recovery/alpaca_52k.jsonl.gz")
    except FileNotFoundError as missing:
        pytest.skip(f"shared data not available: {missing}")
    stats = prepare_corpus("alpaca", source, tmp_path / "alpaca.jsonl", limit=200)
    # The first 200 rows of Alpaca-52K are all well formed (its 28 empty outputs come later).
    assert (stats.rows_read, stats.rows_written, stats.skipped) == (200, 200, {})
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        original = [json.loads(next(handle)) for _ in range(200)]
    assert read_jsonl(tmp_path / "alpaca.jsonl") == original
    corpus = load_corpus(CorpusConfig(path=str(tmp_path / "alpaca.jsonl")))
    assert (len(corpus.samples), corpus.stats.skipped) == (200, {})
    assert corpus.samples[0].instruction == "Give three tips for staying healthy."
