"""`sft`: supervised fine-tuning with TRL's `SFTTrainer` and the LoRA adapter, loss on the response tokens only.

Rows are tokenised by `paser.selection.formatting.encode_corpus` (`paser.recovery.train.load_training_rows`), exactly as
degradation scoring tokenised them, and handed to TRL pre-tokenised with `labels = -100` on every prompt token,
so the loss mask is the scorer's response span by construction (no `completion_only_loss` /
`assistant_only_loss` guessing from text). The loss is computed from the decoder's hidden states at the response
positions, chunk by chunk (`paser.recovery.objectives.response_loss`), never from the full logits of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from paser.recovery.objectives import PreparedTrainer, TrainingJob, register_objective
from paser.recovery.objectives.response_loss import ChunkedResponseLoss, check_plain_head
from paser.recovery.objectives.sft_config import SftObjectiveConfig
from paser.recovery.token_weights import RESPONSE_JSD
from paser.selection.formatting import EncodedSample

if TYPE_CHECKING:
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import TrainingRows


def sft_dataset(encoded: Sequence[EncodedSample], response_jsd: Sequence[Any] | None = None) -> Any:
    """A pre-tokenised `datasets.Dataset`: `input_ids`, and `labels` = -100 on the prompt, the ids on the response;
    with `response_jsd` (per row, one value per response token: `paser.recovery.token_weights.align_token_jsd`)
    also that column."""
    from datasets import Dataset

    columns = {
        "input_ids": [row.input_ids for row in encoded],
        "labels": [[-100] * row.prompt_length + row.input_ids[row.prompt_length :] for row in encoded],
    }
    if response_jsd is not None:
        columns[RESPONSE_JSD] = [list(map(float, values)) for values in response_jsd]
    return Dataset.from_dict(columns)


def token_weighting_args(config: TrainConfig) -> dict[str, Any]:
    """`ChunkedResponseLoss`'s token weighting settings from the config (none when the objective weights no
    tokens)."""
    weighting = config.token_weighting
    if weighting is None:
        return {"token_weighting": "none"}
    return {"token_weighting": weighting.token_weighting, "token_weight_fraction": weighting.token_weight_fraction}


def sampling_args(config: TrainConfig) -> dict[str, str]:
    """transformers' sampler for pre-tokenised rows: length-grouped mega-batches (shuffled) or plain random."""
    return {"train_sampling_strategy": "group_by_length" if config.group_by_length else "random"}


def build_sft_trainer(model: Any, tokenizer: Any, rows: TrainingRows, config: TrainConfig, common: dict) -> Any:
    """A TRL `SFTTrainer` over the pre-tokenised rows, with the LoRA adapter; loss on response tokens only, from
    the response positions' hidden states in chunks of `config.position_chunk`. Refuses a model whose logits are
    transformed after the output head (`check_plain_head`)."""
    from trl import SFTConfig, SFTTrainer

    class ResponseSFTTrainer(ChunkedResponseLoss, SFTTrainer):
        pass

    check_plain_head(model)

    args = SFTConfig(
        **common,
        **sampling_args(config),
        max_length=None,
        shuffle_dataset=True,
        remove_unused_columns=True,
        # A plug-in objective that reuses this trainer without sft's config trains with padding.
        padding_free=getattr(config.objective_config, "padding_free", False),
    )
    return ResponseSFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(rows.encoded, rows.response_jsd),
        processing_class=tokenizer,
        peft_config=config.peft_config(),
        position_chunk=config.position_chunk,
        **token_weighting_args(config),
    )


# Chosen on a dev split (bench/results/recipe_tuning/: SmolLM2-135M, Wanda 50%, 160 Alpaca rows, 2 epochs = 40
# LoRA steps; dev gap closed: 2e-4 25.9%, 1e-3 49.8%, 3e-3 51.8%, one seed); 2e-4, the usual LoRA SFT rate, left
# about half the recoverable gap unclaimed.
@register_objective("sft", default_learning_rate=3e-3, full_fine_tuning=True, config=SftObjectiveConfig)
def prepare_sft(job: TrainingJob) -> PreparedTrainer:
    """The SFT trainer over the job's rows."""
    trainer = build_sft_trainer(job.model, job.tokenizer, job.rows, job.config, job.trainer_args)
    return PreparedTrainer(trainer, tokens=lambda: dict(trainer.forwarded))
