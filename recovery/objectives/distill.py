"""`distill`: distillation from the original model on the selected rows' own responses.

TRL's (experimental) GKD trainer with `lmbda=0` (no on-policy sampling: the selected rows' responses are used)
and `beta=0`, which is the forward KL(original ‖ student) per response token, the teacher's distribution computed
on the fly, chunk by chunk at the response positions only; `sft_weight > 0` adds the response cross-entropy, and
`temperature` softens both distributions (`DistillObjectiveConfig`, distill_config.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from paser.recovery.models import describe_model, load_model
from paser.recovery.objectives import PreparedTrainer, TrainingJob, register_objective
from paser.recovery.objectives.distill_config import DistillObjectiveConfig
from paser.recovery.objectives.response_loss import ChunkedResponseLoss, check_plain_head
from paser.recovery.objectives.sft import sampling_args, sft_dataset, token_weighting_args
from paser.selection.formatting import check_same_tokenizer

if TYPE_CHECKING:
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import TrainingRows


def build_distill_trainer(
    model: Any, teacher: Any, tokenizer: Any, rows: TrainingRows, config: TrainConfig, common: dict
) -> Any:
    """TRL's GKD trainer as plain forward-KL distillation on the rows' own responses, plus an optional NLL term.

    `lmbda=0` (never sample on-policy) and `beta=0` (generalised JSD = KL(teacher ‖ student)) make GKD's loss the
    forward KL summed over the response tokens; the loss here is that KL at the config's `temperature` (T: both
    distributions softened by T, the KL times T², `response_totals`; T = 1 is GKD's) plus `sft_weight` × their
    cross-entropy, over their count, computed from both models' hidden states at the response positions in chunks
    of `config.position_chunk` (`paser.recovery.objectives.response_loss`) instead of GKD's full logits. Refuses a
    student or teacher whose logits are transformed after the output head (`check_plain_head`).
    """
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class DistillTrainer(ChunkedResponseLoss, GKDTrainer):
        def loss_teacher(self) -> Any:
            return self.teacher_model

    check_plain_head(model)
    check_plain_head(teacher)
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
        train_dataset=sft_dataset(rows.encoded, rows.response_jsd),
        processing_class=tokenizer,
        # Padding-free: the batch is one sequence with each row's position ids, which the teacher's forward reads
        # too (`ChunkedResponseLoss.compute_loss`), so both keep attention within each row.
        data_collator=DataCollatorForLanguageModeling(
            pad_token_id=tokenizer.pad_token_id, padding_free=config.objective_config.padding_free
        ),
        peft_config=config.peft_config(),
        position_chunk=config.position_chunk,
        nll_weight=config.sft_term,
        kl_weight=1.0,
        temperature=config.objective_config.temperature,
        **token_weighting_args(config),
    )


def prepare_with_teacher(job: TrainingJob, build: Callable[..., Any]) -> PreparedTrainer:
    """The trainer `build(model, teacher, tokenizer, rows, config, trainer_args)` makes, the original model loaded
    on the CPU as teacher (recorded as the record's `teacher`); refuses a teacher whose tokenizer differs from the
    pruned model's."""
    teacher, teacher_tokenizer = load_model(job.original, dtype=job.dtype, device="cpu")
    check_same_tokenizer(job.tokenizer, teacher_tokenizer)
    trainer = build(job.model, teacher, job.tokenizer, job.rows, job.config, job.trainer_args)
    return PreparedTrainer(
        trainer,
        record={"teacher": describe_model(job.original, teacher).to_dict()},
        tokens=lambda: dict(trainer.forwarded),
    )


# The best distillation rate measured (bench/results/recipe_tuning/: 1e-3 closed 39.5% of the dev gap; issue 26's
# one-seed run: 2e-4 18.8%, 1e-3 35.9%); 3e-3 was not measured.
@register_objective(
    "distill", default_learning_rate=1e-3, needs_original=True, full_fine_tuning=True, config=DistillObjectiveConfig
)
def prepare_distill(job: TrainingJob) -> PreparedTrainer:
    """The distillation trainer with the original model as teacher (`prepare_with_teacher`)."""
    return prepare_with_teacher(job, build_distill_trainer)
