"""The recovery side's settings, apart from the code that runs them: how to prune (`PruneSpec`: `paser prune`, a
run's `models.prune`; done by `paser.recovery.prune`) and how to fine-tune (`TrainConfig`: `paser recover`, a
run's `recovery` section, the model card; done by `paser.recovery.train`). This module imports no torch,
transformers or TRL, so the command line and a run config read these fields without them.

`TrainConfig` holds what every objective shares (adapter, LoRA, schedule, batch, lengths, self-distillation
targets, re-masking, devices, trackers); what only some objectives read lives in the objective's own config
beside it (`paser.recovery.objectives.*_config`: DPO's beta, the generation lengths, distillation's temperature,
the NLL term's weight, token weighting), held as `TrainConfig.objective_config`. Users still write one flat
section (`recovery: {objective: distill, learning_rate: 1e-3, sft_weight: 0.5}`, `paser recover --sft-weight`):
`TrainConfig.from_flat` routes each key to the shared config or the chosen objective's, and refuses a key of
another objective, naming the objective(s) it belongs to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paser.recovery.objectives import ObjectiveConfig, get_objective, objective_config_class, objective_names
from paser.recovery.objectives.sft_config import TokenWeightingConfig
from paser.recovery.pruners import PruneTarget, default_target
from paser.recovery.tracking import tracker_names

# Kept in step with paser.recovery.targets (which imports torch).
TARGETS = ("corpus", "original")
# What trains (`TrainConfig.adapter`): a LoRA adapter on the frozen base, or every weight (masked full fine-tuning).
ADAPTERS = ("lora", "full")
# Full fine-tuning's default peak learning rate: the usual full-SFT order of magnitude, 10x below LoRA's; untuned.
FULL_FINE_TUNING_LEARNING_RATE = 2e-5


@dataclasses.dataclass
class TrainConfig:
    """How to fine-tune: the objective and its own settings (`objective_config`), and what every objective shares:
    adapter and LoRA shape, optimisation, formatting, self-distillation targets, re-masking check, devices.

    `objective_config` is an instance of the objective's config class (`objective_config_class`); None gives that
    class's defaults. A field (here or in an objective's config) whose metadata has `"card": True` is listed in the
    recovered model's card (`paser.recovery.card`). Build one from flat settings with `from_flat`.
    """

    objective: str = dataclasses.field(
        default="sft",
        metadata={
            "help": "A registered objective (recovery.objectives; `paser recover --help` lists them).",
            "card": True,
        },
    )
    objective_config: ObjectiveConfig | None = dataclasses.field(
        default=None,
        metadata={"help": "The objective's own settings (its config class); None: that class's defaults."},
    )
    adapter: str = dataclasses.field(
        default="lora",
        metadata={
            "help": "What trains: lora (an adapter on the frozen base, merged after training) or full (masked full "
            "fine-tuning: every weight, the pruned ones held at exactly zero through every step; sft, distill, "
            "on_policy; fp32 weights, gradients and AdamW moments, about 16 bytes a parameter; writes merged/ only).",
            "card": True,
        },
    )
    # LoRA: the paper's and peft's usual small adapter on every linear layer of the decoder.
    lora_r: int = dataclasses.field(default=8, metadata={"help": "LoRA rank.", "card": True})
    lora_alpha: int = dataclasses.field(
        default=16, metadata={"help": "LoRA scaling numerator (alpha / r).", "card": True}
    )
    lora_dropout: float = dataclasses.field(default=0.05, metadata={"help": "Dropout on the LoRA input.", "card": True})
    target_modules: str | list[str] = dataclasses.field(
        default="all-linear",
        metadata={"help": "peft target modules: `all-linear` (every decoder linear, not lm_head) or a list."},
    )
    learning_rate: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Peak learning rate; default 3e-3 for sft and 1e-3 for distill (chosen on a dev split), 1e-3 "
            "for on_policy, 5e-5 for dpo/sft+dpo, 2e-5 with adapter=full (untuned).",
            "card": True,
        },
    )
    epochs: float = dataclasses.field(default=1.0, metadata={"help": "Passes over the subset.", "card": True})
    max_steps: int = dataclasses.field(
        default=-1, metadata={"help": "Stop after this many optimiser steps (-1: run the epochs).", "card": True}
    )
    batch_size: int = dataclasses.field(default=8, metadata={"help": "Rows per device per step.", "card": True})
    grad_accum: int = dataclasses.field(default=1, metadata={"help": "Gradient accumulation steps.", "card": True})
    warmup: float = dataclasses.field(
        default=0.03, metadata={"help": "Warm-up: a fraction of the steps (<1) or a step count (>=1)."}
    )
    scheduler: str = dataclasses.field(default="cosine", metadata={"help": "transformers lr scheduler name."})
    weight_decay: float = dataclasses.field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_length: int = dataclasses.field(
        default=1024, metadata={"help": "Tokens per row (prompt + response); longer responses are cut.", "card": True}
    )
    overflow: str = dataclasses.field(
        default="truncate", metadata={"help": "Rows over max_length: truncate the response tail, or skip them."}
    )
    template: str = dataclasses.field(
        default="auto",
        metadata={"help": "auto, chat or alpaca: must match the template the subset was scored with.", "card": True},
    )
    group_by_length: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "sft/distill/on_policy: batch rows of similar length (less padding); dpo always samples randomly."
        },
    )
    gradient_checkpointing: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "Keep only each decoder layer's input and recompute its activations in the backward pass: "
            "activation memory ~30x smaller (3.5 MB a token for SmolLM2-135M without it), one more forward's time."
        },
    )
    trim_cpu_memory: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "CPU: return freed memory to the OS after each decoder layer (glibc malloc_trim), so the "
            "resident set stays near what training uses instead of growing with heap fragmentation."
        },
    )
    position_chunk: int = dataclasses.field(
        default=1024,
        metadata={
            "help": "sft/distill/on_policy: response positions per output-head chunk of the loss; the largest tensors "
            "are a few × chunk × vocab float32 values, whatever the batch (the full logits are never built)."
        },
    )
    seed: int = dataclasses.field(
        default=0, metadata={"help": "Seed for LoRA init, shuffling and dropout.", "card": True}
    )
    generation_batch_size: int = dataclasses.field(
        default=16, metadata={"help": "dpo rejections and targets=original: prompts per generate call."}
    )
    # Self-distillation targets (recovery.targets)
    targets: str = dataclasses.field(
        default="corpus",
        metadata={
            "help": "What the responses trained on are: corpus (the rows' own) or original (the original model's "
            "greedy answers to the rows' prompts, generated once and cached in OUT/targets.jsonl; needs --original).",
            "card": True,
        },
    )
    targets_cache: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "targets=original: the answers' cache file (default OUT/targets.jsonl); one file shared by "
            "runs over the same original model and template (budgets, seeds, objectives) generates each prompt's "
            "answer once. One run at a time per file."
        },
    )
    target_max_new_tokens: int = dataclasses.field(
        default=256,
        metadata={"help": "targets=original: longest answer the original model writes per prompt."},
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
    # Tracking
    report_to: str | list[str] = dataclasses.field(
        default="none",
        metadata={
            "help": "Experiment trackers for the training loss (and, in `paser run`, the eval metrics): tensorboard, "
            "wandb, trackio or none; a list for several. They log to OUT/logs (recovery.tracking)."
        },
    )

    def __post_init__(self) -> None:
        get_objective(self.objective)
        config_class = objective_config_class(self.objective)
        if self.objective_config is None:
            self.objective_config = config_class()
        elif type(self.objective_config) is not config_class:
            raise ValueError(
                f"objective {self.objective!r} takes a {config_class.__name__}, got a "
                f"{type(self.objective_config).__name__}"
            )
        tracker_names(self.report_to)
        positive = {
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_length": self.max_length,
            "generation_batch_size": self.generation_batch_size,
            "logging_steps": self.logging_steps,
            "epochs": self.epochs,
            "position_chunk": self.position_chunk,
            "target_max_new_tokens": self.target_max_new_tokens,
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
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {', '.join(ADAPTERS)}, got {self.adapter!r}")
        if self.adapter == "full" and not get_objective(self.objective).full_fine_tuning:
            raise ValueError(
                f"objective {self.objective!r} trains a LoRA adapter only (adapter=full: sft, distill, on_policy)"
            )
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {', '.join(TARGETS)}, got {self.targets!r}")
        if self.token_weighting is not None and self.targets != "corpus":
            raise ValueError("token_weighting needs targets=corpus: the kept JSD is per token of the corpus responses")

    @classmethod
    def from_flat(cls, settings: Mapping[str, Any]) -> TrainConfig:
        """The config from one flat mapping of settings (a run's `recovery` section, `paser recover`'s flags,
        `paser.recover(**settings)`), each key routed to the shared fields or the chosen objective's config
        (`split_settings`, which says what it refuses)."""
        shared, config_class, own = split_settings(settings)
        return cls(**shared, objective_config=config_class(**own))

    @classmethod
    def nest_flat_settings(cls, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, type]]:
        """A flat section as this dataclass's fields, for a loader that checks each field's type
        (`paser.pipelines.config.build_config`): (the shared settings plus `objective_config`: the objective's own
        settings, {"objective_config": the objective's config class}). Refuses what `split_settings` refuses."""
        shared, config_class, own = split_settings(settings)
        return {**shared, "objective_config": own}, {"objective_config": config_class}

    @property
    def token_weighting(self) -> TokenWeightingConfig | None:
        """The objective's token weighting settings when it weights tokens (its config derives from
        `TokenWeightingConfig` and `token_weighting` is not `none`), else None."""
        config = self.objective_config
        return config if isinstance(config, TokenWeightingConfig) and config.weights_tokens else None

    @property
    def lr(self) -> float:
        """The learning rate in effect: the configured one, else full fine-tuning's default (adapter=full), else the
        objective's default."""
        if self.learning_rate is not None:
            return self.learning_rate
        if self.adapter == "full":
            return FULL_FINE_TUNING_LEARNING_RATE
        return get_objective(self.objective).default_learning_rate

    @property
    def sft_term(self) -> float:
        """The weight of the response NLL term in effect: the objective config's `sft_weight` where it has one set,
        else the objective's default (1 for sft+dpo, 0 for the others)."""
        weight = getattr(self.objective_config, "sft_weight", None)
        return weight if weight is not None else get_objective(self.objective).default_sft_weight

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

    def peft_config(self) -> Any:
        """What an objective's TRL trainer takes as `peft_config`: the `LoraConfig` (`lora_config`), or None with
        adapter=full (the trainer then trains the model's own weights)."""
        return None if self.adapter == "full" else self.lora_config()

    def flat_settings(self) -> dict[str, Any]:
        """Every setting in one flat mapping, as a run's `recovery` section and `paser recover`'s flags write them:
        the shared fields, then the objective config's (`from_flat` reads it back)."""
        shared = {field.name: getattr(self, field.name) for field in _shared_fields()}
        return {**shared, **dataclasses.asdict(self.objective_config)}

    def to_dict(self) -> dict[str, Any]:
        """`flat_settings` plus the learning rate and SFT weight in effect."""
        return {**self.flat_settings(), "learning_rate_effective": self.lr, "sft_weight_effective": self.sft_term}


def _shared_fields() -> list[dataclasses.Field]:
    """TrainConfig's fields but `objective_config`: the settings every objective shares."""
    return [field for field in dataclasses.fields(TrainConfig) if field.name != "objective_config"]


def setting_owners() -> dict[str, list[str]]:
    """Each objective setting's name -> the objectives whose config has it (every registered objective, the
    built-ins read without their trainers)."""
    owners: dict[str, list[str]] = {}
    for name in objective_names():
        for field in dataclasses.fields(objective_config_class(name)):
            owners.setdefault(field.name, []).append(name)
    return owners


def split_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], type[ObjectiveConfig], dict[str, Any]]:
    """(the shared settings, the objective's config class, its settings) from one flat mapping.

    The objective is `settings["objective"]` (default `sft`). A key of another objective's config is refused
    (ValueError naming the key and the objective(s) it belongs to), unless its value is that setting's default,
    as a resolved config written by a paser before the objective configs holds every objective's settings: there
    it changes nothing and is dropped. Refuses an unknown objective and an unknown key (listing the known ones).
    """
    objective = settings.get("objective", TrainConfig.objective)
    config_class = objective_config_class(objective)
    shared_names = {field.name for field in _shared_fields()}
    own = {field.name: field for field in dataclasses.fields(config_class)}
    shared: dict[str, Any] = {}
    objective_settings: dict[str, Any] = {}
    owners = setting_owners()
    for key, value in settings.items():
        if key in shared_names:
            shared[key] = value
        elif key in own:
            objective_settings[key] = value
        elif key in owners:
            if any(_is_default(name, key, value) for name in owners[key]):
                continue
            raise ValueError(f"{key} is a setting of objective {' and '.join(owners[key])}, not of {objective!r}")
        else:
            known = ", ".join([*sorted(shared_names), *own])
            raise ValueError(f"unknown key {key!r} for objective {objective!r}; known: {known}")
    return shared, config_class, objective_settings


def _is_default(objective: str, name: str, value: Any) -> bool:
    field = next(field for field in dataclasses.fields(objective_config_class(objective)) if field.name == name)
    return field.default is not dataclasses.MISSING and value == field.default


@dataclasses.dataclass
class PruneSpec:
    """What `paser prune` does and a run's `models.prune` says: a method, its target (or the method's default),
    the calibration and the device; `apply` prunes a checkpoint into a folder."""

    method: str = dataclasses.field(
        default="wanda", metadata={"help": "A registered pruning method (`paser prune --help` lists them)."}
    )
    sparsity: float | None = dataclasses.field(default=None, metadata={"help": "Unstructured fraction in (0, 1)."})
    pattern: str | None = dataclasses.field(default=None, metadata={"help": "N:M pattern, e.g. 2:4."})
    drop: float | None = dataclasses.field(default=None, metadata={"help": "layer_drop: fraction of blocks."})
    ratio: float | None = dataclasses.field(
        default=None, metadata={"help": "width: fraction of MLP channels and attention heads removed per block."}
    )
    importance: str | None = dataclasses.field(
        default=None, metadata={"help": "width: activation (default), taylor or random."}
    )
    calibration: str | None = dataclasses.field(
        default=None, metadata={"help": "Calibration text: a corpus file, a .txt file, demo, wikitext2 or c4."}
    )
    calibration_samples: int = dataclasses.field(default=128, metadata={"help": "Calibration windows."})
    seqlen: int | None = dataclasses.field(default=None, metadata={"help": "Tokens per calibration window."})
    seed: int = dataclasses.field(default=0, metadata={"help": "Seed of the calibration draw."})
    device: str | None = dataclasses.field(default=None, metadata={"help": "cuda or cpu; default: cuda if present."})

    def target(self) -> Any:
        """The target given, or with none the method's declared default (`default_target`)."""
        unset = self.sparsity is None and self.pattern is None and self.drop is None and self.ratio is None
        if unset and default_target(self.method) is not None:
            return default_target(self.method)
        return PruneTarget.from_args(sparsity=self.sparsity, pattern=self.pattern, drop=self.drop, ratio=self.ratio)

    def apply(self, model: str, out: Path) -> dict[str, Any]:
        """Prune `model` as this spec says into `out` (`paser.recovery.prune.prune_checkpoint`); returns its
        record."""
        from paser.recovery.prune import prune_checkpoint

        return prune_checkpoint(
            model,
            self.method,
            self.target(),
            Path(out),
            device=self.device,
            calibration_source=self.calibration,
            calibration_samples=self.calibration_samples,
            calibration_seqlen=self.seqlen,
            seed=self.seed,
            **({"importance": self.importance} if self.importance is not None else {}),
        )
