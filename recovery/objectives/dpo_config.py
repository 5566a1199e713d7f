"""`dpo`'s and `sft+dpo`'s settings (`DpoObjectiveConfig`). Imports no torch, so the command line and a run config
read them without it."""

from __future__ import annotations

import dataclasses

from paser.recovery.objectives import ObjectiveConfig


@dataclasses.dataclass
class DpoObjectiveConfig(ObjectiveConfig):
    """`dpo` and `sft+dpo`: the preference loss's strength, the rejected answers' length, the NLL term's weight."""

    dpo_beta: float = dataclasses.field(default=0.1, metadata={"help": "DPO beta (strength of the KL anchor)."})
    max_new_tokens: int = dataclasses.field(
        default=256, metadata={"help": "Longest greedy answer generated as the rejected response."}
    )
    sft_weight: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Weight of the chosen response's NLL added to the DPO loss (default 1 for sft+dpo, 0 for dpo)."
        },
    )

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.sft_weight is not None and self.sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0, got {self.sft_weight}")
