"""Pruning a causal LM into a plain Hugging Face checkpoint.

Pruners are registered by name. This module holds magnitude pruning (the baseline of the Wanda and
SparseGPT papers: smallest |W| within each linear layer of the decoder, embeddings and lm_head kept);
the calibration-based methods plug into the same registry. The zeros of a pruned checkpoint are its
mask: nothing else is stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recovery.models import load_model, save_checkpoint

PRUNERS: dict[str, Callable[..., dict[str, float]]] = {}


def register_pruner(
    name: str,
) -> Callable[[Callable[..., dict[str, float]]], Callable[..., dict[str, float]]]:
    """Register a pruning function `fn(model, sparsity, **options) -> {layer name: sparsity}`."""

    def decorator(
        function: Callable[..., dict[str, float]],
    ) -> Callable[..., dict[str, float]]:
        PRUNERS[name] = function
        return function

    return decorator


def get_pruner(name: str) -> Callable[..., dict[str, float]]:
    """The registered pruner `name`; unknown names raise ValueError listing the known ones."""
    if name not in PRUNERS:
        raise ValueError(f"unknown pruning method {name!r}; known: {', '.join(sorted(PRUNERS))}")
    return PRUNERS[name]


def prunable_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The decoder's linear layers by qualified name; embeddings and the output head are never pruned."""
    output_embeddings = model.get_output_embeddings()
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output_embeddings
    }


def check_sparsity(sparsity: float) -> None:
    """Refuse a target sparsity outside the open interval (0, 1)."""
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")


@register_pruner("magnitude")
@torch.no_grad()
def magnitude_prune(model: torch.nn.Module, sparsity: float) -> dict[str, float]:
    """Zero the `sparsity` fraction of smallest-|W| weights in every prunable linear layer, in place.

    Exactly `round(sparsity * numel)` weights per layer become zero (ties broken by position, via a
    stable sort). Returns the achieved sparsity per layer.
    """
    check_sparsity(sparsity)
    achieved: dict[str, float] = {}
    for name, layer in prunable_linears(model).items():
        weight = layer.weight
        n_pruned = round(sparsity * weight.numel())
        order = torch.sort(weight.detach().abs().flatten().float(), stable=True).indices
        flat = weight.view(-1)
        flat[order[:n_pruned]] = 0
        achieved[name] = float((weight == 0).sum()) / weight.numel()
    return achieved


def prune_model(model: torch.nn.Module, method: str, sparsity: float, **options: Any) -> dict[str, Any]:
    """Prune `model` in place with the registered `method`; returns the record written to `pruning.json`."""
    pruner = get_pruner(method)
    started = time.perf_counter()
    per_layer = pruner(model, sparsity, **options)
    layers = prunable_linears(model).values()
    total_weights = sum(layer.weight.numel() for layer in layers)
    total_zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    return {
        "method": method,
        "target_sparsity": sparsity,
        "options": options,
        "per_layer_sparsity": per_layer,
        "total_sparsity": total_zeros / total_weights,
        "seconds": round(time.perf_counter() - started, 3),
    }


def save_pruned(model: torch.nn.Module, tokenizer: Any, out_dir: Path, record: dict[str, Any]) -> Path:
    """Write the pruned model + tokenizer + `pruning.json` (the `prune_model` record) to `out_dir` atomically."""
    return save_checkpoint(model, tokenizer, out_dir, {"pruning.json": json.dumps(record, indent=2)})


def prune_checkpoint(model_name: str, method: str, sparsity: float, out_dir: Path, **options: Any) -> dict[str, Any]:
    """Load `model_name` (fp32, CPU), prune it with `method` and save it to `out_dir` with its `pruning.json`.

    Methods without calibration data record `calibration: null`. Returns the record.
    """
    model, tokenizer = load_model(model_name, dtype="fp32", device="cpu")
    record = {**prune_model(model, method, sparsity, **options), "model": model_name, "calibration": None}
    save_pruned(model, tokenizer, Path(out_dir), record)
    return record
