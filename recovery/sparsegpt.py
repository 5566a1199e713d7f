"""SparseGPT: one-shot pruning with an approximate OBS weight update (Frantar & Alistarh, "SparseGPT: Massive
Language Models Can Be Accurately Pruned in One-Shot", arXiv 2301.00774).

Per linear layer, with H = 2/n Σ x xᵀ the Hessian of the layer-wise reconstruction loss over the n calibration
tokens: columns are processed left to right in blocks of 128; at the start of a block the mask is chosen by
w² / [H⁻¹]_jj² (unstructured: over the whole block; N:M: in every group of M columns as the group is reached),
each pruned weight's error is spread over the not-yet-processed columns of its row through the upper Cholesky
factor of H⁻¹ (Algorithm 1), and the block's accumulated error updates the columns to its right. This follows
the reference `SparseGPT.fasterprune` (IST-DASLab/sparsegpt), including dead inputs (H_jj = 0: H_jj := 1,
W[:, j] := 0) and dampening by 1% of the mean diagonal. Two deviations: the unstructured mask takes exactly
`int(sparsity · block size)` weights per block (the reference thresholds at that k-th value, which over-prunes
on ties), and a failed Cholesky factorisation is an error naming the layer, not a silent skip.
"""

from __future__ import annotations

from typing import Any

import torch

from paser.recovery.prune import check_weight_target, nm_prune_mask
from paser.recovery.pruners import PruneTarget
from paser.recovery.sequential import BlockLayers, prune_sequentially


class InputHessian:
    """H = 2/n Σ x xᵀ over the n tokens seen by one linear layer, float32 [in_features, in_features].

    Kept as a running mean in float32, as the reference does: the update is one [in, tokens] × [tokens, in]
    matmul per batch, the bulk of SparseGPT's statistics cost, and float32 runs it at full speed on GPUs where
    float64 is 2-64x slower. Its relative rounding (~1e-6) is far below the 1% diagonal dampening added before
    the inversion, so float64 would not change the result.
    """

    def __init__(self, in_features: int, device: torch.device | None = None) -> None:
        self.matrix = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.tokens = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        """Fold in layer inputs [..., in_features]."""
        flat = inputs.reshape(-1, inputs.shape[-1]).float()
        batch_tokens = flat.shape[0]
        # Rescale the running mean to the new count before adding, so values stay O(x²) however many tokens.
        self.matrix *= self.tokens / (self.tokens + batch_tokens)
        self.tokens += batch_tokens
        flat = flat * (2.0 / self.tokens) ** 0.5
        self.matrix += flat.t() @ flat


def _check_settings(target: PruneTarget, blocksize: int, percdamp: float) -> None:
    """Refuse a non-positive blocksize or percdamp, and a blocksize that would split an N:M group."""
    if blocksize < 1:
        raise ValueError(f"sparsegpt blocksize must be at least 1, got {blocksize}")
    if percdamp <= 0:
        raise ValueError(f"sparsegpt percdamp must be positive, got {percdamp}")
    if target.pattern is not None and blocksize % target.pattern[1]:
        raise ValueError(
            f"sparsegpt blocksize {blocksize} must be a multiple of the pattern's group size {target.pattern[1]}"
        )


def _inverse_hessian_factor(name: str, hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """The upper Cholesky factor of (H + λI)⁻¹, λ = percdamp · mean diag H; refuses (naming the layer) a failure."""
    damped = hessian.clone()
    damped.diagonal().add_(percdamp * torch.mean(torch.diag(damped)))
    lower, info = torch.linalg.cholesky_ex(damped)
    if info == 0:
        inverse_upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
        if info == 0:
            return inverse_upper
    raise ValueError(
        f"sparsegpt: Cholesky factorisation failed for layer {name} (Hessian not positive definite "
        f"with percdamp={percdamp}); raise percdamp or use more calibration windows"
    )


@torch.no_grad()
def sparsegpt_prune_layer(
    name: str,
    layer: torch.nn.Linear,
    hessian: InputHessian,
    target: PruneTarget,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> None:
    """Prune one linear layer in place with the SparseGPT OBS update (the module docstring gives the steps).

    Unstructured: exactly `int(sparsity · rows · block width)` weights per column block (exact layer sparsity
    when those are whole), plus any weights of dead inputs beyond that. N:M: N kept in every group of M
    consecutive input weights of each row. Refuses (naming the layer) a Hessian that stays singular after
    dampening, a non-positive blocksize or percdamp, and a blocksize that is not a multiple of M.
    """
    _check_settings(target, blocksize, percdamp)
    weight = layer.weight.detach().float().clone()
    columns = weight.shape[1]
    matrix = hessian.matrix.to(weight.device).clone()
    dead = torch.diag(matrix) == 0
    matrix[dead, dead] = 1
    weight[:, dead] = 0
    inverse = _inverse_hessian_factor(name, matrix, percdamp)
    del matrix

    for start in range(0, columns, blocksize):
        end = min(start + blocksize, columns)
        width = end - start
        block = weight[:, start:end].clone()
        pruned_block = torch.zeros_like(block)
        errors = torch.zeros_like(block)
        inverse_block = inverse[start:end, start:end]
        inverse_diagonal = torch.diag(inverse_block)

        if target.pattern is None:
            saliency = block.pow(2) / inverse_diagonal.pow(2).unsqueeze(0)
            mask = torch.zeros_like(block, dtype=torch.bool)
            lowest = torch.sort(saliency.flatten(), stable=True).indices[: int(saliency.numel() * target.sparsity)]
            mask.view(-1)[lowest] = True
        else:
            group = target.pattern[1]
            mask = torch.zeros_like(block, dtype=torch.bool)

        for column in range(width):
            if target.pattern is not None and column % group == 0:
                # The group's mask uses the weights as updated by the columns before it (reference behaviour).
                group_slice = slice(column, column + group)
                saliency = block[:, group_slice].pow(2) / inverse_diagonal[group_slice].pow(2).unsqueeze(0)
                mask[:, group_slice] = nm_prune_mask(saliency, target.pattern)
            column_weights = block[:, column]
            pruned_column = column_weights.masked_fill(mask[:, column], 0.0)
            pruned_block[:, column] = pruned_column
            error = (column_weights - pruned_column) / inverse_block[column, column]
            block[:, column:] -= error.unsqueeze(1) @ inverse_block[column, column:].unsqueeze(0)
            errors[:, column] = error

        weight[:, start:end] = pruned_block
        weight[:, end:] -= errors @ inverse[start:end, end:]

    layer.weight.copy_(weight.to(layer.weight.dtype))


def sparsegpt_prune(
    model: torch.nn.Module,
    target: PruneTarget,
    calibration: torch.Tensor | None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    """SparseGPT-prune every decoder linear layer in place, block by block on the calibration windows.

    `blocksize`: columns per OBS block; `percdamp`: dampening as a fraction of the mean Hessian diagonal;
    `batch_size` windows go through a decoder block per forward; blocks compute on `device` (default: the
    model's). Returns no extra record fields. Refuses a drop target, an N:M pattern a layer's width or the
    blocksize breaks, a non-positive blocksize or percdamp, and a layer whose Cholesky factorisation fails.
    """
    check_weight_target("sparsegpt", model, target)
    _check_settings(target, blocksize, percdamp)

    def prune_block(layers: BlockLayers[InputHessian]) -> None:
        for name, (layer, hessian) in layers.items():
            sparsegpt_prune_layer(name, layer, hessian, target, blocksize=blocksize, percdamp=percdamp)

    prune_sequentially(
        model,
        calibration,
        lambda layer: InputHessian(layer.in_features, layer.weight.device),
        prune_block,
        batch_size=batch_size,
        device=device,
        description="sparsegpt",
    )
    return {}
