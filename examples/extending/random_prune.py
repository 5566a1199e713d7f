"""A pruner in one file: zero a seeded random share of every prunable linear layer's weights (a control for
Wanda and SparseGPT: what pruning without any importance score costs).

Load it with `--plugin examples/extending/random_prune.py`, then `paser prune --method random_unstructured
--sparsity 0.5`, or `models.prune: {method: random_unstructured, sparsity: 0.5}` in a `paser run` config.
"""

from __future__ import annotations

from typing import Any

import torch

from paser.recovery.models import prunable_linears
from paser.recovery.prune import check_weight_target
from paser.recovery.pruners import HALF_OF_THE_WEIGHTS, PruneTarget, register_pruner


@register_pruner("random_unstructured", default_target=HALF_OF_THE_WEIGHTS)
@torch.no_grad()
def random_unstructured(
    model: torch.nn.Module, target: PruneTarget, calibration: torch.Tensor | None, seed: int = 0
) -> dict[str, Any]:
    """Zero round(sparsity × size) weights of each layer, drawn under `seed`; returns the fields pruning.json adds."""
    check_weight_target("random_unstructured", model, target)
    if target.pattern is not None:
        raise ValueError("random_unstructured prunes unstructured: give a sparsity, not an N:M pattern")
    generator = torch.Generator().manual_seed(seed)
    for layer in prunable_linears(model).values():
        weight = layer.weight
        chosen = torch.randperm(weight.numel(), generator=generator)[: round(target.sparsity * weight.numel())]
        weight.view(-1)[chosen] = 0
    return {"seed": seed}
