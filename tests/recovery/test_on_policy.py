"""On-policy distillation (`on_policy`: TRL GKD with lmbda > 0): the student samples, the original scores, the
generation is counted, and the pruned zeros survive the merge."""

from __future__ import annotations

import math

import pytest
import torch

from paser.recovery.objectives.on_policy import PromptCollator, right_aligned
from paser.recovery.train import recover
from tests.recovery.test_train import _zero_positions
from tests.recovery.tiny_training import fast_config


def test_generated_rows_are_right_aligned_with_labels_only_on_the_answer():
    pad = 0
    # two rows: prompts [5 6] and [7] (left-padded), answers [8 9 EOS=2] and [3 EOS=2] then padding
    input_ids = torch.tensor([[5, 6, 8, 9, 2], [0, 7, 3, 2, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    labels = torch.tensor([[-100, -100, 8, 9, 2], [-100, -100, 3, 2, -100]])
    ids, mask, aligned = right_aligned(input_ids, attention_mask, labels, pad)
    assert ids.tolist() == [[5, 6, 8, 9, 2], [7, 3, 2, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert aligned.tolist() == [[-100, -100, 8, 9, 2], [-100, 3, 2, -100, -100]]


def test_the_collator_adds_each_rows_prompt_left_padded():
    def base(examples):
        return {"input_ids": torch.tensor([example["input_ids"] for example in examples])}

    examples = [
        {"input_ids": [4, 5, 6, 7], "labels": [-100, -100, 6, 7]},
        {"input_ids": [8, 9, 10, 11], "labels": [-100, 9, 10, 11]},
    ]
    batch = PromptCollator(base, pad_token_id=0)(examples)
    assert batch["prompts"].tolist() == [[4, 5], [0, 8]]
    assert batch["prompt_attention_mask"].tolist() == [[1, 1], [0, 1]]


def test_on_policy_distillation_samples_counts_its_generation_and_keeps_the_zeros(
    tiny_model_dir, pruned_dir, subset_file, tmp_path
):
    out = tmp_path / "on-policy"
    config = fast_config(objective="on_policy", max_steps=2, max_new_tokens=6, learning_rate=1e-2)
    result = recover(str(pruned_dir), subset_file, out, config, original=str(tiny_model_dir))
    record = result.record
    assert record["training"]["steps"] == 2 and math.isfinite(record["training"]["last_loss"])
    assert record["original"]["name"] == str(tiny_model_dir)
    tokens, flops = record["compute"]["tokens"], record["compute"]["flops"]
    # every step sampled (on_policy_fraction 1): 2 steps x 4 rows, each at most 6 new tokens
    assert 0 < tokens["generated"] <= 2 * 4 * 6 and tokens["generation_prompt"] > 0
    assert tokens["teacher_forward"] == tokens["trained"] > 0
    # what was trained on is exactly the sampled sequences: each row's prompt and the answer it sampled
    assert tokens["trained"] == tokens["generation_prompt"] + tokens["generated"]
    assert flops["generation"] == pytest.approx(
        2 * (tokens["generation_prompt"] + tokens["generated"]) * record["pruned"]["parameters"]
    )
    assert record["sparsity"]["total_after_remask"] == pytest.approx(0.5, abs=1e-3)
    pruned_zeros, merged_zeros = _zero_positions(pruned_dir), _zero_positions(out / "merged")
    assert all(torch.equal(pruned_zeros[name], merged_zeros[name]) for name in pruned_zeros)


def test_on_policy_needs_the_original_and_a_fraction_in_range():
    from paser.recovery.config import TrainConfig

    with pytest.raises(ValueError, match=r"on_policy_fraction must be in \(0, 1\]"):
        TrainConfig.from_flat({"objective": "on_policy", "on_policy_fraction": 0.0})
    with pytest.raises(ValueError, match="token_weighting is a setting of objective distill and sft"):
        TrainConfig.from_flat({"objective": "on_policy", "token_weighting": "jsd", "token_jsd": "x"})
