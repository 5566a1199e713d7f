"""Compute accounting (recovery/flops.py): the FLOP convention, and the `compute` block every recovery records."""

import json

import pytest

from paser.recovery.flops import forward_flops, full_training_flops, lora_training_flops, recovery_compute
from paser.recovery.train import recover
from tests.recovery.tiny_training import fast_config


def test_a_forward_costs_two_flops_per_parameter_per_token():
    assert forward_flops(1000, 135e6) == 2 * 1000 * 135e6


def test_lora_training_spares_the_frozen_base_its_weight_gradients():
    full_fine_tuning = 6 * 1000 * 135e6
    assert lora_training_flops(1000, 135e6, 0) == pytest.approx(full_fine_tuning * 2 / 3)
    assert lora_training_flops(1000, 135e6, 1e6) == 4 * 1000 * 135e6 + 6 * 1000 * 1e6


def test_full_fine_tuning_costs_six_flops_per_parameter_per_token():
    assert full_training_flops(1000, 135e6) == 6 * 1000 * 135e6
    compute = recovery_compute({"trained": 100}, base_parameters=1000, lora_parameters=None)
    assert compute["flops"]["train"] == compute["flops"]["total"] == 6 * 100 * 1000
    assert compute["parameters"]["lora"] is None and "full fine-tuning 6·N·P" in compute["convention"]


def test_the_compute_block_adds_teacher_reference_and_generation_forwards():
    compute = recovery_compute(
        {"trained": 100, "teacher_forward": 100, "reference_forward": 50, "generation_prompt": 10, "generated": 20},
        base_parameters=1000,
        lora_parameters=10,
        teacher_parameters=2000,
    )
    assert compute["flops"] == {
        "train": 4 * 100 * 1000 + 6 * 100 * 10,
        "teacher": 2 * 100 * 2000,
        "reference": 2 * 50 * 1000,
        "generation": 2 * 30 * 1000,
        "targets": 0,
        "total": 4 * 100 * 1000 + 6 * 100 * 10 + 2 * 100 * 2000 + 2 * 50 * 1000 + 2 * 30 * 1000,
    }
    assert compute["tokens"]["padding"] == 0 and "4·N·P_base + 6·N·P_lora" in compute["convention"]


def test_the_original_writing_targets_is_counted_at_the_originals_size():
    tokens = {"trained": 100, "target_prompt": 40, "target_generated": 60}
    compute = recovery_compute(tokens, base_parameters=1000, lora_parameters=10, original_parameters=3000)
    assert compute["flops"]["targets"] == 2 * 100 * 3000
    assert compute["flops"]["total"] == 4 * 100 * 1000 + 6 * 100 * 10 + 2 * 100 * 3000
    assert compute["parameters"]["original"] == 3000
    with pytest.raises(ValueError, match="original model's parameter count"):
        recovery_compute(tokens, base_parameters=1000, lora_parameters=10)


def test_teacher_tokens_without_the_teacher_size_are_refused():
    with pytest.raises(ValueError, match="teacher's parameter count"):
        recovery_compute({"trained": 10, "teacher_forward": 10}, base_parameters=1, lora_parameters=1)


def test_sft_and_distill_records_count_the_tokens_they_trained_on(pruned_dir, tiny_model_dir, subset_file, tmp_path):
    sft = recover(str(pruned_dir), subset_file, tmp_path / "sft", fast_config(max_steps=2))
    distill = recover(
        str(pruned_dir), subset_file, tmp_path / "distill", fast_config(objective="distill", max_steps=2),
        original=str(tiny_model_dir),
    )  # fmt: skip
    for result in (sft, distill):
        compute = json.loads((result.out_dir / "recovery.json").read_text())["compute"]
        tokens, parameters = compute["tokens"], compute["parameters"]
        # Two steps of four rows: the tokens of eight rows, their response tokens less than all of them.
        assert 0 < tokens["loss_tokens"] < tokens["trained"] <= result.record["tokens_per_epoch"]["total"]
        assert parameters["lora"] == result.record["training"]["trainable_parameters"]
        assert compute["flops"]["train"] == lora_training_flops(
            tokens["trained"], parameters["base"], parameters["lora"]
        )
    assert sft.record["compute"]["tokens"]["teacher_forward"] == 0
    distilled = distill.record["compute"]
    assert distilled["tokens"]["teacher_forward"] == distilled["tokens"]["trained"]
    assert distilled["flops"]["teacher"] == forward_flops(
        distilled["tokens"]["trained"], distilled["parameters"]["teacher"]
    )


def test_dpo_records_its_reference_forwards_and_the_rejected_answers_it_generated(pruned_dir, subset_file, tmp_path):
    result = recover(str(pruned_dir), subset_file, tmp_path / "dpo", fast_config(objective="dpo", max_steps=2))
    compute = result.record["compute"]
    tokens = compute["tokens"]
    assert 0 < tokens["loss_tokens"] < tokens["trained"] == tokens["reference_forward"]
    assert tokens["generated"] == result.record["pairs"]["generation"]["tokens_generated"] > 0
    assert tokens["generation_prompt"] > 0 and compute["flops"]["generation"] > 0
