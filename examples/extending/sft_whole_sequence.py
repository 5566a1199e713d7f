"""A recovery objective in one file: SFT with the loss on the whole sequence (prompt and response), as
continued pre-training on the formatted rows would, where paser's `sft` trains on the response tokens only.

Load it with `--plugin examples/extending/sft_whole_sequence.py`, then `paser recover --objective
sft_whole_sequence`, or `recovery: {objective: sft_whole_sequence}` in a `paser run` config.
"""

from __future__ import annotations

from paser.recovery.objectives import PreparedTrainer, TrainingJob, register_objective
from paser.recovery.objectives.sft import sampling_args


@register_objective("sft_whole_sequence", default_learning_rate=2e-4)
def prepare_sft_whole_sequence(job: TrainingJob) -> PreparedTrainer:
    """TRL's SFTTrainer over the job's rows with labels = input ids, and the LoRA adapter of `job.config`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = job.rows.encoded
    dataset = Dataset.from_dict({"input_ids": [r.input_ids for r in rows], "labels": [r.input_ids for r in rows]})
    args = SFTConfig(**job.trainer_args, **sampling_args(job.config), max_length=None, remove_unused_columns=True)
    trainer = SFTTrainer(
        model=job.model,
        args=args,
        train_dataset=dataset,
        processing_class=job.tokenizer,
        peft_config=job.config.lora_config(),
    )
    return PreparedTrainer(trainer)
