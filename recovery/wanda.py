"""Wanda: pruning by weights and activations (Sun et al., "A Simple and Effective Pruning Approach for Large
Language Models", arXiv 2306.11695).

The score of weight W_ij is |W_ij| · ‖X_j‖₂, X_j being input channel j over the calibration tokens (paper eq. 1),
compared within each output row (per-output comparison group, §3). We follow the reference `prune_wanda` and its
`WrappedGPT.add_batch`, except that the channel statistic is the mean of x_j² over tokens rather than the sum
divided by the number of windows: the two differ by one factor per layer, which changes no ranking.
"""

from __future__ import annotations

from typing import Any

import torch

from paser.recovery.prune import check_weight_target, nm_prune_mask
from paser.recovery.pruners import PruneTarget
from paser.recovery.sequential import BlockLayers, prune_sequentially


class InputNorms:
    """Running mean of x_j² per input channel j of one linear layer (the reference's `scaler_row`)."""

    def __init__(self, in_features: int, device: torch.device | None = None) -> None:
        # float64: a sum of squares over up to millions of tokens; it is one vector per layer, so the cost is nil.
        self.sum_squares = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.tokens = 0

    @classmethod
    def for_layer(cls, layer: torch.nn.Linear) -> InputNorms:
        """The empty statistic of `layer`'s inputs, on its device (what `prune_sequentially` collects per layer)."""
        return cls(layer.in_features, layer.weight.device)

    def add_batch(self, inputs: torch.Tensor) -> None:
        """Fold in layer inputs [..., in_features]."""
        flat = inputs.reshape(-1, inputs.shape[-1]).float()
        self.sum_squares += flat.pow(2).sum(dim=0).double()
        self.tokens += flat.shape[0]

    def mean_squares(self) -> torch.Tensor:
        """Mean of x_j² over the tokens seen, per input channel, float32 [in_features]; refuses an empty statistic."""
        if self.tokens == 0:
            raise ValueError("no calibration tokens reached this layer")
        return (self.sum_squares / self.tokens).float()


def wanda_metric(weight: torch.Tensor, norms: InputNorms) -> torch.Tensor:
    """|W| · sqrt(mean x_j²) for every weight, float32 [out_features, in_features]."""
    return weight.detach().abs().float() * norms.mean_squares().to(weight.device).sqrt().unsqueeze(0)


@torch.no_grad()
def wanda_prune_layer(layer: torch.nn.Linear, norms: InputNorms, target: PruneTarget) -> None:
    """Zero the lowest-scoring weights of one linear layer in place.

    Unstructured: exactly `int(in_features * sparsity)` weights in every output row (ties broken by position,
    via a stable sort), so the layer's sparsity is exact when that product is whole. N:M: the M - N lowest in
    every group of M consecutive input weights of each row.
    """
    metric = wanda_metric(layer.weight, norms)
    if target.pattern is not None:
        layer.weight[nm_prune_mask(metric, target.pattern)] = 0
        return
    n_pruned = int(layer.in_features * target.sparsity)
    lowest = torch.sort(metric, dim=1, stable=True).indices[:, :n_pruned]
    layer.weight.scatter_(1, lowest, 0.0)


def wanda_prune(
    model: torch.nn.Module,
    target: PruneTarget,
    calibration: torch.Tensor | None,
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    """Wanda-prune every decoder linear layer in place, block by block on the calibration windows.

    `batch_size` windows go through a block per forward; blocks compute on `device` (default: the model's).
    Returns no extra record fields. Refuses a drop target and an N:M pattern a layer's width breaks.
    """
    check_weight_target("wanda", model, target)

    def prune_block(layers: BlockLayers[InputNorms]) -> None:
        for layer, norms in layers.values():
            wanda_prune_layer(layer, norms, target)

    prune_sequentially(
        model,
        calibration,
        InputNorms.for_layer,
        prune_block,
        batch_size=batch_size,
        device=device,
        description="wanda",
    )
    return {}
