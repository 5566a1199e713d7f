"""Self-distillation targets (`TrainConfig.targets: original`): the original model writes the responses the pruned
model trains on, after Self-Data Distillation (Thangarasa et al., arXiv 2410.09982: the unpruned model rewrites the
SFT responses, then the pruned model is fine-tuned on them).

The original model answers every training row's prompt greedily (`paser.recovery.rejections.greedy_answers`: the
prompt token ids exactly as the scorer built them, left-padded batches, up to `target_max_new_tokens` new tokens,
stopping at EOS). The answers are cached in `OUT/targets.jsonl` (or a `targets_cache` file shared by runs), keyed
by the original model's identity, the formatting and the generation settings (header) and each prompt's token ids
(line), appended batch by batch, so a rerun, or a crashed run resumed, generates only what is missing. Each answer
(decoded without special tokens, whitespace-stripped) replaces the row's response, and the rows are tokenised
again exactly as training tokenises corpus rows (template, EOS, `max_length`); a row whose answer is empty is
skipped and counted (`empty_target`). Greedy decoding makes the targets a function of the model and the prompt
only: the same under every seed.

Deviation from the paper: it has the original rewrite the corpus answer (its prompt shows that answer); here the
original answers the prompt alone, which needs no rewriting prompt and keeps the prompt ids the scorer scored.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paser.recovery.identity import checkpoint_identity
from paser.recovery.models import describe_model, load_model
from paser.recovery.rejections import greedy_answers
from paser.recovery.versions import package_versions
from paser.selection.formatting import check_same_tokenizer, encode_corpus

if TYPE_CHECKING:
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import TrainingRows

TARGETS_FILE = "targets.jsonl"
# Skip reason counted in recovery.json's rows.skipped.
EMPTY_TARGET = "empty_target"


def targets_cache_path(config: TrainConfig, out_dir: Path) -> Path:
    """Where the answers are cached: `config.targets_cache`, else `out_dir/targets.jsonl`."""
    return Path(config.targets_cache) if config.targets_cache else Path(out_dir) / TARGETS_FILE


def target_fingerprint(original: str, config: TrainConfig) -> dict[str, Any]:
    """What the cached targets depend on besides each prompt's ids: the original model (name and checkpoint
    identity), the formatting and the paser version (`target_max_new_tokens` and the EOS ids are in the header)."""
    return {
        "role": "targets",
        "model": original,
        "checkpoint": checkpoint_identity(original),
        "template": config.template,
        "paser": package_versions(["paser"])["paser"],
    }


def generate_targets(
    rows: TrainingRows, tokenizer: Any, config: TrainConfig, original: str, job_device: Any, dtype: str, out_dir: Any
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The original model's greedy answer to every row's prompt, by id, read from or added to
    the cache (`targets_cache_path`); returns (answers, generation stats as `greedy_answers` gives them, the original's
    `ModelInfo` dict). The model is loaded in `dtype` on the CPU, moved to `job_device` for generating, and released.
    Refuses an original whose tokenizer differs from the pruned model's."""
    model, original_tokenizer = load_model(original, dtype=dtype, device="cpu")
    check_same_tokenizer(tokenizer, original_tokenizer)
    info = describe_model(original, model).to_dict()
    prompts = [(row.id, row.input_ids[: row.prompt_length]) for row in rows.encoded]
    model.to(job_device)
    try:
        answers, stats = greedy_answers(
            model,
            tokenizer,
            prompts,
            max_new_tokens=config.target_max_new_tokens,
            batch_size=config.generation_batch_size,
            cache_path=targets_cache_path(config, out_dir),
            fingerprint=target_fingerprint(original, config),
            show_progress=config.show_progress,
        )
    finally:
        del model
        gc.collect()
    return answers, stats, info


def rows_with_targets(rows: TrainingRows, answers: dict[str, str], tokenizer: Any, config: TrainConfig) -> TrainingRows:
    """The rows with each response replaced by its answer (stripped) and tokenised again as training tokenises
    rows; rows with an empty answer are skipped under `empty_target`, those the encoder skips under its reasons,
    both added to the rows' skip counts. Refuses (ValueError) a row without an answer and rows of which none is
    left."""
    samples, empty = [], 0
    for sample in rows.samples:
        if sample.id not in answers:
            raise ValueError(f"no target was generated for row {sample.id!r}")
        answer = answers[sample.id].strip()
        if not answer:
            empty += 1
            continue
        samples.append(dataclasses.replace(sample, response=answer))
    encoded, skip_counts, _ = encode_corpus(
        samples,
        tokenizer,
        max_length=config.max_length,
        overflow=config.overflow,
        template=config.template,
        show_progress=False,
    )
    skipped = dict(rows.skipped)
    for reason, count in {EMPTY_TARGET: empty, **skip_counts}.items():
        if count:
            skipped[reason] = skipped.get(reason, 0) + count
    if not encoded:
        raise ValueError(f"no row left to train on after the original model's targets (skipped: {skipped})")
    kept = {row.id for row in encoded}
    return dataclasses.replace(
        rows,
        samples=[sample for sample in samples if sample.id in kept],
        encoded=encoded,
        stats=rows.stats,
        skipped=skipped,
        truncated=sum(row.truncated for row in encoded),
    )


def original_targets(
    rows: TrainingRows, tokenizer: Any, config: TrainConfig, original: str, state: Any, device: str, dtype: str, out_dir
) -> tuple[TrainingRows, dict[str, Any], dict[str, int]]:
    """`targets: original` end to end: generate (or read) the original's answers, retarget the rows. Under
    `accelerate launch` the main process generates and the others read the cache. Returns (rows to train on, the
    record's `targets` block, the generation's token counts for `paser.recovery.flops.recovery_compute`:
    `target_prompt` (prompt tokens prefilled for the rows generated in this run) and `target_generated`)."""
    started = time.perf_counter()
    with state.main_process_first():
        answers, stats, info = generate_targets(
            rows, tokenizer, config, original, state.device if device != "cpu" else "cpu", dtype, out_dir
        )
    retargeted = rows_with_targets(rows, answers, tokenizer, config)
    stats["seconds_total"] = round(time.perf_counter() - started, 3)
    prompt_tokens = sum(row.prompt_length for row in rows.encoded)
    generated_share = stats["generated"] / stats["rows"] if stats["rows"] else 0.0
    record = {
        "source": "original",
        "model": info,
        "max_new_tokens": config.target_max_new_tokens,
        "generation": stats,
        "empty": retargeted.skipped.get(EMPTY_TARGET, 0) - rows.skipped.get(EMPTY_TARGET, 0),
        "response_tokens": sum(row.response_length for row in retargeted.encoded),
        "corpus_response_tokens": sum(row.response_length for row in rows.encoded),
        "file": str(targets_cache_path(config, out_dir)),
    }
    tokens = {"target_prompt": round(prompt_tokens * generated_share), "target_generated": stats["tokens_generated"]}
    return retargeted, record, tokens
