"""Recovery training on a tiny random Llama: SFT/DPO/distill through TRL + peft, outputs, sparsity kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from paser.recovery.config import TrainConfig
from paser.recovery.evaluate import response_nll
from paser.recovery.objectives.dpo import preference_pairs
from paser.recovery.objectives.sft import build_sft_trainer
from paser.recovery.prune import prune_model, save_pruned
from paser.recovery.pruners import PruneTarget
from paser.recovery.train import _trl_common_args, keep_a_step_after_warmup, load_training_rows, recover
from tests.recovery.tiny_training import fast_config as _fast


def _rows(subset_file: Path, tiny_tokenizer, config: TrainConfig):
    return load_training_rows(subset_file, tiny_tokenizer, config)


def _zero_positions(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    from paser.recovery.models import prunable_linears

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return {name: layer.weight == 0 for name, layer in prunable_linears(model).items()}


def test_subset_rows_keep_the_selection_ids(subset_file, tiny_tokenizer):
    rows = _rows(subset_file, tiny_tokenizer, _fast())
    assert [row.id for row in rows.encoded][:2] == ["row-tiny-001", "row-tiny-002"]
    assert [sample.id for sample in rows.samples] == [row.id for row in rows.encoded]


def test_missing_subset_file_is_refused(tmp_path, tiny_tokenizer):
    with pytest.raises(FileNotFoundError, match="subset file not found"):
        load_training_rows(tmp_path / "nope.jsonl", tiny_tokenizer, _fast())


def test_unknown_objective_and_bad_numbers_are_refused():
    with pytest.raises(ValueError, match="unknown objective 'ppo'"):
        TrainConfig(objective="ppo")
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)


def test_distill_without_an_original_model_is_refused(pruned_dir, subset_file, tmp_path):
    with pytest.raises(ValueError, match="needs the original model"):
        recover(str(pruned_dir), subset_file, tmp_path / "out", _fast(objective="distill"))


def test_sft_loss_mask_is_exactly_the_response_tokens(tiny_model, tiny_tokenizer, subset_file, tmp_path):
    config = _fast()
    rows = _rows(subset_file, tiny_tokenizer, config)
    trainer = build_sft_trainer(tiny_model, tiny_tokenizer, rows, config, _common(config, tmp_path))
    by_ids = {tuple(row.input_ids): row for row in rows.encoded}
    seen = 0
    for batch in trainer.get_train_dataloader():
        for ids, labels, attention in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            length = int(attention.sum())
            row = by_ids[tuple(ids[:length].tolist())]
            expected = torch.zeros(len(ids), dtype=torch.bool)
            expected[row.prompt_length : length] = True
            assert torch.equal(labels != -100, expected)
            assert torch.equal(labels[expected], ids[expected])
            seen += 1
    assert seen == len(rows.encoded)


def _common(config: TrainConfig, out_dir: Path) -> dict:
    return _trl_common_args(config, out_dir, "cpu", torch.float32)


def test_sft_steps_change_every_lora_parameter_and_no_base_weight(tiny_model, tiny_tokenizer, subset_file, tmp_path):
    config = _fast(max_steps=3, learning_rate=1e-2, warmup=0)
    rows = _rows(subset_file, tiny_tokenizer, config)
    trainer = build_sft_trainer(tiny_model, tiny_tokenizer, rows, config, _common(config, tmp_path))
    before = {name: parameter.detach().clone() for name, parameter in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [name for name in before if "lora_" in name]
    assert lora, "the model carries no LoRA parameters"
    assert all(not torch.equal(before[name], after[name]) for name in lora)
    assert all(torch.equal(before[name], after[name]) for name in before if "lora_" not in name)


def test_sft_loss_falls_over_thirty_steps_on_a_repeated_set(tiny_model, tiny_tokenizer, subset_file, tmp_path):
    config = _fast(max_steps=30, learning_rate=5e-3, lora_dropout=0.0, scheduler="constant", warmup=0)
    rows = _rows(subset_file, tiny_tokenizer, config)
    rows.encoded = rows.encoded[:4]  # one batch, seen again every step
    trainer = build_sft_trainer(tiny_model, tiny_tokenizer, rows, config, _common(config, tmp_path))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def _train_with_a_step_after_warmup(config: TrainConfig, model, tokenizer, subset_file: Path, out_dir: Path):
    trainer = build_sft_trainer(
        model, tokenizer, _rows(subset_file, tokenizer, config), config, _common(config, out_dir)
    )
    keep_a_step_after_warmup(trainer)
    trainer.train()
    return trainer


def _learning_rates(trainer) -> list[float]:
    return [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]


def test_a_single_step_trains_the_adapter_with_the_warmup_shortened(
    tiny_model, tiny_tokenizer, subset_file, tmp_path, capsys
):
    config = _fast(max_steps=1, learning_rate=1e-2)  # the default warm-up, 3% of one step, rounds up to one step
    trainer = _train_with_a_step_after_warmup(config, tiny_model, tiny_tokenizer, subset_file, tmp_path)
    lora_b = [parameter for name, parameter in trainer.model.named_parameters() if "lora_B" in name]
    assert lora_b and all(parameter.abs().sum() > 0 for parameter in lora_b)
    assert "warm-up of 1 step(s) shortened to 0: training has 1 optimiser step(s)" in capsys.readouterr().err


def test_a_warmup_as_long_as_training_leaves_the_last_step_at_the_peak_rate(
    tiny_model, tiny_tokenizer, subset_file, tmp_path, capsys
):
    config = _fast(max_steps=3, warmup=5, learning_rate=1e-2)
    trainer = _train_with_a_step_after_warmup(config, tiny_model, tiny_tokenizer, subset_file, tmp_path)
    assert _learning_rates(trainer) == pytest.approx([0.0, 5e-3, 1e-2])
    assert "warm-up of 5 step(s) shortened to 2" in capsys.readouterr().err


def test_a_warmup_shorter_than_training_is_kept(tiny_model, tiny_tokenizer, subset_file, tmp_path, capsys):
    config = _fast(max_steps=3, warmup=2, learning_rate=1e-2, scheduler="constant_with_warmup")
    trainer = _train_with_a_step_after_warmup(config, tiny_model, tiny_tokenizer, subset_file, tmp_path)
    assert _learning_rates(trainer) == pytest.approx([0.0, 5e-3, 1e-2])
    assert "warm-up" not in capsys.readouterr().err


def test_response_nll_of_a_model_is_the_mean_over_response_tokens(tiny_model, tiny_tokenizer, subset_file):
    rows = _rows(subset_file, tiny_tokenizer, _fast())
    together = response_nll(tiny_model, rows.encoded[:3], batch_size=3)
    alone = [response_nll(tiny_model, [row], batch_size=1) for row in rows.encoded[:3]]
    weighted = sum(item["nll"] * item["tokens"] for item in alone) / sum(item["tokens"] for item in alone)
    assert together["tokens"] == sum(row.response_length for row in rows.encoded[:3])
    assert together["nll"] == pytest.approx(weighted, rel=1e-5)
    # per row, in the rows' order (batches are sorted by length)
    assert together["items"]["tokens"] == [item["tokens"] for item in alone]
    assert together["items"]["nll_sum"] == pytest.approx([item["nll"] * item["tokens"] for item in alone], rel=1e-5)


def test_sft_run_writes_adapter_merged_logs_and_keeps_exact_zeros(pruned_dir, subset_file, tmp_path):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "sft"
    text = tmp_path / "heldout.txt"
    text.write_text(" ".join(["the ka lo mi ne ru ta of to and"] * 200))
    result = recover(
        str(pruned_dir),
        subset_file,
        out,
        _fast(max_steps=3, learning_rate=1e-2, remask_eval=str(text), remask_eval_windows=2, remask_eval_seqlen=64),
    )
    for name in ("adapter", "merged", "train_log.jsonl", "sparsity.json", "recovery.json"):
        assert (out / name).exists(), name
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2, 3]
    record = json.loads((out / "recovery.json").read_text())
    assert record["objective"] == "sft"
    assert record["rows"]["used"] == 12
    assert record["training"]["steps"] == 3
    assert record["hyperparameters"]["lora_r"] == 8
    assert record["versions"]["trl"] == "1.16.0"
    report = json.loads((out / "sparsity.json").read_text())
    assert report["total"]["before"] == pytest.approx(0.5, abs=1e-3)
    assert report["total"]["after_merge"] < 0.01  # the LoRA update fills the zeros in
    assert report["total"]["after_remask"] == report["total"]["before"]
    assert report["ppl"]["ppl_merged"] > 0 and report["ppl"]["ppl_remasked"] > 0
    pruned_zeros, merged_zeros = _zero_positions(pruned_dir), _zero_positions(out / "merged")
    assert all(torch.equal(pruned_zeros[name], merged_zeros[name]) for name in pruned_zeros)
    adapter = AutoPeftModelForCausalLM.from_pretrained(out / "adapter")
    assert any("lora_B" in name and parameter.abs().sum() > 0 for name, parameter in adapter.named_parameters())
    assert result.paths["merged"] == out / "merged"
    card = (out / "merged" / "README.md").read_text()
    assert f"base_model: {pruned_dir}" in card and "magnitude" in card and "| lora_r | 8 |" in card


def test_a_layer_dropped_model_is_merged_dense(tiny_model_dir, subset_file, tmp_path):
    from paser.recovery.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    calibration = torch.randint(5, len(tokenizer), (2, 16))
    record = prune_model(model, "layer_drop", PruneTarget(drop=0.5), calibration)
    dropped = save_pruned(model, tokenizer, tmp_path / "dropped", record)
    result = recover(str(dropped), subset_file, tmp_path / "out", _fast())
    assert result.record["sparsity"]["masked"] is False
    assert "layer" in result.record["sparsity"]["reason"]


def test_preference_pairs_drop_and_count_rejections_equal_to_the_response(subset_file, tiny_tokenizer):
    rows = _rows(subset_file, tiny_tokenizer, _fast())
    answers = {sample.id: "something else entirely" for sample in rows.samples}
    first = rows.samples[0]
    answers[first.id] = f"  {first.response}\n"
    pairs, dropped = preference_pairs(rows, tiny_tokenizer, answers, "auto")
    assert dropped == {"rejected_equals_chosen": 1}
    assert len(pairs) == len(rows.samples) - 1
    assert pairs[0]["chosen"] == rows.samples[1].response
    assert pairs[0]["prompt"].endswith("<|im_start|>assistant\n")


def test_dpo_run_trains_and_reuses_its_cached_rejections(pruned_dir, subset_file, tmp_path):
    out = tmp_path / "dpo"
    result = recover(str(pruned_dir), subset_file, out, _fast(objective="dpo"))
    assert (out / "rejections.jsonl").exists()
    assert result.record["pairs"]["used"] + sum(result.record["pairs"]["dropped"].values()) == 12
    assert result.record["training"]["steps"] == 2
    assert result.record["sparsity"]["total_after_remask"] == pytest.approx(0.5, abs=1e-3)
    again = recover(str(pruned_dir), subset_file, out, _fast(objective="dpo"))
    assert again.record["pairs"]["generation"]["from_cache"] == 12
    assert again.record["pairs"]["generation"]["generated"] == 0


def test_sft_plus_dpo_adds_the_sft_loss_to_dpo(pruned_dir, subset_file, tmp_path):
    # LoRA B starts at zero, so at the first step the policy is its own reference and the DPO loss is exactly
    # ln 2: whatever the first loss holds above that is the weighted response NLL. One folder: the rejected
    # answers are generated once.
    out = tmp_path / "both"
    dpo = recover(str(pruned_dir), subset_file, out, _fast(objective="dpo"))
    result = recover(str(pruned_dir), subset_file, out, _fast(objective="sft+dpo"))
    doubled = recover(str(pruned_dir), subset_file, out, _fast(objective="sft+dpo", sft_weight=2.0))
    assert result.record["hyperparameters"]["sft_weight_effective"] == 1.0
    assert result.record["training"]["steps"] == 2
    assert dpo.record["training"]["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    response_nll_term = result.record["training"]["first_loss"] - math.log(2)
    assert response_nll_term > 1.0  # a random model's response NLL, in nats per token
    assert doubled.record["training"]["first_loss"] == pytest.approx(math.log(2) + 2 * response_nll_term, rel=1e-5)


def test_distill_starts_at_zero_kl_when_student_and_teacher_agree(pruned_dir, subset_file, tmp_path):
    # LoRA B starts at zero, so before the first update the student *is* the (pruned) model; as its own
    # teacher, the first step's KL is exactly zero, and training on a zero loss keeps it there.
    out = tmp_path / "self"
    result = recover(str(pruned_dir), subset_file, out, _fast(objective="distill"), original=str(pruned_dir))
    assert result.record["training"]["first_loss"] == pytest.approx(0.0, abs=1e-6)


def test_distill_from_the_original_trains_with_a_positive_kl(pruned_dir, tiny_model_dir, subset_file, tmp_path):
    out = tmp_path / "distill"
    result = recover(
        str(pruned_dir), subset_file, out, _fast(objective="distill", max_steps=3), original=str(tiny_model_dir)
    )
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert result.record["original"]["name"] == str(tiny_model_dir)
    assert (out / "merged" / "config.json").exists()
