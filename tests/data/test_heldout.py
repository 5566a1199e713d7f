"""Built-in held-out sets: the rows each builder writes, from planted files and from the real shared data."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from paser.data.heldout import (
    HELDOUT_BUILDERS,
    LONG_REFERENCE,
    PROMPT_CHARACTERS,
    heldout_rows,
    heldout_source,
    main,
    prompt_key,
    write_heldout,
)
from paser.data.paths import data_file
from paser.selection.corpus import CorpusConfig, load_corpus

CATEGORIES = {"Sentiment": 10, "Summarization": 6, "Topic Classification": 2}


def _planted_data_dir(root):
    """A data folder with a 5-row GSM8K file and an 18-row labelled T0 file (categories of 10, 6 and 2 rows)."""
    (root / "eval").mkdir(parents=True)
    (root / "recovery").mkdir()
    gsm8k = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(5)]
    (root / "eval" / "gsm8k_test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in gsm8k))
    t0 = [
        {"id": f"{category}-{i}", "instruction": f"{category} prompt {i}", "input": "", "output": f"answer {i}"}
        | {"category": category, "dataset": "d", "task": "t"}
        for category, count in CATEGORIES.items()
        for i in range(count)
    ]
    with gzip.open(root / "recovery" / "t0_labelled_dev.jsonl.gz", "wt", encoding="utf-8") as stream:
        stream.write("".join(json.dumps(row) + "\n" for row in t0))
    return root


def test_gsm8k_rows_are_question_to_answer_in_file_order(tmp_path):
    rows = heldout_rows("gsm8k", limit=3, data_dir=_planted_data_dir(tmp_path))
    assert rows == [
        {
            "id": f"gsm8k/{i}",
            "instruction": f"What is {i} + {i}?",
            "input": "",
            "output": f"{i} + {i} = {2 * i}\n#### {2 * i}",
        }
        for i in range(3)
    ]


def test_t0_draw_is_even_over_categories_seeded_and_in_file_order(tmp_path):
    data_dir = _planted_data_dir(tmp_path)
    rows = heldout_rows("t0", limit=7, data_dir=data_dir)
    # Round-robin over sorted categories: the 2-row category runs out, the others share the rest.
    assert Counter(row["category"] for row in rows) == {"Sentiment": 3, "Summarization": 2, "Topic Classification": 2}
    everything = [row["id"] for row in heldout_rows("t0", limit=100, data_dir=data_dir)]
    assert [row["id"] for row in rows] == [row_id for row_id in everything if row_id in {row["id"] for row in rows}]
    assert rows == heldout_rows("t0", limit=7, data_dir=data_dir)
    assert set(rows[0]) == {"id", "instruction", "input", "output", "category", "dataset", "task"}


def test_t0_labels_draw_label_categories_with_short_references_seeded(tmp_path):
    data_dir = _planted_data_dir(tmp_path)
    rows = heldout_rows("t0_labels", limit=4, data_dir=data_dir)
    # Summarization is no label category; the two categories give in turn.
    assert Counter(row["category"] for row in rows) == {"Sentiment": 2, "Topic Classification": 2}
    assert rows == heldout_rows("t0_labels", limit=4, data_dir=data_dir)
    assert len(heldout_rows("t0_labels", limit=100, data_dir=data_dir)) == 12


def test_a_set_leaves_out_the_prompts_it_is_told_to(tmp_path):
    data_dir = _planted_data_dir(tmp_path)
    pool = {prompt_key("  SENTIMENT prompt 0 "), prompt_key("Topic Classification prompt 1")}
    rows = heldout_rows("t0_labels", limit=100, data_dir=data_dir, exclude=pool)
    assert {row["id"] for row in rows} == {f"Sentiment-{i}" for i in range(1, 10)} | {"Topic Classification-0"}
    assert [row["id"] for row in heldout_rows("gsm8k", 2, data_dir, {prompt_key("What is 0 + 0?")})] == [
        "gsm8k/1",
        "gsm8k/2",
    ]


def test_alpaca_longform_draws_long_references_in_file_order(tmp_path):
    (tmp_path / "recovery").mkdir()
    rows = [
        {"instruction": f"Tell me about {i}.", "input": "", "output": "x" * (LONG_REFERENCE + i - 3)} for i in range(8)
    ]
    rows.append({"instruction": "y" * (PROMPT_CHARACTERS + 1), "input": "", "output": "x" * 2 * LONG_REFERENCE})
    with gzip.open(tmp_path / "recovery" / "alpaca_52k.jsonl.gz", "wt", encoding="utf-8") as stream:
        stream.write("".join(json.dumps(row) + "\n" for row in rows))
    everything = heldout_rows("alpaca_longform", limit=100, data_dir=tmp_path)
    assert [row["id"] for row in everything] == [f"alpaca/{i}" for i in range(3, 8)]  # long enough, short prompt
    drawn = heldout_rows("alpaca_longform", limit=3, data_dir=tmp_path)
    assert len(drawn) == 3 and drawn == sorted(drawn, key=lambda row: int(row["id"].split("/")[1]))
    assert drawn == heldout_rows("alpaca_longform", limit=3, data_dir=tmp_path)


def test_a_written_set_loads_as_a_corpus(tmp_path):
    out = tmp_path / "out" / "t0.jsonl.gz"
    assert write_heldout("t0", out, limit=5, data_dir=_planted_data_dir(tmp_path / "data")) == 5
    corpus = load_corpus(CorpusConfig(path=str(out), id_field="id"))
    assert len(corpus.samples) == 5 and corpus.stats.skipped == {}


def test_unknown_set_and_bad_output_are_refused(tmp_path):
    with pytest.raises(
        ValueError,
        match="^unknown built-in held-out set 'mmlu'; known: alpaca_longform, gsm8k, humaneval, t0, t0_labels$",
    ):
        heldout_rows("mmlu")
    with pytest.raises(ValueError, match="JSON Lines"):
        write_heldout("gsm8k", tmp_path / "x.csv", data_dir=_planted_data_dir(tmp_path))
    with pytest.raises(FileNotFoundError, match="HumanEval.jsonl.gz"):
        heldout_source("humaneval", tmp_path)


def test_cli_writes_the_set_and_says_where(tmp_path, capsys):
    from paser.pipelines.cli import main as paser

    data_dir = _planted_data_dir(tmp_path / "data")
    out = tmp_path / "gsm8k.jsonl"
    assert paser(["data", "heldout", "gsm8k", "--out", str(out), "--limit", "2", "--data-dir", str(data_dir)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert "held-out set gsm8k: wrote 2 rows" in capsys.readouterr().out
    assert main(["t0", "--out", str(out), "--data-dir", str(data_dir)]) == 0  # default 800: every planted row
    assert len(out.read_text().splitlines()) == sum(CATEGORIES.values())


def _shared(relative: str):
    try:
        return data_file(relative)
    except FileNotFoundError as missing:
        pytest.skip(f"shared data not available: {missing}")


def test_builders_read_the_real_shared_files():
    for builder in HELDOUT_BUILDERS.values():
        _shared(builder.relative)
    gsm8k = heldout_rows("gsm8k", limit=2)
    first = json.loads(_shared("eval/gsm8k_test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert gsm8k[0] == {"id": "gsm8k/0", "instruction": first["question"], "input": "", "output": first["answer"]}
    assert gsm8k[1]["output"].splitlines()[-1].startswith("#### ")
    humaneval = heldout_rows("humaneval", limit=3)
    with gzip.open(_shared("eval/HumanEval.jsonl.gz"), "rt", encoding="utf-8") as stream:
        tasks = [json.loads(next(stream)) for _ in range(3)]
    assert humaneval == [
        {"id": task["task_id"], "instruction": task["prompt"], "input": "", "output": task["canonical_solution"]}
        for task in tasks
    ]
    labels = heldout_rows("t0_labels")
    assert Counter(row["category"] for row in labels) == {
        "Paraphrase Identification": 32,
        "Sentiment": 32,
        "Topic Classification": 32,
    }
    assert all(len(row["output"].split()) <= 5 for row in labels)
    longform = heldout_rows("alpaca_longform")
    assert len(longform) == 64 and all(len(row["output"]) >= LONG_REFERENCE for row in longform)
    t0 = heldout_rows("t0", limit=16)
    assert Counter(row["category"] for row in t0) == {category: 2 for category in {row["category"] for row in t0}}
    assert len({row["category"] for row in t0}) == 8
    assert (
        len(heldout_rows("t0")) == 800 and len(heldout_rows("gsm8k")) == 1319 and len(heldout_rows("humaneval")) == 164
    )
