import json
from collections import Counter

from paser.data.demo import SKILLS, demo_rows, write_demo_corpus


def test_demo_corpus_has_every_skill_equally():
    rows = demo_rows(rows_per_skill=30)
    assert Counter(row["skill"] for row in rows) == {skill: 30 for skill in SKILLS}


def test_demo_rows_are_distinct_and_deterministic():
    rows = demo_rows(rows_per_skill=30, seed=3)
    keys = {json.dumps(row, sort_keys=True) for row in rows}
    assert len(keys) == len(rows)
    assert rows == demo_rows(rows_per_skill=30, seed=3)


def test_demo_answers_are_computed_correctly():
    for row in demo_rows(rows_per_skill=20):
        if row["skill"] == "sort_numbers":
            numbers = [int(value) for value in row["input"].split(", ")]
            assert row["output"] == ", ".join(map(str, sorted(numbers)))
        if row["skill"] == "reverse_word":
            assert f'"{row["input"][::-1]}"' in row["output"]


def test_written_corpus_is_jsonl(tmp_path):
    path = write_demo_corpus(tmp_path / "demo.jsonl", rows_per_skill=10)
    lines = path.read_text().splitlines()
    assert len(lines) == 10 * len(SKILLS)
    assert all({"instruction", "input", "output"} <= json.loads(line).keys() for line in lines)
