"""`distill`: distillation from the original model on the selected rows' own responses.

TRL's (experimental) GKD trainer with `lmbda=0` (no on-policy sampling: the selected rows' responses are used)
and `beta=0`, which is the forward KL(original ‖ student) per response token, the teacher's logits computed on
the fly; `sft_weight > 0` adds the response cross-entropy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from paser.recovery.models import describe_model, load_model
from paser.recovery.objectives import PreparedTrainer, TrainingJob, register_objective
from paser.recovery.objectives.sft import sampling_args, sft_dataset
from paser.selection.formatting import check_same_tokenizer

if TYPE_CHECKING:
    from paser.recovery.train import TrainConfig, TrainingRows


def build_distill_trainer(
    model: Any, teacher: Any, tokenizer: Any, rows: TrainingRows, config: TrainConfig, common: dict
) -> Any:
    """TRL's GKD trainer as plain forward-KL distillation on the rows' own responses, plus an optional NLL term.

    `lmbda=0` (never sample on-policy) and `beta=0` (generalised JSD = KL(teacher ‖ student)) make GKD's
    loss the per-response-token forward KL (both normalised by the response-token count of the batch); the
    subclass adds `sft_weight` × the response cross-entropy computed from the same student logits.
    """
    import torch.nn.functional as functional
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    sft_weight = config.sft_term

    class DistillTrainer(GKDTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            student = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            with torch.no_grad():
                teacher_logits = self.teacher_model(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                ).logits
            labels = inputs["labels"][:, 1:]
            student_logits = student.logits[:, :-1, :]
            kl = self.generalized_jsd_loss(
                student_logits=student_logits,
                teacher_logits=teacher_logits[:, :-1, :],
                labels=labels,
                beta=0.0,
                num_items_in_batch=num_items_in_batch,
            )
            loss = kl
            if sft_weight > 0:
                nll = functional.cross_entropy(
                    student_logits.reshape(-1, student_logits.size(-1)).float(),
                    labels.reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
                count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum()
                loss = kl + sft_weight * nll / count
            return (loss, student) if return_outputs else loss

    args = GKDConfig(
        **common,
        **sampling_args(config),
        lmbda=0.0,
        beta=0.0,
        seq_kd=False,
        max_length=None,
    )
    return DistillTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=sft_dataset(rows.encoded),
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id),
        peft_config=config.lora_config(),
    )


@register_objective("distill", default_learning_rate=2e-4, needs_original=True)
def prepare_distill(job: TrainingJob) -> PreparedTrainer:
    """The distillation trainer, the original model loaded on the CPU as teacher; refuses a teacher whose
    tokenizer differs from the pruned model's."""
    teacher, teacher_tokenizer = load_model(job.original, dtype=job.dtype, device="cpu")
    check_same_tokenizer(job.tokenizer, teacher_tokenizer)
    trainer = build_distill_trainer(job.model, teacher, job.tokenizer, job.rows, job.config, job.trainer_args)
    return PreparedTrainer(trainer, record={"teacher": describe_model(job.original, teacher).to_dict()})
