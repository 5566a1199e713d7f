"""The recovery objectives' registry (recovery/objectives): what every registered objective must do, run over the
registry so that a new objective is covered by being registered."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from paser.recovery.config import TrainConfig
from paser.recovery.objectives import (
    BUILTIN_CONFIGS,
    OBJECTIVES,
    ObjectiveConfig,
    get_objective,
    objective_config_class,
    objective_names,
    register_objective,
)
from paser.recovery.objectives.sft import prepare_sft
from paser.recovery.train import recover
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


def test_the_built_in_objectives_are_listed_without_importing_them_and_the_list_is_complete():
    code = (
        "import importlib, pkgutil, sys; from paser.recovery import objectives; listed = objectives.objective_names(); "
        "imported = any(name.startswith(objectives.__name__ + '.') for name in sys.modules); "
        "[importlib.import_module(f'{objectives.__name__}.{module.name}') for module in "
        "pkgutil.iter_modules(objectives.__path__)]; print(listed == objectives.objective_names(), imported)"
    )
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert listed == "True False\n"


def test_an_unknown_objective_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError) as refused:
        get_objective("reinforce")
    assert str(refused.value) == f"unknown objective 'reinforce'; known: {', '.join(objective_names())}"
    with pytest.raises(ValueError, match=r"did you mean distill\?$"):
        get_objective("distil")


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="objective 'sft' is already registered"):
        register_objective("sft", default_learning_rate=1e-4)(prepare_sft)


@pytest.fixture
def objectives_as_they_were():
    """What a test registers is gone afterwards."""
    before = OBJECTIVES.snapshot()
    yield
    OBJECTIVES.restore(before)


def test_a_new_objective_is_one_registration(objectives_as_they_were, pruned_dir, subset_file, tmp_path):
    register_objective("slow_sft", default_learning_rate=1e-5)(prepare_sft)
    config = fast_config(objective="slow_sft")
    assert config.lr == 1e-5
    result = recover(str(pruned_dir), subset_file, tmp_path / "slow", config)
    assert result.record["objective"] == "slow_sft"
    assert result.record["hyperparameters"]["learning_rate_effective"] == 1e-5


@pytest.mark.parametrize("name", sorted(BUILTIN_CONFIGS))
def test_a_builtin_objective_registers_the_config_declared_for_it(name):
    assert get_objective(name).config is objective_config_class(name)


def test_a_builtin_objectives_config_is_read_without_importing_its_trainer_or_torch():
    code = (
        "import sys; from paser.recovery.objectives import objective_config_class, objective_names; "
        "[objective_config_class(name) for name in objective_names()]; "
        "print('torch' in sys.modules, 'paser.recovery.objectives.sft' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == (
        "False False\n"
    )


def test_a_plugin_objective_without_settings_has_an_empty_config(objectives_as_they_were):
    register_objective("slow_sft", default_learning_rate=1e-5)(prepare_sft)
    assert objective_config_class("slow_sft") is ObjectiveConfig
    with pytest.raises(ValueError, match="config must be a dataclass deriving from ObjectiveConfig"):
        register_objective("odd", default_learning_rate=1e-5, config=dict)(prepare_sft)
