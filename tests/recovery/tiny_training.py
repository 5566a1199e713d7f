"""Shared by the recovery training tests: a config for seconds-long runs on the tiny random Llama."""

from __future__ import annotations

from paser.recovery.config import TrainConfig


def fast_config(**overrides) -> TrainConfig:
    """A config for seconds-long tests: short rows, small batches, no progress bars, no ppl check."""
    values = {
        "max_length": 96,
        "batch_size": 4,
        "max_steps": 2,
        "show_progress": False,
        "remask_eval": "none",
        "device": "cpu",
        "dtype": "fp32",
        "max_new_tokens": 8,
    }
    values.update(overrides)
    return TrainConfig(**values)
