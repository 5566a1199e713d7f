"""results.json's `compute` and `shared_cost` (pipelines/analysis/accounting.py) on the fake run of
tests/pipelines/fake_run.py: 10 prompt + 30 response tokens a row, 2 epochs, 2 + 0.5 s a row of training."""

from __future__ import annotations

import json

import pytest

from paser.pipelines.analysis.accounting import combo_compute, shared_cost
from tests.pipelines.fake_run import LORA_PARAMETERS, ORIGINAL_PARAMETERS, PRUNED_PARAMETERS, build_fake_run


def compute_of(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    return combo_compute(results, stages, run_dir)


def row_of(block, combo):
    (row,) = [row for row in block["rows"] if row["combo"] == combo]
    return row


def test_each_combo_counts_rows_tokens_and_seconds_trained(tmp_path):
    row = row_of(compute_of(build_fake_run(tmp_path / "run")), "paser-b0.2-s1")
    assert (row["rows_trained"], row["epochs"]) == (11, 2.0)
    assert (row["prompt_tokens"], row["response_tokens"], row["train_tokens"]) == (220.0, 660.0, 880.0)
    assert (row["train_seconds"], row["recover_seconds"], row["select_seconds"]) == (7.5, 8.5, 0.2)


def test_without_a_full_combo_there_are_no_fractions(tmp_path):
    block = compute_of(build_fake_run(tmp_path / "run"))
    assert block["reference"] is None
    assert all(row["tokens_fraction"] is None and row["seconds_fraction"] is None for row in block["rows"])


def test_fractions_are_of_the_full_combos_training(tmp_path):
    block = compute_of(build_fake_run(tmp_path / "run", full=True))
    assert block["reference"] == "full" and len(block["reference_combos"]) == 4
    row = row_of(block, "paser-b0.1-s0")
    # 5 of the pool's 54 rows; 2 + 0.5 * 5 seconds against 2 + 0.5 * 54
    assert row["tokens_fraction"] == pytest.approx(5 / 54)
    assert row["seconds_fraction"] == pytest.approx(4.5 / 29)
    assert row_of(block, "full-b0.2-s1")["tokens_fraction"] == 1.0


def test_a_combo_without_a_recovery_record_has_no_training_numbers(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    (run_dir / "combos" / "random-b0.1-s0" / "recover" / "recovery.json").unlink()
    row = row_of(compute_of(run_dir), "random-b0.1-s0")
    assert row["rows_trained"] is None and row["train_tokens"] is None and row["train_seconds"] is None
    assert row["recover_seconds"] == 5.5  # the manifest still times the stage


def test_shared_cost_is_reported_once_from_the_manifest(tmp_path):
    stages = json.loads((build_fake_run(tmp_path / "run") / "manifest.json").read_text())["stages"]
    cost = shared_cost(stages)
    assert list(cost["stages"]) == ["prune", "score", "heldout", "embed", "cluster/s0", "cluster/s1"]
    assert cost["selection_seconds"] == pytest.approx(12.0 + 3.0 + 1.0 + 1.5)
    assert shared_cost({}) == {"stages": {}, "selection_seconds": None}


def test_each_combo_reads_its_estimated_flops_from_the_recovery_record(tmp_path):
    block = compute_of(build_fake_run(tmp_path / "run", full=True))
    row = row_of(block, "paser-b0.1-s0")
    # 5 rows of 40 tokens, 2 epochs: 400 tokens of LoRA training, 4·N·P_base + 6·N·P_lora
    assert row["flops"] == 4 * 400 * PRUNED_PARAMETERS + 6 * 400 * LORA_PARAMETERS
    assert row["flops_fraction"] == pytest.approx(5 / 54)
    assert row["teacher_tokens"] == 0 and row["generated_tokens"] == 0


def test_the_scoring_cost_is_two_forwards_over_every_scored_row(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    cost = shared_cost(stages, run_dir)
    tokens = sum(12 + row % 5 + 20 + row % 7 for row in range(60))
    assert cost["scoring_tokens"] == tokens
    assert cost["scoring_flops"] == 2 * tokens * (ORIGINAL_PARAMETERS + PRUNED_PARAMETERS)
