"""`on_policy`: on-policy distillation from the original model (GKD, Agarwal et al., arXiv 2306.13649; TRL's
experimental `GKDTrainer` with `lmbda > 0`).

On a share `on_policy_fraction` of the steps (GKD's `lmbda`; 1 by default: every step), the student (the pruned
model with its adapter) samples its own answer to each row's prompt (temperature 1, up to `max_new_tokens`), and
the loss is the forward KL(original ‖ student) over those answer tokens, the original's distribution computed on
the fly as in `distill`; the other steps use the rows' own responses, as `distill` does. A pruned model that
repeats itself in free generation, which teacher-forced training never shows it, is corrected where it goes wrong.

The prompts are the rows' prompt token ids exactly as the scorer built them (left-padded for generation); the
sampled sequences are right-aligned again before the loss (`right_aligned`), so the forward passes see the
positions generation saw. Each micro-batch's loss is its mean over its own answer tokens: the Trainer counts the
accumulated batch's loss tokens before the answers exist. Cost, counted in recovery.json's `compute`: the prompts'
prefill and the sampled tokens (`generation_prompt`, `generated`, at the base model's size), then the usual
training and teacher forwards over prompt + answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from paser.recovery.objectives import PreparedTrainer, TrainingJob, register_objective
from paser.recovery.objectives.distill import prepare_with_teacher
from paser.recovery.objectives.on_policy_config import OnPolicyObjectiveConfig
from paser.recovery.objectives.response_loss import IGNORE_INDEX, ChunkedResponseLoss, check_plain_head
from paser.recovery.objectives.sft import sampling_args, sft_dataset

if TYPE_CHECKING:
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import TrainingRows

# Batch keys the generation reads and the loss does not.
PROMPT_KEYS = ("prompts", "prompt_attention_mask")


class PromptCollator:
    """Wraps a collator of pre-tokenised rows (`input_ids`, `labels` -100 on the prompt): the batch gains
    `prompts` (each row's prompt ids, left-padded with `pad_token_id`) and `prompt_attention_mask`, what GKD's
    on-policy step generates from."""

    def __init__(self, collator: Any, pad_token_id: int) -> None:
        self.collator, self.pad_token_id = collator, pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        prompts = []
        for example in examples:
            labels = list(example["labels"])
            prompt_length = next(index for index, label in enumerate(labels) if label != IGNORE_INDEX)
            prompts.append(list(example["input_ids"][:prompt_length]))
        width = max(len(prompt) for prompt in prompts)
        batch["prompts"] = torch.tensor([[self.pad_token_id] * (width - len(p)) + p for p in prompts])
        batch["prompt_attention_mask"] = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return batch


def right_aligned(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generated sequences (left-padded prompt, answer, padding after EOS) with each row's real tokens (attention
    mask 1) moved to the left and the padding to the right: (input_ids, attention_mask, labels), labels -100 on
    the padding."""
    rows = []
    for ids, mask, row_labels in zip(input_ids, attention_mask, labels, strict=True):
        keep = mask.bool()
        rows.append((ids[keep], row_labels[keep]))
    width = max(len(ids) for ids, _ in rows)
    new_ids = input_ids.new_full((len(rows), width), pad_token_id)
    new_mask = attention_mask.new_zeros((len(rows), width))
    new_labels = labels.new_full((len(rows), width), IGNORE_INDEX)
    for row, (ids, row_labels) in enumerate(rows):
        new_ids[row, : len(ids)] = ids
        new_mask[row, : len(ids)] = 1
        new_labels[row, : len(ids)] = row_labels
    return new_ids, new_mask, new_labels


def build_on_policy_trainer(
    model: Any, teacher: Any, tokenizer: Any, rows: TrainingRows, config: TrainConfig, common: dict
) -> Any:
    """TRL's GKD trainer with `lmbda = on_policy_fraction` (the student samples at temperature 1) and `beta = 0`
    (forward KL), the loss computed in chunks at the answer positions (`ChunkedResponseLoss`) plus `sft_weight` ×
    the answers' cross-entropy. Refuses a student or teacher whose logits are transformed after the head."""
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    pad_token_id = tokenizer.pad_token_id

    class OnPolicyDistillTrainer(ChunkedResponseLoss, GKDTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.forwarded |= {"generation_prompt": 0, "generated": 0}
            # Gradient checkpointing is switched off while generating, so the key/value cache can be used.
            self.generation_kwargs["use_cache"] = True
            self.generation_config.use_cache = True

        def loss_teacher(self) -> Any:
            return self.teacher_model

        def generate_on_policy_outputs(self, model: Any, inputs: dict, generation_config: Any) -> tuple:
            input_ids, attention_mask, labels = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
            prompt_tokens = inputs["prompt_attention_mask"].sum()
            gather = self.accelerator.gather_for_metrics
            self.forwarded["generation_prompt"] += int(gather(prompt_tokens).sum())
            self.forwarded["generated"] += int(gather(attention_mask.sum() - prompt_tokens).sum())
            return right_aligned(input_ids, attention_mask, labels, pad_token_id)

        def training_step(self, model: Any, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
            # The accumulated token count was taken from the rows' responses, not the answers sampled here.
            return super().training_step(model, inputs, None)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {key: value for key, value in inputs.items() if key not in PROMPT_KEYS}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    check_plain_head(model)
    check_plain_head(teacher)
    args = GKDConfig(
        **common,
        **sampling_args(config),
        lmbda=config.objective_config.on_policy_fraction,
        beta=0.0,
        temperature=1.0,
        max_new_tokens=config.objective_config.max_new_tokens,
        seq_kd=False,
        max_length=None,
    )
    return OnPolicyDistillTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=sft_dataset(rows.encoded),
        processing_class=tokenizer,
        data_collator=PromptCollator(DataCollatorForLanguageModeling(pad_token_id=pad_token_id), pad_token_id),
        peft_config=config.peft_config(),
        position_chunk=config.position_chunk,
        nll_weight=config.sft_term,
        kl_weight=1.0,
    )


# Untuned: distill's rate (the same loss on sampled answers).
@register_objective(
    "on_policy", default_learning_rate=1e-3, needs_original=True, full_fine_tuning=True, config=OnPolicyObjectiveConfig
)
def prepare_on_policy(job: TrainingJob) -> PreparedTrainer:
    """The on-policy distillation trainer with the original model as teacher (`prepare_with_teacher`); refuses a
    tokenizer without a pad token (generation left-pads)."""
    if job.tokenizer.pad_token_id is None:
        raise ValueError("on_policy: the tokenizer has no pad_token_id; batched generation left-pads with it")
    return prepare_with_teacher(job, build_on_policy_trainer)
