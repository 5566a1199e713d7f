"""studies/smollm2-wanda50-alpaca/setting-b/build_pool.py: setting B's pool of Alpaca rows and labelled T0
rows, on hand-made rows (no shared data needed)."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.studies.scripts import load_script

CATEGORIES = ("Sentiment", "Summarization", "Topic Classification")


@pytest.fixture(scope="module")
def build_pool():
    return load_script("smollm2-wanda50-alpaca/setting-b", "build_pool.py")


def alpaca_rows() -> list[dict]:
    rows = [{"instruction": f"do {line}", "input": "", "output": f"done {line}"} for line in range(20)]
    rows[3]["output"] = "  "  # an empty Alpaca output is never drawn
    return rows


def t0_rows() -> list[dict]:
    return [
        {
            "id": f"t0-{index}",
            "instruction": f"prompt {index}",
            "input": "",
            "output": f"label {index}",
            "category": CATEGORIES[index % 3],
            "dataset": "d",
            "task": "t",
            "extra": "left out",
        }
        for index in range(30)
    ]


def test_the_pool_holds_the_alpaca_rows_and_an_even_t0_draw(build_pool):
    rows = build_pool.mixed_pool(alpaca_rows(), t0_rows(), 6, 4, seed=0)
    categories = [row["category"] for row in rows]
    assert len(rows) == 6 + 3 * 4 and len({row["id"] for row in rows}) == len(rows)
    assert categories.count("Alpaca") == 6 and all(categories.count(category) == 4 for category in CATEGORIES)
    alpaca = [row for row in rows if row["category"] == "Alpaca"]
    assert all(row["id"].startswith("alpaca/") and row["output"].strip() for row in alpaca)
    assert "alpaca/3" not in {row["id"] for row in rows}
    assert all(set(row) == set(build_pool.T0_FIELDS) for row in rows if row["category"] != "Alpaca")


def test_the_same_seed_gives_the_same_pool_and_another_seed_another(build_pool):
    first = build_pool.mixed_pool(alpaca_rows(), t0_rows(), 6, 4, seed=0)
    assert build_pool.mixed_pool(alpaca_rows(), t0_rows(), 6, 4, seed=0) == first
    assert build_pool.mixed_pool(alpaca_rows(), t0_rows(), 6, 4, seed=1) != first


def test_a_draw_larger_than_a_file_is_refused(build_pool):
    with pytest.raises(ValueError, match="19 have an output"):
        build_pool.mixed_pool(alpaca_rows(), t0_rows(), 20, 4, seed=0)
    with pytest.raises(ValueError, match="fewer than 11 rows"):
        build_pool.mixed_pool(alpaca_rows(), t0_rows(), 6, 11, seed=0)


def test_the_command_writes_the_pool_from_the_data_folder(build_pool, tmp_path):
    recovery = tmp_path / "data" / "recovery"
    recovery.mkdir(parents=True)
    for name, rows in (("alpaca_52k", alpaca_rows()), ("t0_labelled_dev", t0_rows())):
        with gzip.open(recovery / f"{name}.jsonl.gz", "wt", encoding="utf-8") as stream:
            stream.writelines(json.dumps(row) + "\n" for row in rows)
    out = tmp_path / "pool" / "mixed.jsonl.gz"
    arguments = ["--out", str(out), "--alpaca", "5", "--t0-per-category", "2", "--data-dir", str(tmp_path / "data")]
    assert build_pool.main(arguments) == 0
    with gzip.open(out, "rt", encoding="utf-8") as stream:
        assert len([json.loads(line) for line in stream]) == 5 + 3 * 2
