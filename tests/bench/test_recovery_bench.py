"""The recovery benches' helpers (bench/recovery_bench.py, bench/recovery_objectives.py): row draws, the gap
closed, settings and learning rates. The benchmarks themselves are not run here."""

from __future__ import annotations

import json

import pytest

from bench.recovery_bench import gap_closed, parse_setting, split_rows
from bench.recovery_objectives import SETTINGS, cached_targets_flops, learning_rates, tuned_learning_rate


def test_row_draws_are_disjoint_seeded_and_in_the_order_asked():
    rows = list(range(100))
    parts = split_rows(rows, seed=3, sizes={"train": 50, "dev": 20, "test": 20})
    assert [len(part) for part in parts.values()] == [50, 20, 20]
    assert len(set(parts["train"]) | set(parts["dev"]) | set(parts["test"])) == 90
    assert parts == split_rows(rows, seed=3, sizes={"train": 50, "dev": 20, "test": 20})
    assert parts["train"] != split_rows(rows, seed=4, sizes={"train": 50})["train"]
    assert split_rows(rows, seed=3, sizes={"train": 70})["train"][:50] == parts["train"]
    with pytest.raises(ValueError, match="101 rows asked for"):
        split_rows(rows, seed=3, sizes={"train": 101})


def test_the_gap_closed_is_one_at_the_original_and_zero_at_the_pruned_value():
    assert gap_closed(2.0, original=2.0, pruned=3.0) == 1.0
    assert gap_closed(3.0, original=2.0, pruned=3.0) == 0.0
    assert gap_closed(2.75, original=2.0, pruned=3.0) == pytest.approx(0.25)
    assert gap_closed(3.5, original=2.0, pruned=3.0) == pytest.approx(-0.5)


def test_a_setting_reads_json_values_and_keeps_other_text():
    assert parse_setting("fast:objective=sft,learning_rate=1e-3,lora_r=64") == (
        "fast",
        {"objective": "sft", "learning_rate": 1e-3, "lora_r": 64},
    )
    with pytest.raises(SystemExit):
        parse_setting("no-values")


def _tuned_row(closed_dev: float, **config) -> dict:
    return {"config": config, "closed": {"dev": closed_dev}}


def test_a_tuned_learning_rate_is_the_best_on_dev_of_the_same_objective_and_adapter():
    tuned = {
        "settings": [
            _tuned_row(0.2, objective="sft", adapter="lora", learning_rate=2e-4),
            _tuned_row(0.4, objective="sft", adapter="lora", learning_rate=1e-3),
            _tuned_row(0.9, objective="sft", adapter="full", learning_rate=5e-5),
            _tuned_row(0.5, objective="distill", learning_rate=5e-4, token_weighting="jsd"),
            _tuned_row(0.3, objective="sft", adapter="lora", lora_r=64, learning_rate=3e-3),
            _tuned_row(0.35, objective="sft", adapter="lora", lora_r=64, learning_rate=1e-3),
            {**_tuned_row(0.95, objective="sft", adapter="lora", learning_rate=1e-2), "train_rows": 640},
        ]
    }
    assert tuned_learning_rate(tuned, SETTINGS["sft"]) == 1e-3  # rank 8, at the tuning's own rows
    assert tuned_learning_rate(tuned, SETTINGS["sft-r64"]) == 1e-3  # rank 64's own best, not rank 8's
    assert tuned_learning_rate(tuned, SETTINGS["full"]) == 5e-5
    assert tuned_learning_rate(tuned, SETTINGS["distill-jsd"]) == 5e-4
    assert tuned_learning_rate(tuned, SETTINGS["distill"]) is None
    rates = learning_rates(["sft", "distill", "full"], SETTINGS, {"full": 1e-4}, tuned)
    assert rates == {"sft": 1e-3, "distill": None, "full": 1e-4}
    assert learning_rates(["sft"], SETTINGS, {}, None) == {"sft": None}


def test_cached_targets_are_charged_what_generating_them_cost(tmp_path):
    # 2 epochs over rows of 30 prompt + 70 answer tokens in all: 200 trained tokens; 3 of 4 rows from the cache.
    payload = {"compute": {"tokens": {"trained": 200}}, "config": {"epochs": 2.0}}
    folder = tmp_path / "models" / "sft-self"
    folder.mkdir(parents=True)
    targets = {"model": {"parameters": 1_000}, "generation": {"rows": 4, "from_cache": 3}, "response_tokens": 70}
    (folder / "recovery.json").write_text(json.dumps({"targets": targets}))
    assert cached_targets_flops(tmp_path, "sft-self", payload) == pytest.approx(2 * 100 * 0.75 * 1_000)
    targets["generation"]["from_cache"] = 0
    (folder / "recovery.json").write_text(json.dumps({"targets": targets}))
    assert cached_targets_flops(tmp_path, "sft-self", payload) == 0.0
    assert cached_targets_flops(tmp_path, "sft", payload) == 0.0  # no record, no targets
