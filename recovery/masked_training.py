"""Masked full fine-tuning (`TrainConfig.adapter: full`): every weight trains, the pruned weights stay exactly zero.

As Wanda's `SparseTrainer` keeps its mask through fine-tuning (Sun et al. 2023, arXiv 2306.11695), in two ways:
each pruned weight's gradient is zeroed as it is accumulated (a tensor hook), so AdamW's moments of those entries
stay zero and gradient clipping measures the kept weights' gradients only; and after every optimiser step the mask
is applied again, so no optimiser, weight decay or rounding can leave a pruned weight off zero. The mask is the
pruned model's own zeros (`paser.recovery.sparsity.capture_mask`); `recover` checks them once more after training.
A layer-dropped or width-pruned model is dense and trains with no mask.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from transformers import TrainerCallback

from paser.recovery.models import prunable_linears
from paser.recovery.sparsity import apply_mask


def _zero_pruned(pruned: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    return gradient.masked_fill(pruned, 0)


class KeepPrunedZeros(TrainerCallback):
    """A `TrainerCallback` holding the trained model's pruned weights at exactly zero through every step.

    `mask`: name -> bool keep-mask of every prunable linear (`capture_mask`). At the start of training the mask is
    checked against the model and applied (refusing what `apply_mask` refuses), copied to the weights' device (one
    byte a weight) and a gradient hook zeroes the pruned entries; after each optimiser step the mask is applied
    again. The hooks are removed when training ends.
    """

    def __init__(self, mask: dict[str, torch.Tensor]) -> None:
        self.mask = mask
        self.pruned: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.hooks: list[Any] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        apply_mask(model, self.mask)
        layers = prunable_linears(model)
        for name, keep in self.mask.items():
            weight = layers[name].weight
            pruned = ~keep.to(weight.device)
            self.pruned.append((weight, pruned))
            self.hooks.append(weight.register_hook(partial(_zero_pruned, pruned)))

    @torch.no_grad()
    def on_optimizer_step(self, args, state, control, **kwargs):
        for weight, pruned in self.pruned:
            weight.masked_fill_(pruned, 0)

    def on_train_end(self, args, state, control, **kwargs):
        for hook in self.hooks:
            hook.remove()
        self.hooks, self.pruned = [], []
