"""Recovery training: LoRA fine-tuning of a pruned model on the selected subset, with TRL and peft.

Objectives (`TrainConfig.objective`):

- `sft`: TRL `SFTTrainer` + a peft LoRA adapter; loss on the response tokens only. Rows are tokenised by
  `selection.formatting.encode_corpus`, exactly as degradation scoring tokenised them, and handed to TRL
  pre-tokenised with `labels = -100` on every prompt token, so the loss mask is the scorer's response span
  by construction (no `completion_only_loss` / `assistant_only_loss` guessing from text).
- `dpo`: TRL `DPOTrainer`; chosen = the corpus response, rejected = the pruned model's own greedy answer
  to the same prompt (generated once, cached in `OUT/rejections.jsonl`). The reference model is the
  pruned model itself: peft's adapter disabled, so no second copy is held. Pairs whose rejected answer
  equals the chosen one teach nothing and are dropped and counted.
- `sft+dpo`: the DPO run with TRL's `sft` loss (NLL of the chosen response) added to the sigmoid loss,
  weighted by `sft_weight`.
- `distill`: TRL's (experimental) GKD trainer with `lmbda=0` (no on-policy sampling: the selected rows'
  responses are used) and `beta=0`, which is the forward KL(original ‖ student) per response token,
  the teacher's logits computed on the fly; `sft_weight > 0` adds the response cross-entropy.

`recover()` writes `OUT/adapter/` (peft), `OUT/merged/` (adapter merged, pruning zeros restored, plain
transformers checkpoint), `OUT/train_log.jsonl` (one line per logged step), `OUT/sparsity.json` and
`OUT/recovery.json` (what ran, on what, how long, with which versions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from recovery.card import model_card
from recovery.models import (
    choose_dtype,
    describe_model,
    linear_sparsity,
    load_model,
    resolve_device,
    save_checkpoint,
)
from recovery.prune import layer_sparsity
from selection.atomic import write_atomic
from selection.corpus import CorpusConfig, CorpusStats, Sample, load_corpus
from selection.formatting import EncodedSample, build_prompt, check_same_tokenizer, encode_corpus

OBJECTIVES = ("sft", "dpo", "distill", "sft+dpo")
# Learning rates when the config leaves `learning_rate` unset: the usual LoRA SFT rate, and a smaller one for
# preference optimisation, whose loss moves the policy much faster per step.
DEFAULT_LEARNING_RATES = {"sft": 2e-4, "distill": 2e-4, "dpo": 5e-5, "sft+dpo": 5e-5}
REMASK_TEXTS = ("wikitext2", "none")
# Skip / drop reasons counted in recovery.json.
REJECTED_EQUALS_CHOSEN = "rejected_equals_chosen"


@dataclasses.dataclass
class TrainConfig:
    """How to fine-tune: objective, LoRA shape, optimisation, formatting, DPO/distillation knobs, devices."""

    objective: str = dataclasses.field(default="sft", metadata={"help": "sft, dpo, distill or sft+dpo."})
    # LoRA: the paper's and peft's usual small adapter on every linear layer of the decoder.
    lora_r: int = dataclasses.field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = dataclasses.field(default=16, metadata={"help": "LoRA scaling numerator (alpha / r)."})
    lora_dropout: float = dataclasses.field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: str | list[str] = dataclasses.field(
        default="all-linear",
        metadata={"help": "peft target modules: `all-linear` (every decoder linear, not lm_head) or a list."},
    )
    learning_rate: float | None = dataclasses.field(
        default=None, metadata={"help": "Peak learning rate; default 2e-4 for sft/distill, 5e-5 for dpo/sft+dpo."}
    )
    epochs: float = dataclasses.field(default=1.0, metadata={"help": "Passes over the subset."})
    max_steps: int = dataclasses.field(
        default=-1, metadata={"help": "Stop after this many optimiser steps (-1: run the epochs)."}
    )
    batch_size: int = dataclasses.field(default=8, metadata={"help": "Rows per device per step."})
    grad_accum: int = dataclasses.field(default=1, metadata={"help": "Gradient accumulation steps."})
    warmup: float = dataclasses.field(
        default=0.03, metadata={"help": "Warm-up: a fraction of the steps (<1) or a step count (>=1)."}
    )
    scheduler: str = dataclasses.field(default="cosine", metadata={"help": "transformers lr scheduler name."})
    weight_decay: float = dataclasses.field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_length: int = dataclasses.field(
        default=1024, metadata={"help": "Tokens per row (prompt + response); longer responses are cut."}
    )
    overflow: str = dataclasses.field(
        default="truncate", metadata={"help": "Rows over max_length: truncate the response tail, or skip them."}
    )
    template: str = dataclasses.field(
        default="auto", metadata={"help": "auto, chat or alpaca: must match the template the subset was scored with."}
    )
    group_by_length: bool = dataclasses.field(
        default=True,
        metadata={"help": "sft/distill: batch rows of similar length (less padding); dpo always samples randomly."},
    )
    gradient_checkpointing: bool = dataclasses.field(
        default=False, metadata={"help": "Recompute activations in the backward pass (less memory, ~30% slower)."}
    )
    seed: int = dataclasses.field(default=0, metadata={"help": "Seed for LoRA init, shuffling and dropout."})
    # DPO
    dpo_beta: float = dataclasses.field(default=0.1, metadata={"help": "DPO beta (strength of the KL anchor)."})
    max_new_tokens: int = dataclasses.field(
        default=256, metadata={"help": "DPO: longest greedy answer generated as the rejected response."}
    )
    generation_batch_size: int = dataclasses.field(default=16, metadata={"help": "DPO: prompts per generate call."})
    # SFT term weight in sft+dpo and distill (default 1.0 for sft+dpo, 0.0 for distill when unset).
    sft_weight: float | None = dataclasses.field(
        default=None,
        metadata={"help": "Weight of the response NLL added to the dpo (sft+dpo, default 1) or KL (distill, 0) loss."},
    )
    # Sparsity
    remask_eval: str = dataclasses.field(
        default="wikitext2",
        metadata={"help": "Text for the re-masking perplexity check: wikitext2, none, or a .txt file."},
    )
    remask_eval_windows: int = dataclasses.field(default=8, metadata={"help": "Windows for that check."})
    remask_eval_seqlen: int = dataclasses.field(default=512, metadata={"help": "Tokens per window for that check."})
    # Hardware
    dtype: str = dataclasses.field(
        default="auto", metadata={"help": "auto (bf16 where native, else fp32), bf16, fp16 or fp32."}
    )
    device: str | None = dataclasses.field(default=None, metadata={"help": "cuda or cpu; default: cuda if present."})
    logging_steps: int = dataclasses.field(default=1, metadata={"help": "Log the loss every N steps."})
    show_progress: bool = dataclasses.field(default=True, metadata={"help": "Progress bars."})

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        positive = {
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_length": self.max_length,
            "max_new_tokens": self.max_new_tokens,
            "generation_batch_size": self.generation_batch_size,
            "logging_steps": self.logging_steps,
            "epochs": self.epochs,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use epochs) or > 0, got {self.max_steps}")
        if self.sft_weight is not None and self.sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0, got {self.sft_weight}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    @property
    def lr(self) -> float:
        """The learning rate in effect: the configured one, else the objective's default."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[self.objective]

    @property
    def sft_term(self) -> float:
        """The weight of the response NLL term in effect (1 for sft+dpo, 0 for distill unless configured)."""
        if self.sft_weight is not None:
            return self.sft_weight
        return 1.0 if self.objective == "sft+dpo" else 0.0

    def lora_config(self) -> Any:
        """The peft `LoraConfig` for a causal LM: rank, alpha, dropout and target modules from this config."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field plus the learning rate and SFT weight in effect."""
        return {**dataclasses.asdict(self), "learning_rate_effective": self.lr, "sft_weight_effective": self.sft_term}


# ---------------------------------------------------------------------------------------------- subset rows


@dataclasses.dataclass
class TrainingRows:
    """The subset as training rows: samples and their token ids (same order), and what was skipped."""

    samples: list[Sample]
    encoded: list[EncodedSample]
    stats: CorpusStats
    skipped: dict[str, int]
    truncated: int

    def token_counts(self) -> dict[str, int]:
        """Prompt, response (loss) and total tokens over the rows, per epoch."""
        prompt = sum(row.prompt_length for row in self.encoded)
        response = sum(row.response_length for row in self.encoded)
        return {"prompt": prompt, "response": response, "total": prompt + response}


def _has_id_field(path: Path) -> bool:
    """True when the first row of a JSON Lines subset carries an `id` (as `selection.jsonl` rows do)."""
    if path.suffix != ".jsonl":
        return False
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                try:
                    return "id" in json.loads(line)
                except json.JSONDecodeError:
                    return False  # load_corpus reports the bad line with its number
    return False


def load_training_rows(subset: str | Path, tokenizer: Any, config: TrainConfig) -> TrainingRows:
    """Read the subset file (`selection.jsonl` or any corpus file) and tokenise it as the scorer did.

    Rows keep the subset's `id` when it has one. Invalid rows are counted by `load_corpus`; rows over
    `max_length` are truncated (counted) or skipped (counted) per `config.overflow`. Refuses a missing file
    (FileNotFoundError) and a subset with no usable row (ValueError naming the file and the skip counts).
    """
    path = Path(subset)
    if not path.exists():
        raise FileNotFoundError(f"subset file not found: {path}")
    corpus = load_corpus(
        CorpusConfig(path=str(path), id_field="id" if _has_id_field(path) else None, drop_duplicates=False)
    )
    encoded, skip_counts, _ = encode_corpus(
        corpus.samples,
        tokenizer,
        max_length=config.max_length,
        overflow=config.overflow,
        template=config.template,
        show_progress=config.show_progress,
    )
    kept = {row.id for row in encoded}
    samples = [sample for sample in corpus.samples if sample.id in kept]
    skipped = {**corpus.stats.skipped, **skip_counts}
    if not encoded:
        raise ValueError(f"{path}: no row left to train on (skipped: {skipped or 'none'})")
    return TrainingRows(
        samples=samples,
        encoded=encoded,
        stats=corpus.stats,
        skipped=skipped,
        truncated=sum(row.truncated for row in encoded),
    )


def sft_dataset(encoded: Sequence[EncodedSample]) -> Any:
    """A pre-tokenised `datasets.Dataset`: `input_ids`, and `labels` = -100 on the prompt, the ids on the response."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [row.input_ids for row in encoded],
            "labels": [[-100] * row.prompt_length + row.input_ids[row.prompt_length :] for row in encoded],
        }
    )


# ---------------------------------------------------------------------------------------------- logging


def make_log_callback(path: Path) -> Any:
    """A `TrainerCallback` writing `{"step", "epoch", "elapsed_s", <logged values>}` per log event to `path`."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = path.open("w", encoding="utf-8")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                record = {
                    "step": state.global_step,
                    "epoch": state.epoch,
                    "elapsed_s": time.perf_counter() - self.start,
                }
                record.update({key: value for key, value in logs.items() if isinstance(value, (int, float, str))})
                self.stream.write(json.dumps(record) + "\n")
                self.stream.flush()

        def on_train_end(self, args, state, control, **kwargs):
            self.stream.close()

    return _Callback()


# ---------------------------------------------------------------------------------------------- trainers


def _trl_common_args(config: TrainConfig, out_dir: Path, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """TrainingArguments shared by the three TRL configs; bf16/fp16 only when the weights are in that dtype.

    TRL's configs default to bf16=True, which fails on a CPU without bf16 support, so both flags are always
    set explicitly, and `use_cpu` keeps the Trainer off an accelerator the user did not ask for.
    """
    return {
        "output_dir": str(out_dir / "trainer"),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.lr,
        "lr_scheduler_type": config.scheduler,
        "warmup_steps": config.warmup,
        "weight_decay": config.weight_decay,
        "logging_steps": config.logging_steps,
        "save_strategy": "no",
        "report_to": [],
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "use_cpu": device == "cpu",
        "gradient_checkpointing": config.gradient_checkpointing,
        "disable_tqdm": not config.show_progress,
        "dataloader_num_workers": 0,
    }


def _sampling(config: TrainConfig) -> dict[str, str]:
    """transformers' sampler for pre-tokenised rows: length-grouped mega-batches (shuffled) or plain random."""
    return {"train_sampling_strategy": "group_by_length" if config.group_by_length else "random"}


def build_sft_trainer(model: Any, tokenizer: Any, rows: TrainingRows, config: TrainConfig, common: dict) -> Any:
    """A TRL `SFTTrainer` over the pre-tokenised rows, with the LoRA adapter; loss on response tokens only."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**common, **_sampling(config), max_length=None, shuffle_dataset=True, remove_unused_columns=True)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(rows.encoded),
        processing_class=tokenizer,
        peft_config=config.lora_config(),
    )


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
        beta=config.dpo_beta,
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
        **_sampling(config),
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


# ---------------------------------------------------------------------------------------------- orchestration


@dataclasses.dataclass
class RecoveryResult:
    """What `recover` wrote: the run record and the paths of its artifacts."""

    out_dir: Path
    record: dict[str, Any]
    paths: dict[str, Path]


def _versions() -> dict[str, str]:
    import importlib.metadata
    import platform

    versions = {"python": platform.python_version()}
    for package in ("paser", "torch", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    return write_atomic(path, lambda staging: staging.write_text(json.dumps(payload, indent=2, default=str)))


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _remask_text(config: TrainConfig, data_dir: str | Path | None) -> tuple[str | None, str]:
    """The held-out text for the re-masking perplexity check and its name, or (None, why not)."""
    from recovery.evaluate import load_ppl_text

    if config.remask_eval == "none":
        return None, "disabled (remask_eval=none)"
    if config.remask_eval == "wikitext2":
        try:
            return load_ppl_text("wikitext2", data_dir), "wikitext2 test"
        except FileNotFoundError as error:
            return None, f"wikitext2 not available: {error}"
    path = Path(config.remask_eval)
    if not path.is_file():
        raise FileNotFoundError(f"remask_eval text file not found: {path}")
    return path.read_text(encoding="utf-8"), str(path)


def _distributed_state() -> Any:
    from accelerate import PartialState

    return PartialState()


def checkpoint_identity(path: str | Path) -> str | None:
    """A cheap identity of a local checkpoint folder: sha256 over its config, pruning record and weight files'
    names, sizes and modification times, so re-pruning into the same folder invalidates cached answers.
    None for a hub id (not a local folder)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if file.name in ("config.json", "pruning.json"):
            digest.update(file.name.encode() + file.read_bytes())
        elif file.suffix in (".safetensors", ".bin"):
            status = file.stat()
            digest.update(f"{file.name}:{status.st_size}:{status.st_mtime_ns}".encode())
    return digest.hexdigest()


def _build_trainer(
    model: Any,
    tokenizer: Any,
    rows: TrainingRows,
    config: TrainConfig,
    state: Any,
    out_dir: Path,
    original: str | None,
) -> tuple[Any, dict[str, Any]]:
    """The TRL trainer for `config.objective` and what the run record gains from preparing it.

    DPO: the rejected answers are generated (or read from the cache) first, by the pruned model on this
    process's device; under `accelerate launch` the main process generates and the others read the cache.
    Distill: the teacher is loaded and its tokenizer checked against the pruned model's.
    """
    device = resolve_device(config.device)
    dtype = choose_dtype(config.dtype, device)
    common = _trl_common_args(config, out_dir, device, dtype)
    if config.objective == "sft":
        return build_sft_trainer(model, tokenizer, rows, config, common), {}
    if config.objective == "distill":
        teacher, teacher_tokenizer = load_model(original, dtype=_dtype_name(dtype), device="cpu")
        check_same_tokenizer(tokenizer, teacher_tokenizer)
        trainer = build_distill_trainer(model, teacher, tokenizer, rows, config, common)
        return trainer, {"teacher": describe_model(original, teacher).to_dict()}

    from recovery.rejections import greedy_answers

    generation_start = time.perf_counter()
    prompts = [(row.id, row.input_ids[: row.prompt_length]) for row in rows.encoded]
    fingerprint = {
        "model": str(getattr(model, "name_or_path", "")),
        "checkpoint": checkpoint_identity(getattr(model, "name_or_path", "")),
        "linear_sparsity": round(linear_sparsity(model), 6),
        "max_new_tokens": config.max_new_tokens,
        "template": config.template,
        "paser": _versions()["paser"],
    }
    model.to(state.device if device != "cpu" else "cpu")
    with state.main_process_first():
        answers, generation_stats = greedy_answers(
            model,
            tokenizer,
            prompts,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.generation_batch_size,
            cache_path=out_dir / "rejections.jsonl",
            fingerprint=fingerprint,
            show_progress=config.show_progress,
        )
    model.to("cpu")
    pairs, dropped = preference_pairs(rows, tokenizer, answers, config.template)
    if not pairs:
        raise ValueError(f"every DPO pair was dropped ({dropped}); nothing to train on")
    generation_stats["seconds_total"] = round(time.perf_counter() - generation_start, 3)
    record = {"pairs": {"used": len(pairs), "dropped": dropped, "generation": generation_stats}}
    return build_dpo_trainer(model, tokenizer, pairs, config, common), record


def _merge_keeping_zeros(
    peft_model: Any,
    tokenizer: Any,
    mask: dict[str, torch.Tensor] | None,
    mask_reason: str,
    before: dict[str, float],
    config: TrainConfig,
    data_dir: str | Path | None,
) -> tuple[Any, dict[str, Any]]:
    """Merge the adapter into the base weights; re-apply `mask` when there is one; return (model, sparsity.json).

    With a mask, the merged model's perplexity is measured before and after re-masking on the configured
    held-out text (or the skip reason is recorded), and every pruned position is checked to be zero again.
    """
    from recovery import sparsity

    merged = peft_model.merge_and_unload().to("cpu")
    after_merge = layer_sparsity(merged)
    after_remask = changed = ppl = None
    if mask is not None:
        text, text_name = _remask_text(config, data_dir)
        if text is None:
            changed = sparsity.apply_mask(merged, mask)
            ppl = {"skipped": text_name}
        else:
            ppl, changed = sparsity.remask_ppl_effect(
                merged,
                tokenizer,
                mask,
                text,
                text_name=text_name,
                seqlen=config.remask_eval_seqlen,
                windows=config.remask_eval_windows,
            )
        # The guarantee is that every pruned weight is zero again; a kept weight that W + BA happens to cancel
        # to exactly zero (possible in bf16) is not a broken mask.
        sparsity.check_zeros(merged, mask, exact=False)
        after_remask = layer_sparsity(merged)
    report = sparsity.sparsity_report(
        before,
        after_merge,
        after_remask,
        sizes=sparsity.layer_sizes(merged),
        policy_reason=mask_reason,
        changed=changed,
        ppl=ppl,
    )
    return merged, report


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def recover(
    pruned: str,
    subset: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    original: str | None = None,
    data_dir: str | Path | None = None,
) -> RecoveryResult:
    """Fine-tune the pruned model on the subset with `config.objective`; write adapter, merged model and records.

    `original` is required for `distill` (the teacher) and only recorded otherwise (DPO's rejected answers
    come from the pruned model). Steps: load the pruned model, take its sparsity mask, tokenise the subset,
    (DPO) generate or reuse the cached rejected answers, train the LoRA adapter with TRL, save the adapter,
    merge, restore the pruned zeros when the model is unstructured/N:M sparse, measure the perplexity
    effect of that, save the merged model. Refuses an unknown objective, `distill` without `original`, a
    CUDA device this torch cannot use (before loading), a teacher with a different tokenizer, and a subset
    without usable rows. Returns what was written.
    """
    from recovery import sparsity

    config = config or TrainConfig()
    if config.objective == "distill" and not original:
        raise ValueError("objective 'distill' needs the original model as teacher (--original)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _distributed_state()
    device = resolve_device(config.device)
    dtype = choose_dtype(config.dtype, device)
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    # Load on the CPU in the training dtype; the Trainer moves the model to its (per-process) device.
    model, tokenizer = load_model(pruned, dtype=_dtype_name(dtype), device="cpu")
    model_info = describe_model(pruned, model).to_dict()
    mask_needed, mask_reason = sparsity.mask_policy(Path(pruned) if Path(pruned).exists() else None, model)
    mask = sparsity.capture_mask(model) if mask_needed else None
    before = layer_sparsity(model)

    rows = load_training_rows(subset, tokenizer, config)
    seconds["load"] = time.perf_counter() - started
    record: dict[str, Any] = {"objective": config.objective}

    trainer, objective_record = _build_trainer(model, tokenizer, rows, config, state, out_dir, original)
    record.update(objective_record)
    trainer.add_callback(make_log_callback(out_dir / "train_log.jsonl"))

    train_start = time.perf_counter()
    output = trainer.train()
    seconds["train"] = time.perf_counter() - train_start
    # save_strategy="no": the Trainer's output folder only exists because TRL insists on one.
    _remove_if_empty(out_dir / "trainer")
    paths: dict[str, Path] = {"train_log": out_dir / "train_log.jsonl"}
    if config.objective in ("dpo", "sft+dpo"):
        paths["rejections"] = out_dir / "rejections.jsonl"
    if not state.is_main_process:
        return RecoveryResult(out_dir, record, paths)

    peft_model = trainer.model
    peft_model.eval()
    trainable = sum(parameter.numel() for parameter in peft_model.parameters() if parameter.requires_grad)
    # PeftModel.save_pretrained writes only the adapter (adapter_config.json + adapter_model.safetensors).
    paths["adapter"] = save_checkpoint(peft_model, tokenizer, out_dir / "adapter")
    merge_start = time.perf_counter()
    merged, sparsity_record = _merge_keeping_zeros(peft_model, tokenizer, mask, mask_reason, before, config, data_dir)
    paths["sparsity"] = _write_json(out_dir / "sparsity.json", sparsity_record)
    seconds["merge"] = time.perf_counter() - merge_start
    seconds["total"] = time.perf_counter() - started

    log_history = [entry for entry in trainer.state.log_history if "loss" in entry]
    record.update(
        {
            "pruned": model_info,
            "original": record.pop("teacher", None) or ({"name": original} if original else None),
            "subset": str(subset),
            "rows": {
                "read": rows.stats.rows_read,
                "valid": rows.stats.rows_valid,
                "used": len(rows.encoded),
                "skipped": rows.skipped,
                "truncated": rows.truncated,
            },
            "tokens_per_epoch": rows.token_counts(),
            "training": {
                "steps": trainer.state.global_step,
                "epochs": trainer.state.epoch,
                "train_loss": output.training_loss,
                "first_loss": log_history[0]["loss"] if log_history else None,
                "last_loss": log_history[-1]["loss"] if log_history else None,
                "trainable_parameters": trainable,
                "world_size": state.num_processes,
            },
            "sparsity": {
                "masked": sparsity_record["remasked"],
                "reason": mask_reason,
                "total_before": sparsity_record["total"]["before"],
                "total_after_merge": sparsity_record["total"]["after_merge"],
                "total_after_remask": sparsity_record["total"]["after_remask"],
            },
            "hyperparameters": config.to_dict(),
            "device": device,
            "dtype": _dtype_name(dtype),
            "seconds": {key: round(value, 3) for key, value in seconds.items()},
            "versions": _versions(),
        }
    )
    merged_files = {
        "recovery.json": json.dumps(record, indent=2, default=str),
        "README.md": model_card(record, pruned, subset),
    }
    paths["merged"] = save_checkpoint(merged, tokenizer, out_dir / "merged", merged_files)
    record["outputs"] = {name: str(path) for name, path in paths.items()}
    paths["record"] = _write_json(out_dir / "recovery.json", record)
    return RecoveryResult(out_dir, record, paths)


def format_summary(result: RecoveryResult) -> str:
    """A few lines on a finished recovery run: objective, rows, steps, loss, sparsity, time, outputs."""
    record = result.record
    training = record["training"]
    loss = training["first_loss"], training["last_loss"]
    loss_text = "n/a" if loss[0] is None else f"{loss[0]:.4f} -> {loss[1]:.4f}"
    sparsity = record["sparsity"]
    sparsity_text = (
        f"sparsity {sparsity['total_before']:.4f} before, {sparsity['total_after_merge']:.4f} after merge, "
        f"{sparsity['total_after_remask']:.4f} after re-masking"
        if sparsity["masked"]
        else f"dense ({sparsity['reason']}), {sparsity['total_after_merge']:.4f} zeros after merge"
    )
    lines = [
        f"[paser] recover {record['objective']}: {record['rows']['used']} rows "
        f"({record['tokens_per_epoch']['response']} response tokens/epoch), {training['steps']} steps, "
        f"loss {loss_text}, {record['seconds']['total']:.1f} s on {record['device']} ({record['dtype']})",
        f"[paser] {sparsity_text}",
    ]
    if "pairs" in record:
        pairs = record["pairs"]
        lines.append(f"[paser] DPO pairs: {pairs['used']} used, dropped {pairs['dropped'] or 'none'}")
    lines.append(f"[paser] adapter: {result.paths['adapter']}  merged: {result.paths['merged']}")
    lines.append(f"[paser] record: {result.paths['record']}  loss log: {result.paths['train_log']}")
    return "\n".join(lines)


def response_nll(model: Any, encoded: Sequence[EncodedSample], *, batch_size: int = 8) -> dict[str, float]:
    """Mean negative log-likelihood (nats per response token) of `model` on the rows' response tokens.

    The held-out measure of recovery: same tokens and mask as training. Rows are batched with right padding;
    returns `{"nll", "ppl", "tokens", "rows", "items"}`, `items` being each row's `nll_sum` (nats over its
    response tokens) and `tokens`, in the order of `encoded` (`recovery.items`). Refuses an empty row list.
    """
    if not encoded:
        raise ValueError("response_nll needs at least one row")
    device = next(model.parameters()).device
    row_nll = [0.0] * len(encoded)
    row_tokens = [0] * len(encoded)
    was_training = model.training
    model.eval()
    order = sorted(range(len(encoded)), key=lambda index: encoded[index].length)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [encoded[index] for index in order[start : start + batch_size]]
            width = max(row.length for row in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            attention = torch.zeros(len(batch), width, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for position, row in enumerate(batch):
                length = row.length
                ids[position, :length] = torch.tensor(row.input_ids)
                attention[position, :length] = 1
                labels[position, row.prompt_length : length] = ids[position, row.prompt_length : length]
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
            shifted = labels[:, 1:].to(device)
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), shifted.reshape(-1), ignore_index=-100, reduction="none"
            ).view(len(batch), -1)
            for index, loss, counted in zip(
                order[start : start + batch_size], losses.sum(dim=1), (shifted != -100).sum(dim=1), strict=True
            ):
                row_nll[index] = float(loss)
                row_tokens[index] = int(counted)
    model.train(was_training)
    tokens = sum(row_tokens)
    nll = sum(row_nll) / tokens
    return {
        "nll": nll,
        "ppl": math.exp(nll),
        "tokens": tokens,
        "rows": len(encoded),
        "items": {"nll_sum": row_nll, "tokens": row_tokens},
    }
