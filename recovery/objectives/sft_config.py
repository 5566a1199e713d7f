"""`sft`'s settings (`SftObjectiveConfig`), and the token weighting and padding-free batches it shares with
`distill` (`TokenWeightingConfig`, `ResponseLossConfig`). Imports no torch, so the command line and a run config
read them without it."""

from __future__ import annotations

import dataclasses

from paser.recovery.objectives import ObjectiveConfig

# Kept in step with paser.recovery.token_weights.TOKEN_WEIGHTINGS (which imports torch).
TOKEN_WEIGHTINGS = ("none", "jsd", "top_fraction")


@dataclasses.dataclass
class TokenWeightingConfig(ObjectiveConfig):
    """Token-level weighting by damage (`paser.recovery.token_weights`), for an objective whose loss is a sum over
    response tokens (`sft`, `distill`): an objective offers it by its config deriving from this one.
    `TrainConfig` refuses it with `targets: original` (the kept JSD is per token of the corpus responses)."""

    token_weighting: str = dataclasses.field(
        default="none",
        metadata={
            "help": "Weight each response token's loss by the pruning damage there, from the scorer's kept per-token "
            "JSD (--token-jsd): none, jsd (weight proportional to the JSD) or top_fraction (only the batch's top "
            "token_weight_fraction of tokens by JSD, after Rho-1); weights have mean 1 per batch.",
            "card": True,
        },
    )
    token_weight_fraction: float = dataclasses.field(
        default=0.6,
        metadata={"help": "top_fraction: share of each batch's response tokens kept, in (0, 1]."},
    )
    token_jsd: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "The per-token JSD kept by scoring with scoring.keep_token_jsd=true: a score shard folder "
            "(paser select's OUT/score_shards) or one .npz file; needed by token_weighting."
        },
    )

    def __post_init__(self) -> None:
        if self.token_weighting not in TOKEN_WEIGHTINGS:
            known = ", ".join(TOKEN_WEIGHTINGS)
            raise ValueError(f"token_weighting must be one of {known}, got {self.token_weighting!r}")
        if not 0.0 < self.token_weight_fraction <= 1.0:
            raise ValueError(f"token_weight_fraction must be in (0, 1], got {self.token_weight_fraction}")
        if self.token_weighting != "none" and not self.token_jsd:
            raise ValueError(
                f"token_weighting={self.token_weighting} needs token_jsd: the per-token JSD kept by scoring with "
                "scoring.keep_token_jsd=true"
            )

    @property
    def weights_tokens(self) -> bool:
        """Whether the loss is weighted per token (`token_weighting` is not `none`)."""
        return self.token_weighting != "none"


@dataclasses.dataclass
class ResponseLossConfig(TokenWeightingConfig):
    """The settings of an objective trained on the rows' own responses by the chunked response loss (`sft`,
    `distill`): token weighting (`TokenWeightingConfig`) and padding-free batches, which both models of a
    distillation forward alike (the teacher reads the same position ids)."""

    padding_free: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "Each batch's rows laid end to end in one sequence (TRL padding_free; attention kept within "
            "each row by its position ids), so no compute goes to padding; the loss is the same."
        },
    )


@dataclasses.dataclass
class SftObjectiveConfig(ResponseLossConfig):
    """`sft`: the response NLL, optionally weighted per token, optionally with the rows laid end to end."""
