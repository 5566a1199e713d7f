"""SFT and distillation with padding-free batches (the rows of a batch end to end, attention kept within each row,
the teacher's too) train the same as with padded batches: same rows per step, same loss, same update."""

import json

import pytest

from paser.recovery.train import recover
from tests.recovery.tiny_training import fast_config


def losses(out):
    """The logged training losses of the recovery in `out`."""
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [entry["loss"] for entry in log if "loss" in entry]


def test_padding_free_sft_gives_the_padded_losses(pruned_dir, subset_file, tmp_path):
    padded = recover(str(pruned_dir), subset_file, tmp_path / "padded", fast_config(max_steps=3, learning_rate=1e-2))
    free = recover(
        str(pruned_dir), subset_file, tmp_path / "free", fast_config(max_steps=3, learning_rate=1e-2, padding_free=True)
    )

    # The same batches: the first loss equal to float rounding (a row attending to its neighbours would move it far
    # more), the next ones within the rounding that two updates at a high rate accumulate.
    assert losses(tmp_path / "free") == pytest.approx(losses(tmp_path / "padded"), rel=1e-3)
    assert free.record["training"]["first_loss"] == pytest.approx(padded.record["training"]["first_loss"], rel=1e-5)
    assert free.record["hyperparameters"]["padding_free"] is True


def test_padding_free_distillation_gives_the_padded_losses(pruned_dir, tiny_model_dir, subset_file, tmp_path):
    def run(name, **overrides):
        config = fast_config(objective="distill", max_steps=3, learning_rate=1e-2, sft_weight=0.5, **overrides)
        return recover(str(pruned_dir), subset_file, tmp_path / name, config, original=str(tiny_model_dir))

    padded, free = run("padded"), run("free", padding_free=True)

    # A student or teacher row attending to its neighbours in the packed sequence would move the KL far more.
    assert losses(tmp_path / "free") == pytest.approx(losses(tmp_path / "padded"), rel=1e-3)
    assert free.record["training"]["first_loss"] == pytest.approx(padded.record["training"]["first_loss"], rel=1e-5)
    tokens = free.record["compute"]["tokens"]
    assert tokens["padding"] == 0 < padded.record["compute"]["tokens"]["padding"]
    assert tokens["teacher_forward"] == tokens["trained"] == padded.record["compute"]["tokens"]["trained"]
