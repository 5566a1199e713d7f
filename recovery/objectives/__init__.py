"""Recovery objectives, registered by name: the loss the LoRA adapter is trained with and the TRL trainer for it.

An objective is a function `prepare(job: TrainingJob) -> PreparedTrainer` registered with `register_objective`,
which declares its default learning rate, the default weight of its response-NLL term (`TrainConfig.sft_weight`
unset) and whether it needs the original model. `paser.recovery.train.recover` looks the objective up by
`TrainConfig.objective` and runs the shared loop around its trainer: rows, LoRA, training, merge, re-masking,
records. The built-in ones are `sft` (sft.py), `dpo` and `sft+dpo` (dpo.py), `distill` (distill.py) and
`on_policy` (on_policy.py), declared in `OBJECTIVES` by module, so they are listed without importing them (or
torch) and a module is imported on its first lookup; sft, distill and on_policy take their loss from
response_loss.py, which registers nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paser.common.registry import Registry

if TYPE_CHECKING:
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import TrainingRows


@dataclasses.dataclass
class ObjectiveConfig:
    """An objective's own settings, beside the shared ones of `TrainConfig`: a dataclass whose fields carry
    `metadata={"help": ...}` (the `paser recover` flags and a run's `recovery` keys are read from them) and, for
    the model card, `"card": True`. This base has no fields: the config of an objective that declares none."""


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """What an objective builds its trainer from.

    `model`: the pruned model, on the CPU in the training dtype (the Trainer moves it to its device);
    `trainer_args`: the TrainingArguments every objective's TRL config takes (batch, schedule, precision,
    trackers: `paser.recovery.train._trl_common_args`); `original`: the original model's name or folder, or None;
    `state`: accelerate's `PartialState`; `device`: "cpu" or "cuda"; `dtype`: the training dtype's name as
    `paser.recovery.models.load_model` takes it ("float32", "bfloat16", ...).
    """

    model: Any
    tokenizer: Any
    rows: TrainingRows
    config: TrainConfig
    trainer_args: dict[str, Any]
    out_dir: Path
    original: str | None
    state: Any
    device: str
    dtype: str


@dataclasses.dataclass
class PreparedTrainer:
    """An objective's trainer (with the LoRA adapter), what the run record gains from preparing it (a `teacher`
    entry becomes the record's `original`), the files preparing it wrote (listed in the record's outputs), and
    `tokens`, called after training: what it forwarded, as `paser.recovery.flops.recovery_compute` takes it
    (`trained`, `padding`, `loss_tokens`, `teacher_forward`, `reference_forward`, `generation_prompt`,
    `generated`)."""

    trainer: Any
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    tokens: Callable[[], dict[str, int]] = dict


Prepare = Callable[[TrainingJob], PreparedTrainer]


@dataclasses.dataclass(frozen=True)
class Objective:
    """A registered objective: its `prepare` function and what it declares."""

    name: str
    prepare: Prepare
    default_learning_rate: float
    default_sft_weight: float
    needs_original: bool
    full_fine_tuning: bool = False
    config: type[ObjectiveConfig] = ObjectiveConfig


OBJECTIVES: Registry[Objective] = Registry(
    "objective",
    builtins={
        "sft": f"{__name__}.sft",
        "dpo": f"{__name__}.dpo",
        "sft+dpo": f"{__name__}.dpo",
        "distill": f"{__name__}.distill",
        "on_policy": f"{__name__}.on_policy",
    },
)
# The built-in objectives' configs, by where they live: modules without torch, read before (or without) the trainers.
BUILTIN_CONFIGS = {
    "sft": f"{__name__}.sft_config:SftObjectiveConfig",
    "dpo": f"{__name__}.dpo_config:DpoObjectiveConfig",
    "sft+dpo": f"{__name__}.dpo_config:DpoObjectiveConfig",
    "distill": f"{__name__}.distill_config:DistillObjectiveConfig",
    "on_policy": f"{__name__}.on_policy_config:OnPolicyObjectiveConfig",
}


def register_objective(
    name: str,
    *,
    default_learning_rate: float,
    default_sft_weight: float = 0.0,
    needs_original: bool = False,
    full_fine_tuning: bool = False,
    config: type[ObjectiveConfig] = ObjectiveConfig,
) -> Callable[[Prepare], Prepare]:
    """Register `prepare(job) -> PreparedTrainer` as objective `name`, its settings being `config`.

    `config` is the objective's own settings, a dataclass deriving from `ObjectiveConfig` (the trainer reads it as
    `job.config.objective_config`; one deriving from `sft_config.TokenWeightingConfig` offers token weighting);
    `default_learning_rate` applies when `TrainConfig.learning_rate` is unset, `default_sft_weight` (the weight of
    the response NLL added to the objective's loss) when its config has an `sft_weight` left unset; with
    `needs_original`, `recover` refuses to run without the original model; with `full_fine_tuning`, its trainer
    takes `TrainConfig.peft_config()` (None with `adapter: full`: every weight trains) and keeps no state of its own
    in the adapter (the config refuses `adapter: full` for the others). Refuses a name registered twice and a
    config that is no `ObjectiveConfig` dataclass. A built-in registers the config `BUILTIN_CONFIGS` declares for it.
    """

    def decorator(prepare: Prepare) -> Prepare:
        if default_learning_rate <= 0 or default_sft_weight < 0:
            raise ValueError(f"objective {name!r}: default_learning_rate must be > 0 and default_sft_weight >= 0")
        if not (isinstance(config, type) and issubclass(config, ObjectiveConfig) and dataclasses.is_dataclass(config)):
            raise ValueError(f"objective {name!r}: config must be a dataclass deriving from ObjectiveConfig")
        OBJECTIVES.register(
            name,
            Objective(
                name, prepare, default_learning_rate, default_sft_weight, needs_original, full_fine_tuning, config
            ),
        )
        return prepare

    return decorator


def objective_names() -> list[str]:
    """The names of all registered objectives, sorted (the built-ins are listed without importing them)."""
    return OBJECTIVES.names()


def get_objective(name: str) -> Objective:
    """The objective registered as `name`; refuses an unknown name (`UnknownNameError`, a ValueError, listing the
    known ones)."""
    return OBJECTIVES.get(name)


def objective_config_class(name: str) -> type[ObjectiveConfig]:
    """The config class of objective `name`: a built-in's read from its config module (its trainer, and torch, are
    not imported), a plug-in's from its registration. Refuses an unknown name as `get_objective` does."""
    OBJECTIVES.check(name)
    if name in BUILTIN_CONFIGS:
        return _builtin_config(name)
    return get_objective(name).config


def _builtin_config(name: str) -> type[ObjectiveConfig]:
    module, _, attribute = BUILTIN_CONFIGS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
