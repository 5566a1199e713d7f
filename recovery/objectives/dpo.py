"""`dpo` and `sft+dpo`: TRL's `DPOTrainer` on pairs chosen = the corpus response, rejected = the pruned model's
own greedy answer to the same prompt.

The rejected answers are generated once and cached in `OUT/rejections.jsonl` (`paser.recovery.rejections`). The
reference model is the pruned model itself: peft's adapter disabled, so no second copy is held. Pairs whose
rejected answer equals the chosen one teach nothing and are dropped and counted. `sft+dpo` adds TRL's `sft`
loss (NLL of the chosen response) to the sigmoid loss, weighted by `sft_weight` (default 1); `dpo` adds it only
when `sft_weight` is set above 0.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from paser.recovery.identity import checkpoint_identity
from paser.recovery.models import linear_sparsity
from paser.recovery.objectives import PreparedTrainer, TrainingJob, register_objective
from paser.recovery.objectives.dpo_config import DpoObjectiveConfig
from paser.recovery.versions import package_versions
from paser.selection.formatting import build_prompt

if TYPE_CHECKING:
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import TrainingRows

# Drop reason counted in recovery.json.
REJECTED_EQUALS_CHOSEN = "rejected_equals_chosen"
REJECTIONS_FILE = "rejections.jsonl"


def preference_pairs(
    rows: TrainingRows, tokenizer: Any, answers: dict[str, str], template: str
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """DPO rows `{"prompt", "chosen", "rejected"}` (prompt text as the scorer built it) and the drop counts.

    A pair whose rejected answer equals the chosen response (whitespace-stripped) is dropped under
    `rejected_equals_chosen`; an empty rejected answer (the pruned model stopped at once) is kept, because
    preferring a real answer to none is a lesson. Refuses rows with no answer in `answers`.
    """
    pairs: list[dict[str, str]] = []
    dropped: dict[str, int] = {}
    for sample in rows.samples:
        if sample.id not in answers:
            raise ValueError(f"no rejected answer was generated for row {sample.id!r}")
        rejected = answers[sample.id]
        if rejected.strip() == sample.response.strip():
            dropped[REJECTED_EQUALS_CHOSEN] = dropped.get(REJECTED_EQUALS_CHOSEN, 0) + 1
            continue
        pairs.append(
            {"prompt": build_prompt(sample, tokenizer, template), "chosen": sample.response, "rejected": rejected}
        )
    return pairs, dropped


def build_dpo_trainer(model: Any, tokenizer: Any, pairs: list[dict[str, str]], config: TrainConfig, common: dict):
    """A TRL `DPOTrainer` with the LoRA adapter; the reference is the same model with the adapter disabled."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    loss_type: list[str] = ["sigmoid"]
    loss_weights = [1.0]
    if config.sft_term > 0:
        loss_type.append("sft")
        loss_weights.append(config.sft_term)
    args = DPOConfig(
        **common,
        beta=config.objective_config.dpo_beta,
        loss_type=loss_type,
        loss_weights=loss_weights,
        max_length=config.max_length,
    )
    return DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=config.lora_config(),
    )


def rejected_answers(job: TrainingJob) -> tuple[dict[str, str], dict[str, Any]]:
    """The pruned model's greedy answer to every row's prompt, by id, and the generation stats.

    Generated on this process's device, or read from the cache in the output folder when its fingerprint (the
    model's identity and sparsity, the generation settings, the paser version) matches; under `accelerate
    launch` the main process generates and the others read the cache.
    """
    from paser.recovery.rejections import greedy_answers

    model, config = job.model, job.config
    max_new_tokens = config.objective_config.max_new_tokens
    prompts = [(row.id, row.input_ids[: row.prompt_length]) for row in job.rows.encoded]
    fingerprint = {
        "model": str(getattr(model, "name_or_path", "")),
        "checkpoint": checkpoint_identity(getattr(model, "name_or_path", "")),
        "linear_sparsity": round(linear_sparsity(model), 6),
        "max_new_tokens": max_new_tokens,
        "template": config.template,
        "paser": package_versions(["paser"])["paser"],
    }
    model.to(job.state.device if job.device != "cpu" else "cpu")
    with job.state.main_process_first():
        answers, generation_stats = greedy_answers(
            model,
            job.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=config.generation_batch_size,
            cache_path=job.out_dir / REJECTIONS_FILE,
            fingerprint=fingerprint,
            show_progress=config.show_progress,
        )
    model.to("cpu")
    return answers, generation_stats


# A smaller learning rate than SFT's: the preference loss moves the policy much faster per step.
@register_objective("sft+dpo", default_learning_rate=5e-5, default_sft_weight=1.0, config=DpoObjectiveConfig)
@register_objective("dpo", default_learning_rate=5e-5, config=DpoObjectiveConfig)
def prepare_dpo(job: TrainingJob) -> PreparedTrainer:
    """The DPO trainer over the rows' preference pairs; refuses a run whose every pair was dropped."""
    generation_start = time.perf_counter()
    answers, generation_stats = rejected_answers(job)
    pairs, dropped = preference_pairs(job.rows, job.tokenizer, answers, job.config.template)
    if not pairs:
        raise ValueError(f"every DPO pair was dropped ({dropped}); nothing to train on")
    generation_stats["seconds_total"] = round(time.perf_counter() - generation_start, 3)
    trainer = build_dpo_trainer(job.model, job.tokenizer, pairs, job.config, job.trainer_args)
    return PreparedTrainer(
        trainer,
        record={"pairs": {"used": len(pairs), "dropped": dropped, "generation": generation_stats}},
        paths={"rejections": job.out_dir / REJECTIONS_FILE},
        tokens=lambda: dpo_tokens(trainer, job, generation_stats),
    )


def dpo_tokens(trainer: Any, job: TrainingJob, generation_stats: dict[str, Any]) -> dict[str, int]:
    """What a finished DPO training forwarded, as `paser.recovery.flops.recovery_compute` takes it; estimated, not
    counted: TRL's trainer is not instrumented.

    Per pair, the prompt + chosen and prompt + rejected sequences (each cut at `max_length`, as the collator does)
    go through the trained model and through the reference (the adapter disabled), times the epochs trained; the
    loss is over their answer tokens. Generation prefilled the prompts of the rows generated in this run (their
    share of all prompt tokens, the cached rows' excluded) and generated `tokens_generated`.
    """
    dataset, limit = trainer.train_dataset, job.config.max_length
    trained = loss_tokens = 0
    for prompt, chosen, rejected in zip(
        dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True
    ):
        for answer in (chosen, rejected):
            length = min(len(prompt) + len(answer), limit)
            trained += length
            loss_tokens += max(length - len(prompt), 0)
    epochs = trainer.state.epoch or 0.0
    prompt_tokens = sum(row.prompt_length for row in job.rows.encoded)
    generated_share = generation_stats["generated"] / max(generation_stats["rows"], 1)
    return {
        "trained": round(trained * epochs),
        "loss_tokens": round(loss_tokens * epochs),
        "reference_forward": round(trained * epochs),
        "generation_prompt": round(prompt_tokens * generated_share),
        "generated": generation_stats["tokens_generated"],
    }
