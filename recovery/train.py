"""Recovery training: LoRA (or masked full) fine-tuning of a pruned model on the selected subset, with TRL and peft.

This module is the loop every objective shares: read and tokenise the subset (`load_training_rows`), build the
objective's trainer (`paser.recovery.objectives`: `sft`, `dpo`, `sft+dpo`, `distill`, registered by name) with the
LoRA adapter and the common TrainingArguments, train, save the adapter, merge it, restore the pruned zeros and
write the records. With `adapter: full` every weight trains instead, the pruned ones held at zero through every
step (`paser.recovery.masked_training`), in fp32 master weights (autocast to bf16/fp16 where that is the training
dtype), and the trained model is cast back to the training dtype and saved as `merged/`, with no `adapter/`.

`recover()` writes `OUT/adapter/` (peft; LoRA only), `OUT/merged/` (adapter merged, pruning zeros restored, plain
transformers checkpoint, with its model card), `OUT/train_log.jsonl` (one line per logged step),
`OUT/sparsity.json` and `OUT/recovery.json` (what ran, on what, how long, with which versions, and its `compute`:
tokens forwarded and estimated FLOPs, `paser.recovery.flops`), plus what the objective writes (DPO:
`OUT/rejections.jsonl`) and, with `targets: original`, the original model's answers it trained on
(`OUT/targets.jsonl`, `paser.recovery.targets`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from paser.common.console import bars_shown, say
from paser.common.io import write_json
from paser.recovery.card import model_card
from paser.recovery.config import TrainConfig
from paser.recovery.cpu_memory import trim_after_each_block
from paser.recovery.evaluate import (
    load_ppl_text,
)
from paser.recovery.flops import recovery_compute
from paser.recovery.models import (
    check_checkpoint,
    choose_dtype,
    describe_model,
    load_model,
    resolve_device,
    save_checkpoint,
)
from paser.recovery.objectives import Objective, PreparedTrainer, TrainingJob, get_objective
from paser.recovery.prune import layer_sparsity
from paser.recovery.tracking import logging_dir, tracking_environment, trainer_args
from paser.recovery.versions import package_versions
from paser.selection.corpus import CorpusConfig, CorpusStats, Sample, load_corpus
from paser.selection.formatting import EncodedSample, encode_corpus

# The packages whose versions recovery.json records.
TRAINING_PACKAGES = ("python", "paser", "torch", "transformers", "peft", "trl", "accelerate", "datasets")


# ---------------------------------------------------------------------------------------------- subset rows


@dataclasses.dataclass
class TrainingRows:
    """The subset as training rows: samples and their token ids (same order), and what was skipped; with token
    weighting, each row's per-token JSD (`response_jsd`, aligned to its response tokens)."""

    samples: list[Sample]
    encoded: list[EncodedSample]
    stats: CorpusStats
    skipped: dict[str, int]
    truncated: int
    response_jsd: list[Any] | None = None

    def token_counts(self) -> dict[str, int]:
        """Prompt, response (loss) and total tokens over the rows, per epoch."""
        prompt = sum(row.prompt_length for row in self.encoded)
        response = sum(row.response_length for row in self.encoded)
        return {"prompt": prompt, "response": response, "total": prompt + response}


def _has_id_field(path: Path) -> bool:
    """True when the first row of a JSON Lines subset carries an `id` (as `selection.jsonl` rows do)."""
    if path.suffix != ".jsonl":
        return False
    with path.open("rb") as stream:
        for line in stream:
            if line.strip():
                try:
                    return "id" in json.loads(line.decode("utf-8-sig"))
                except (UnicodeDecodeError, json.JSONDecodeError):
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


def _attach_token_jsd(rows: TrainingRows, config: TrainConfig) -> dict[str, Any] | None:
    """With token weighting, read the kept per-token JSD and align it to the rows (`response_jsd`); returns the
    record's `token_weighting` block (None without weighting). Refuses what `align_token_jsd` refuses."""
    weighting = config.token_weighting
    if weighting is None:
        return None
    from paser.recovery.token_weights import align_token_jsd
    from paser.selection.token_jsd import read_token_jsd

    rows.response_jsd = align_token_jsd(rows.encoded, read_token_jsd(weighting.token_jsd), str(weighting.token_jsd))
    tokens = sum(len(values) for values in rows.response_jsd)
    return {
        "mode": weighting.token_weighting,
        "fraction": weighting.token_weight_fraction if weighting.token_weighting == "top_fraction" else None,
        "source": str(weighting.token_jsd),
        "rows": len(rows.response_jsd),
        "mean_jsd": float(sum(values.sum(dtype="float64") for values in rows.response_jsd) / max(tokens, 1)),
    }


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


def _trl_common_args(
    config: TrainConfig, out_dir: Path, device: str, dtype: torch.dtype, run_name: str | None = None
) -> dict[str, Any]:
    """TrainingArguments shared by every objective's TRL config; bf16/fp16 only when the weights are in that dtype.

    TRL's configs default to bf16=True, which fails on a CPU without bf16 support, so both flags are always
    set explicitly, and `use_cpu` keeps the Trainer off an accelerator the user did not ask for. The trackers
    of `config.report_to` get `run_name`, by default the output folder's name.
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
        **trainer_args(config.report_to, run_name or out_dir.resolve().name),
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "use_cpu": device == "cpu",
        "activation_checkpointing": config.gradient_checkpointing,
        "disable_tqdm": not bars_shown(config.show_progress),
        "dataloader_num_workers": 0,
    }


# ---------------------------------------------------------------------------------------------- orchestration


@dataclasses.dataclass
class RecoveryResult:
    """What `recover` wrote: the run record and the paths of its artifacts."""

    out_dir: Path
    record: dict[str, Any]
    paths: dict[str, Path]


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _remask_text(config: TrainConfig, data_dir: str | Path | None) -> tuple[str | None, str]:
    """The held-out text for the re-masking perplexity check and its name, or (None, why not)."""
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


@dataclasses.dataclass
class PrunedModel:
    """The pruned model as loaded for training, with what recovery keeps of it: its description, its sparsity
    mask (None when no mask is to be restored, and why in `mask_reason`) and its per-layer sparsity."""

    model: Any
    tokenizer: Any
    info: dict[str, Any]
    mask: dict[str, torch.Tensor] | None
    mask_reason: str
    before: dict[str, float]


def load_pruned(pruned: str, dtype: torch.dtype) -> PrunedModel:
    """Load the pruned model on the CPU in the training dtype (the Trainer moves it to its per-process device)
    and take its mask when its sparsity is to be kept (`paser.recovery.sparsity.mask_policy`)."""
    from paser.recovery import sparsity

    model, tokenizer = load_model(pruned, dtype=_dtype_name(dtype), device="cpu")
    mask_needed, mask_reason = sparsity.mask_policy(Path(pruned) if Path(pruned).exists() else None, model)
    mask = sparsity.capture_mask(model) if mask_needed else None
    info = describe_model(pruned, model).to_dict()
    return PrunedModel(model, tokenizer, info, mask, mask_reason, layer_sparsity(model))


def _trained_weights(model: Any, config: TrainConfig, dtype: torch.dtype) -> Any:
    """The trained model as a plain transformers model on the CPU: LoRA's adapter merged into the base weights, or
    full fine-tuning's fp32 master weights cast to the training dtype."""
    if config.adapter == "full":
        return model.to(device="cpu", dtype=dtype)
    return model.merge_and_unload().to("cpu")


def _keep_zeros(
    merged: Any, pruned: PrunedModel, config: TrainConfig, data_dir: str | Path | None
) -> tuple[Any, dict[str, Any]]:
    """Re-apply the pruned model's mask to the trained weights (`_trained_weights`) when it has one; return (model,
    sparsity.json), its `after_merge` stage the trained weights as they came out of training.

    With a mask, the merged model's perplexity is measured before and after re-masking on the configured
    held-out text (or the skip reason is recorded), and every pruned position is checked to be zero again. Masked
    full fine-tuning kept the zeros through every step, so its re-masking changes no weight (`weights_rezeroed` 0).
    """
    from paser.recovery import sparsity

    tokenizer, mask = pruned.tokenizer, pruned.mask
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
        pruned.before,
        after_merge,
        after_remask,
        sizes=sparsity.layer_sizes(merged),
        policy_reason=pruned.mask_reason,
        changed=changed,
        ppl=ppl,
    )
    return merged, report


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _warn(message: str) -> None:
    say(f"warning: {message}", component="recover", stderr=True)


def keep_a_step_after_warmup(trainer: Any) -> None:
    """Shorten the trainer's warm-up to at most `steps - 1` optimiser steps, saying so on stderr when it does.

    transformers' warm-up starts at a learning rate of 0, so a warm-up as long as training leaves every step
    below the peak rate, and with a single step (any warm-up rounds up to one step) the adapter does not move at
    all. The step count is known only when the Trainer builds its scheduler, so the check runs there.
    """
    create_scheduler = trainer.create_scheduler

    def create_with_a_step_after_warmup(num_training_steps: int, optimizer: Any = None) -> Any:
        warmup = trainer.args.get_warmup_steps(num_training_steps)
        if warmup >= num_training_steps:
            trainer.args.warmup_steps = num_training_steps - 1
            if trainer.is_world_process_zero():
                _warn(
                    f"warm-up of {warmup} step(s) shortened to {num_training_steps - 1}: training has "
                    f"{num_training_steps} optimiser step(s), and a step inside the warm-up trains below the peak rate"
                )
        return create_scheduler(num_training_steps=num_training_steps, optimizer=optimizer)

    trainer.create_scheduler = create_with_a_step_after_warmup


def _prepare_and_train(
    objective: Objective, job: TrainingJob, mask: dict[str, torch.Tensor] | None
) -> tuple[PreparedTrainer, Any, float]:
    """Build the objective's trainer and train it, with the loss log written to `OUT/train_log.jsonl`, at least one
    step after the warm-up, the trackers' environment set, with `adapter: full` and a `mask` the pruned weights held
    at zero through every step (`paser.recovery.masked_training`) and, on the CPU with `trim_cpu_memory`, freed
    memory returned after each decoder layer of the trained and frozen models (`paser.recovery.cpu_memory`);
    returns (prepared trainer, the Trainer's `TrainOutput`, seconds spent training)."""
    with tracking_environment(job.config.report_to, logging_dir(job.out_dir)):  # read as the trainer is built
        prepared = objective.prepare(job)
        trainer = prepared.trainer
        trainer.add_callback(make_log_callback(job.out_dir / "train_log.jsonl"))
        if job.config.adapter == "full" and mask is not None:
            from paser.recovery.masked_training import KeepPrunedZeros

            trainer.add_callback(KeepPrunedZeros(mask))
        keep_a_step_after_warmup(trainer)
        trimmed = job.device == "cpu" and job.config.trim_cpu_memory
        frozen = [getattr(trainer, name, None) for name in ("teacher_model", "ref_model")]
        start = time.perf_counter()
        with trim_after_each_block([trainer.model, *frozen] if trimmed else []):
            output = trainer.train()
    seconds = time.perf_counter() - start
    # save_strategy="no": the Trainer's output folder only exists because TRL insists on one.
    _remove_if_empty(job.out_dir / "trainer")
    return prepared, output, seconds


def _rows_record(rows: TrainingRows) -> dict[str, Any]:
    return {
        "read": rows.stats.rows_read,
        "valid": rows.stats.rows_valid,
        "used": len(rows.encoded),
        "skipped": rows.skipped,
        "truncated": rows.truncated,
    }


def _training_record(trainer: Any, output: Any, world_size: int) -> dict[str, Any]:
    """Steps, epochs, losses (mean, first and last logged) and trainable parameters of a finished training."""
    log_history = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": output.training_loss,
        "first_loss": log_history[0]["loss"] if log_history else None,
        "last_loss": log_history[-1]["loss"] if log_history else None,
        "trainable_parameters": sum(
            parameter.numel() for parameter in trainer.model.parameters() if parameter.requires_grad
        ),
        "world_size": world_size,
    }


def _sparsity_summary(sparsity_record: dict[str, Any], mask_reason: str) -> dict[str, Any]:
    return {
        "masked": sparsity_record["remasked"],
        "reason": mask_reason,
        "total_before": sparsity_record["total"]["before"],
        "total_after_merge": sparsity_record["total"]["after_merge"],
        "total_after_remask": sparsity_record["total"]["after_remask"],
    }


def recover(
    pruned: str,
    subset: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    original: str | None = None,
    data_dir: str | Path | None = None,
    run_name: str | None = None,
) -> RecoveryResult:
    """Fine-tune the pruned model on the subset with `config.objective`; write adapter, merged model and records.

    `original` is required by objectives that need it (`distill`: the teacher) and by `targets: original` (it
    writes the responses), and only recorded otherwise (DPO's rejected answers come from the pruned model). Steps:
    load the pruned model, take its sparsity mask, tokenise the subset (with token weighting, align the kept
    per-token JSD to it; with `targets: original`, have the original answer its prompts, cached, and train on
    those answers), prepare the objective's trainer (DPO: generate or reuse the cached rejected answers), train the
    LoRA adapter with TRL (with `adapter: full`: every weight, the pruned ones held at zero, and no adapter to save),
    save the adapter, merge, restore the pruned zeros when the model is unstructured/N:M sparse, measure the
    perplexity effect of that, save the merged model. Refuses an unknown objective, `distill`
    or `targets: original` without `original`, a CUDA device this torch cannot use (before loading), a
    checkpoint that cannot be read (`paser.recovery.models.ModelLoadError` naming the file), a teacher with a
    different tokenizer, kept JSD that does not match the rows, and a subset without usable rows; all but the
    original's tokenizer and rows left without a target before the output folder is made. The trackers of
    `config.report_to` log under `run_name` (default: the output folder's name) into `OUT/logs`. Returns what was
    written.
    """
    config = config or TrainConfig()
    objective = get_objective(config.objective)
    if objective.needs_original and not original:
        raise ValueError(f"objective {config.objective!r} needs the original model as teacher (--original)")
    if config.targets == "original" and not original:
        raise ValueError("targets=original needs the original model, which writes the targets (--original)")
    out_dir = Path(out_dir)
    state = _distributed_state()
    device = resolve_device(config.device)
    dtype = choose_dtype(config.dtype, device)
    if objective.needs_original or config.targets == "original":
        check_checkpoint(original)
    started = time.perf_counter()
    # Full fine-tuning keeps fp32 master weights (AdamW's updates are below bf16's resolution); the Trainer
    # autocasts to the training dtype.
    loaded = load_pruned(pruned, torch.float32 if config.adapter == "full" else dtype)
    rows = load_training_rows(subset, loaded.tokenizer, config)
    weighting = _attach_token_jsd(rows, config)
    # Made once the inputs are known to be good, so that a refused recovery leaves no folder behind.
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = {"load": time.perf_counter() - started}
    targets: dict[str, Any] = {"source": "corpus"}
    target_tokens: dict[str, int] = {}
    if config.targets == "original":
        from paser.recovery.targets import original_targets

        target_start = time.perf_counter()
        rows, targets, target_tokens = original_targets(
            rows, loaded.tokenizer, config, original, state, device, _dtype_name(dtype), out_dir
        )
        seconds["targets"] = time.perf_counter() - target_start

    common = _trl_common_args(config, out_dir, device, dtype, run_name)
    job = TrainingJob(
        loaded.model, loaded.tokenizer, rows, config, common, out_dir, original, state, device, _dtype_name(dtype)
    )
    prepared, output, seconds["train"] = _prepare_and_train(objective, job, loaded.mask)
    record: dict[str, Any] = {"objective": config.objective, "targets": targets, **prepared.record}
    if weighting is not None:
        record["token_weighting"] = weighting
    paths: dict[str, Path] = {"train_log": out_dir / "train_log.jsonl", **prepared.paths}
    if config.targets == "original":
        paths["targets"] = Path(targets["file"])
    if not state.is_main_process:
        return RecoveryResult(out_dir, record, paths)

    trained = prepared.trainer.model
    trained.eval()
    training = _training_record(prepared.trainer, output, state.num_processes)  # before merging removes the adapter
    compute = recovery_compute(
        {**prepared.tokens(), **target_tokens},
        base_parameters=loaded.info["parameters"],
        lora_parameters=None if config.adapter == "full" else training["trainable_parameters"],
        teacher_parameters=(record.get("teacher") or {}).get("parameters"),
        original_parameters=(targets.get("model") or {}).get("parameters"),
    )
    if config.adapter == "lora":
        # PeftModel.save_pretrained writes only the adapter (adapter_config.json + adapter_model.safetensors).
        paths["adapter"] = save_checkpoint(trained, loaded.tokenizer, out_dir / "adapter")
    merge_start = time.perf_counter()
    merged, sparsity_record = _keep_zeros(_trained_weights(trained, config, dtype), loaded, config, data_dir)
    paths["sparsity"] = write_json(out_dir / "sparsity.json", sparsity_record)
    seconds["merge"] = time.perf_counter() - merge_start
    seconds["total"] = time.perf_counter() - started

    record.update(
        {
            "pruned": loaded.info,
            "original": record.pop("teacher", None) or ({"name": original} if original else None),
            "subset": str(subset),
            "rows": _rows_record(rows),
            "tokens_per_epoch": rows.token_counts(),
            "training": training,
            "compute": compute,
            "sparsity": _sparsity_summary(sparsity_record, loaded.mask_reason),
            "hyperparameters": config.to_dict(),
            "device": device,
            "dtype": _dtype_name(dtype),
            "seconds": {key: round(value, 3) for key, value in seconds.items()},
            "versions": package_versions(TRAINING_PACKAGES),
        }
    )
    card = model_card(record, pruned, subset)
    merged_files = {"recovery.json": json.dumps(record, indent=2, default=str), "README.md": card}
    paths["merged"] = save_checkpoint(merged, loaded.tokenizer, out_dir / "merged", merged_files)
    record["outputs"] = {name: str(path) for name, path in paths.items()}
    paths["record"] = write_json(out_dir / "recovery.json", record)
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
        f"[paser] compute: {record['compute']['tokens']['trained']:,} tokens trained, "
        f"{record['compute']['flops']['total']:.3g} FLOPs (estimated)",
    ]
    weighting = record.get("token_weighting")
    if weighting:
        lines.append(
            f"[paser] token weighting: {weighting['mode']} by the per-token JSD of {weighting['rows']} rows "
            f"(mean {weighting['mean_jsd']:.4f} nats) from {weighting['source']}"
        )
    targets = record.get("targets") or {}
    if targets.get("source") == "original":
        generation = targets["generation"]
        lines.append(
            f"[paser] targets: the original's greedy answers ({generation['generated']} generated, "
            f"{generation['from_cache']} cached, {targets['empty']} empty and skipped)"
        )
    if "pairs" in record:
        pairs = record["pairs"]
        lines.append(f"[paser] DPO pairs: {pairs['used']} used, dropped {pairs['dropped'] or 'none'}")
    adapter = result.paths.get("adapter")
    adapter_text = f"adapter: {adapter}" if adapter else "masked full fine-tuning, no adapter"
    lines.append(f"[paser] {adapter_text}  merged: {result.paths['merged']}")
    lines.append(f"[paser] record: {result.paths['record']}  loss log: {result.paths['train_log']}")
    return "\n".join(lines)
