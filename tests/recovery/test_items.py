"""Per-item evaluation values (recovery/items.py): taken out of a record, written beside metrics.json, read back."""

from __future__ import annotations

import numpy as np
import pytest

from paser.recovery.items import ITEMS_FILE, read_items, split_items, write_items


def record() -> dict:
    return {
        "tasks": {
            "wikitext2": {"metrics": {"ppl": 20.0}, "items": {"nll_sum": [3.0, 3.2], "tokens": [1, 1]}},
            "piqa": {"metrics": {"acc": 0.5}, "items": {"acc": [1.0, 0.0], "acc_norm": [1.0, 1.0]}},
            "boolq": {"metrics": {"acc": 0.5}},
        },
        "heldout": {"nll": 2.0, "items": {"nll_sum": [4.0, 6.0, 2.0], "tokens": [2, 3, 1]}},
        "heldout_t0": {"nll": 1.0, "items": {"nll_sum": [1.0], "tokens": [1]}},
        "versions": {"torch": "2"},
    }


def test_items_are_taken_out_of_a_copy_of_the_record_named_by_source_and_component():
    original = record()
    stripped, items = split_items(original)
    assert sorted(items) == [
        "heldout.nll_sum", "heldout.tokens", "heldout_t0.nll_sum", "heldout_t0.tokens",
        "piqa.acc", "piqa.acc_norm", "wikitext2.nll_sum", "wikitext2.tokens",
    ]  # fmt: skip
    np.testing.assert_array_equal(items["heldout.tokens"], [2.0, 3.0, 1.0])
    assert "items" not in stripped["tasks"]["piqa"] and "items" not in stripped["heldout"]
    assert stripped["versions"] == {"torch": "2"}
    assert original == record()


def test_items_of_unequal_length_are_refused_naming_the_source():
    broken = record()
    broken["heldout"]["items"]["tokens"] = [2, 3]
    with pytest.raises(ValueError, match="items of heldout differ in length"):
        split_items(broken)


def test_written_items_read_back_and_a_folder_without_them_reads_empty(tmp_path):
    _, items = split_items(record())
    path = write_items(items, tmp_path / "eval")
    assert path == tmp_path / "eval" / ITEMS_FILE
    read = read_items(tmp_path / "eval")
    assert sorted(read) == sorted(items)
    np.testing.assert_array_equal(read["wikitext2.nll_sum"], [3.0, 3.2])
    assert read_items(tmp_path / "elsewhere") == {}
