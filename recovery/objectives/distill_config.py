"""`distill`'s settings (`DistillObjectiveConfig`). Imports no torch, so the command line and a run config read
them without it."""

from __future__ import annotations

import dataclasses

from paser.recovery.objectives.sft_config import ResponseLossConfig


@dataclasses.dataclass
class DistillObjectiveConfig(ResponseLossConfig):
    """`distill`: the KL's temperature, the NLL term's weight, token weighting and padding-free batches
    (`ResponseLossConfig`)."""

    sft_weight: float | None = dataclasses.field(
        default=None, metadata={"help": "Weight of the response NLL added to the KL loss (default 0)."}
    )
    temperature: float = dataclasses.field(
        default=1.0,
        metadata={
            "help": "KD temperature: the KL is between the teacher's and the student's distributions softened by "
            "it, times its square (Hinton et al.); 1: plain forward KL. The NLL term stays at temperature 1.",
            "card": True,
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sft_weight is not None and self.sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0, got {self.sft_weight}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
