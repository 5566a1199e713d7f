"""`on_policy`'s settings (`OnPolicyObjectiveConfig`). Imports no torch, so the command line and a run config read
them without it."""

from __future__ import annotations

import dataclasses

from paser.recovery.objectives import ObjectiveConfig


@dataclasses.dataclass
class OnPolicyObjectiveConfig(ObjectiveConfig):
    """`on_policy`: how often and how long the student samples, and the NLL term's weight."""

    on_policy_fraction: float = dataclasses.field(
        default=1.0,
        metadata={
            "help": "Share of steps on which the student samples its own answers (GKD's lmbda), in (0, 1]; the "
            "other steps distil on the rows' responses."
        },
    )
    max_new_tokens: int = dataclasses.field(default=256, metadata={"help": "Longest answer the student samples."})
    sft_weight: float | None = dataclasses.field(
        default=None, metadata={"help": "Weight of the answers' NLL added to the KL loss (default 0)."}
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.on_policy_fraction <= 1.0:
            raise ValueError(f"on_policy_fraction must be in (0, 1], got {self.on_policy_fraction}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.sft_weight is not None and self.sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0, got {self.sft_weight}")
