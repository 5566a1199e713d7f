"""Token-level weighting by damage: the response loss of `sft` and `distill` weighted per token by how far the pruned
model drifted there (`TrainConfig.token_weighting`), after Rho-1 (Lin et al., arXiv 2404.07965: train on the
tokens whose loss is high relative to a reference model).

The weight source is the JSD(original ‖ pruned) the scorer computed at every response token and kept
(`DegradationConfig.keep_token_jsd`, `paser.selection.token_jsd`). `align_token_jsd` matches it to the training
rows by id and token count; `ResponseJsdCollator` carries each batch's values, in the order the loss sees its
response positions; `normalised_weights` turns them into weights with mean 1 over the batch's response tokens, so
the loss keeps the scale of the unweighted one:

- `jsd`: weight ∝ the token's JSD (a token where the models agree counts for nothing);
- `top_fraction`: weight 1 on the `fraction` of the batch's response tokens with the highest JSD (Rho-1's
  selection, with the scorer's JSD as the excess loss), 0 elsewhere, then rescaled to mean 1 (1 / fraction).

A batch whose tokens all have JSD 0 (the models agree everywhere on it) is weighted uniformly, the limit of
equal weights. Deviation from Rho-1: it scores tokens by the reference-vs-current loss gap recomputed as training
goes; here the damage is measured once, before training, by the scorer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from paser.selection.formatting import EncodedSample

TOKEN_WEIGHTINGS = ("none", "jsd", "top_fraction")
# The batch key of the per-token JSD (a flat float32 tensor over the batch's response positions).
RESPONSE_JSD = "response_jsd"


def align_token_jsd(encoded: Sequence[EncodedSample], kept: dict[str, np.ndarray], source: str) -> list[np.ndarray]:
    """Per training row (in `encoded`'s order), the kept per-token JSD of exactly its response tokens, float32.

    Teacher-forced JSD at a position depends only on the tokens before it, so a row that training truncated
    (`overflow=truncate` cuts the response tail) takes the first `response_length` values of a longer, untruncated
    scoring. Refuses (ValueError naming `source` and the row) a row without kept values and any other count
    mismatch: the scorer and training then tokenised the row differently (template, max_length).
    """
    aligned = []
    for row in encoded:
        values = kept.get(row.id)
        if values is None:
            raise ValueError(
                f"{source}: no per-token JSD for row {row.id!r}; score the rows trained on with "
                "scoring.keep_token_jsd=true"
            )
        count = row.response_length
        if len(values) > count and row.truncated:
            values = values[:count]
        if len(values) != count:
            raise ValueError(
                f"{source}: row {row.id!r} has {len(values)} per-token JSD values but {count} response tokens in "
                "training; score and train it with the same template and max_length"
            )
        aligned.append(np.asarray(values, dtype=np.float32))
    return aligned


def normalised_weights(jsd: Tensor, weighting: str, fraction: float = 1.0) -> Tensor:
    """Weights for a batch's response tokens from their JSD (1-D, one value per token), float32, mean 1.

    `jsd`: proportional to the JSD; `top_fraction`: the ceil(`fraction` × tokens) highest (ties to the earlier
    token) weigh tokens / selected, the others 0. All-zero JSD gives uniform weights. Refuses an unknown weighting,
    `none` (no weights), a fraction outside (0, 1] and negative or non-finite JSD.
    """
    if weighting not in TOKEN_WEIGHTINGS or weighting == "none":
        raise ValueError(f"token_weighting must be jsd or top_fraction to weight tokens, got {weighting!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"token_weight_fraction must be in (0, 1], got {fraction}")
    jsd = jsd.float()
    count = jsd.numel()
    if count == 0:
        return jsd
    if not bool(torch.isfinite(jsd).all()) or bool((jsd < 0).any()):
        raise ValueError("per-token JSD must be finite and >= 0")
    if weighting == "top_fraction":
        selected = max(1, math.ceil(fraction * count))
        order = torch.argsort(jsd, descending=True, stable=True)[:selected]
        weights = torch.zeros_like(jsd)
        weights[order] = count / selected
        return weights
    total = jsd.sum()
    if total == 0:
        return torch.ones_like(jsd)
    return jsd * (count / total)


class ResponseJsdCollator:
    """Wraps a collator of pre-tokenised rows that carry `response_jsd` (one value per response token): the rows go
    to `collator` without it, and the batch gains `response_jsd`, the rows' values laid end to end (row-major, the
    order of the response positions the loss reads, padded or padding-free)."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        values = [torch.as_tensor(example[RESPONSE_JSD], dtype=torch.float32) for example in examples]
        batch = self.collator([{k: v for k, v in example.items() if k != RESPONSE_JSD} for example in examples])
        batch[RESPONSE_JSD] = torch.cat(values) if values else torch.zeros(0)
        return batch
