"""Shared by the recovery training tests: a config for seconds-long runs on the tiny random Llama."""

from __future__ import annotations

import dataclasses

from paser.recovery.config import TrainConfig
from paser.recovery.objectives import objective_config_class


def fast_config(**overrides) -> TrainConfig:
    """A config for seconds-long tests: short rows, small batches, no progress bars, no ppl check; the overrides
    are flat settings, the objective's own included (`TrainConfig.from_flat`), and an objective that generates
    writes 8 tokens at most."""
    values = {
        "max_length": 96,
        "batch_size": 4,
        "max_steps": 2,
        "show_progress": False,
        "remask_eval": "none",
        "device": "cpu",
        "dtype": "fp32",
    }
    values.update(overrides)
    objective_settings = dataclasses.fields(objective_config_class(values.get("objective", "sft")))
    if any(field.name == "max_new_tokens" for field in objective_settings):
        values.setdefault("max_new_tokens", 8)
    return TrainConfig.from_flat(values)
