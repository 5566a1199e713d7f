"""Fixtures of the recovery training tests: a pruned tiny model and a subset file as `paser select` writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paser.recovery.prune import prune_model, save_pruned
from paser.recovery.pruners import PruneTarget


@pytest.fixture(scope="session")
def pruned_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model magnitude-pruned to 50% unstructured, saved with pruning.json."""
    from paser.recovery.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    record = prune_model(model, "magnitude", PruneTarget(sparsity=0.5))
    return save_pruned(model, tokenizer, tmp_path_factory.mktemp("pruned") / "magnitude-50", record)


@pytest.fixture(scope="session")
def subset_file(tmp_path_factory: pytest.TempPathFactory, tiny_samples) -> Path:
    """12 tiny samples written as selection.jsonl rows (Alpaca fields + id + cluster), as `paser select` writes."""
    path = tmp_path_factory.mktemp("subset") / "selection.jsonl"
    with path.open("w", encoding="utf-8") as stream:
        for sample in tiny_samples[1:13]:
            row = {"instruction": sample.instruction, "input": sample.input, "output": sample.response}
            stream.write(json.dumps({**row, "id": f"row-{sample.id}", "cluster": 0}) + "\n")
    return path
