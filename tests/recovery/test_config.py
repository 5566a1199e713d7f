"""`TrainConfig`: the shared settings, the objective's own beside them (`objective_config`), and one flat mapping
routed between the two, as a run's `recovery` section and `paser recover`'s flags write it."""

from __future__ import annotations

import dataclasses

import pytest

from paser.recovery.config import TrainConfig
from paser.recovery.objectives import objective_config_class, objective_names
from paser.recovery.objectives.distill_config import DistillObjectiveConfig
from paser.recovery.objectives.dpo_config import DpoObjectiveConfig
from paser.recovery.objectives.sft_config import SftObjectiveConfig


def test_flat_settings_go_to_the_shared_config_or_the_chosen_objectives():
    config = TrainConfig.from_flat({"objective": "distill", "learning_rate": 1e-3, "sft_weight": 0.5})
    assert config.learning_rate == 1e-3
    assert config.objective_config == DistillObjectiveConfig(sft_weight=0.5)
    assert config.sft_term == 0.5


def test_without_objective_settings_the_objective_config_has_its_defaults():
    assert TrainConfig().objective_config == SftObjectiveConfig()
    assert TrainConfig(objective="sft+dpo").objective_config == DpoObjectiveConfig()
    assert TrainConfig(objective="sft+dpo").sft_term == 1.0


def test_a_setting_of_another_objective_is_refused_naming_the_objective_it_belongs_to():
    with pytest.raises(ValueError) as refused:
        TrainConfig.from_flat({"objective": "sft", "dpo_beta": 0.3})
    assert str(refused.value) == "dpo_beta is a setting of objective dpo and sft+dpo, not of 'sft'"
    with pytest.raises(ValueError, match="^temperature is a setting of objective distill, not of 'on_policy'$"):
        TrainConfig.from_flat({"objective": "on_policy", "temperature": 2.0})


def test_a_setting_of_another_objective_at_its_default_is_dropped_as_an_older_resolved_config_holds_it():
    # What a paser before the objective configs wrote out for an sft run: every objective's settings, defaults.
    config = TrainConfig.from_flat({"objective": "sft", "dpo_beta": 0.1, "max_new_tokens": 256, "sft_weight": None})
    assert config == TrainConfig()


def test_an_unknown_setting_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"^unknown key 'dpo_alpha' for objective 'dpo'; known: .*dpo_beta"):
        TrainConfig.from_flat({"objective": "dpo", "dpo_alpha": 1})


def test_an_objective_config_of_another_objective_is_refused():
    with pytest.raises(ValueError, match="objective 'sft' takes a SftObjectiveConfig, got a DpoObjectiveConfig"):
        TrainConfig(objective="sft", objective_config=DpoObjectiveConfig())


def test_the_flat_settings_read_back_into_the_same_config():
    config = TrainConfig.from_flat({"objective": "distill", "epochs": 2.0, "temperature": 2.0, "sft_weight": 0.1})
    flat = config.flat_settings()
    assert "objective_config" not in flat and flat["temperature"] == 2.0
    assert TrainConfig.from_flat(flat) == config


def test_the_record_holds_the_objectives_settings_and_the_values_in_effect():
    record = TrainConfig.from_flat({"objective": "dpo", "dpo_beta": 0.2}).to_dict()
    assert record["dpo_beta"] == 0.2 and record["sft_weight_effective"] == 0.0
    assert record["learning_rate_effective"] == 5e-5 and "temperature" not in record


def test_token_weighting_is_the_objective_configs_when_it_weights_tokens():
    assert TrainConfig().token_weighting is None
    config = TrainConfig.from_flat({"objective": "distill", "token_weighting": "jsd", "token_jsd": "kept"})
    assert config.token_weighting is config.objective_config


def test_every_objective_setting_has_help():
    for name in objective_names():
        for field in dataclasses.fields(objective_config_class(name)):
            assert field.metadata.get("help"), (name, field.name)
