"""What `paser recover` reads: a subset file's bad rows are named by file and line."""

import pytest

from paser.recovery.config import TrainConfig
from paser.recovery.train import load_training_rows
from paser.selection.corpus import CorpusError


@pytest.mark.parametrize("with_ids", [False, True])
def test_a_subset_row_that_is_not_utf8_is_refused_naming_the_file_and_line(tiny_tokenizer, tmp_path, with_ids):
    subset = tmp_path / "selection.jsonl"
    first = (
        b'{"id": "a", "instruction": "Hi.", "output": "Hello."}\n'
        if with_ids
        else b'{"instruction": "Hi.", "output": "Hello."}\n'
    )
    subset.write_bytes(first + b'{"instruction": "\xff\xfe", "output": "x"}\n')
    with pytest.raises(CorpusError, match=rf"{subset}:2: not UTF-8 text"):
        load_training_rows(subset, tiny_tokenizer, TrainConfig())
