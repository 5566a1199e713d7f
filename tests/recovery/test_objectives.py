"""The recovery objectives' registry (recovery/objectives): what every registered objective must do, run over the
registry so that a new objective is covered by being registered."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import paser.recovery.objectives as objectives
from paser.recovery.objectives import get_objective, objective_names, register_objective
from paser.recovery.objectives.sft import prepare_sft
from paser.recovery.train import TrainConfig, recover
from tests.recovery.tiny_training import fast_config


def test_the_built_in_objectives_are_registered():
    assert {"sft", "dpo", "sft+dpo", "distill"} <= set(objective_names())


@pytest.mark.parametrize("name", objective_names())
def test_an_objective_declares_a_positive_learning_rate_and_a_non_negative_sft_weight(name):
    objective = get_objective(name)
    assert objective.name == name
    assert objective.default_learning_rate > 0 and objective.default_sft_weight >= 0
    config = TrainConfig(objective=name)
    assert config.lr == objective.default_learning_rate
    assert config.sft_term == objective.default_sft_weight


@pytest.mark.parametrize("name", objective_names())
def test_an_objective_trains_the_adapter_and_the_merged_model_keeps_the_pruned_zeros(
    name, pruned_dir, tiny_model_dir, subset_file, tmp_path
):
    original = str(tiny_model_dir) if get_objective(name).needs_original else None
    result = recover(str(pruned_dir), subset_file, tmp_path / name, fast_config(objective=name), original=original)
    record = json.loads((tmp_path / name / "recovery.json").read_text())
    assert record["objective"] == name
    assert record["training"]["steps"] == 2
    assert all(math.isfinite(loss) for loss in (record["training"]["first_loss"], record["training"]["last_loss"]))
    assert record["sparsity"]["total_after_remask"] == pytest.approx(record["sparsity"]["total_before"])
    assert all(Path(path).exists() for path in record["outputs"].values())
    assert (result.paths["merged"] / "config.json").exists()
    assert (result.paths["adapter"] / "adapter_config.json").exists()


@pytest.mark.parametrize("name", [name for name in objective_names() if get_objective(name).needs_original])
def test_an_objective_that_needs_the_original_model_is_refused_without_it(name, pruned_dir, subset_file, tmp_path):
    with pytest.raises(ValueError, match=f"objective '{name}' needs the original model"):
        recover(str(pruned_dir), subset_file, tmp_path / "out", fast_config(objective=name))


def test_an_unknown_objective_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown objective 'ppo'; known: ") as refused:
        get_objective("ppo")
    assert all(name in str(refused.value) for name in objective_names())


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="'sft' is already registered"):
        register_objective("sft", default_learning_rate=1e-4)(prepare_sft)


def test_a_new_objective_is_one_registration(monkeypatch, pruned_dir, subset_file, tmp_path):
    monkeypatch.setattr(objectives, "OBJECTIVES", dict(objectives.OBJECTIVES))
    register_objective("slow_sft", default_learning_rate=1e-5)(prepare_sft)
    config = fast_config(objective="slow_sft")
    assert config.lr == 1e-5
    result = recover(str(pruned_dir), subset_file, tmp_path / "slow", config)
    assert result.record["objective"] == "slow_sft"
    assert result.record["hyperparameters"]["learning_rate_effective"] == 1e-5
