"""Pruning a causal LM into a plain Hugging Face checkpoint.

`prune_model` prunes a loaded model in place with a method of `paser.recovery.pruners.PRUNERS` (each takes
`(model, target, calibration, **options)` and returns extra fields for the record written to `pruning.json`);
`prune_checkpoint` loads, prunes and saves. This module also holds the N:M helpers every weight pruner shares and
magnitude pruning (the baseline of the Wanda and SparseGPT papers: smallest |W| within each linear layer of the
decoder, embeddings and lm_head kept). The zeros of a pruned checkpoint are its mask: nothing else is stored.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any

import torch

from paser.recovery.models import linear_sparsity, load_model, max_positions, prunable_linears, save_checkpoint
from paser.recovery.pruners import PRUNERS, Pruner, PruneTarget, check_pattern, needs_calibration


def check_weight_target(method: str, model: torch.nn.Module, target: PruneTarget) -> None:
    """Refuse a target a weight pruner cannot meet: a block drop or width ratio, or an N:M pattern some layer's
    width breaks.

    Checked for every prunable layer before any work, so a bad pattern fails in seconds, not mid-model.
    """
    if target.drop is not None or target.ratio is not None:
        raise ValueError(f"method {method!r} prunes weights: give a sparsity or an N:M pattern, not {target.kind}")
    if target.pattern is not None:
        for name, layer in prunable_linears(model).items():
            check_pattern(name, layer.in_features, target.pattern)


def nm_prune_mask(metric: torch.Tensor, pattern: tuple[int, int]) -> torch.Tensor:
    """Boolean mask (True = prune) of the M - N smallest `metric` entries in every group of M consecutive columns.

    `metric` is [rows, columns] with columns a multiple of M (see `check_pattern`); each group keeps exactly N.
    """
    kept, group = pattern
    rows, columns = metric.shape
    grouped = metric.reshape(rows, columns // group, group)
    smallest = torch.topk(grouped, group - kept, dim=-1, largest=False).indices
    mask = torch.zeros_like(grouped, dtype=torch.bool)
    mask.scatter_(-1, smallest, True)
    return mask.reshape(rows, columns)


@torch.no_grad()
def magnitude_prune_layer(layer: torch.nn.Linear, target: PruneTarget) -> None:
    """Zero the smallest-|W| weights of one linear layer in place.

    Unstructured: exactly `round(sparsity * numel)` weights over the whole layer (ties broken by position, via
    a stable sort). N:M: the M - N smallest in every group of M consecutive input weights of each row.
    """
    weight = layer.weight
    magnitude = weight.detach().abs().float()
    if target.pattern is not None:
        weight[nm_prune_mask(magnitude, target.pattern)] = 0
        return
    n_pruned = round(target.sparsity * weight.numel())
    order = torch.sort(magnitude.flatten(), stable=True).indices
    weight.view(-1)[order[:n_pruned]] = 0


def magnitude_prune(model: torch.nn.Module, target: PruneTarget, calibration: torch.Tensor | None) -> dict[str, Any]:
    """Magnitude-prune every prunable linear layer in place (`magnitude_prune_layer`); calibration is unused. The
    built-in method `magnitude` (`paser.recovery.pruners`).

    Returns no extra record fields.
    """
    check_weight_target("magnitude", model, target)
    for layer in prunable_linears(model).values():
        magnitude_prune_layer(layer, target)
    return {}


def layer_sparsity(model: torch.nn.Module) -> dict[str, float]:
    """Fraction of exact zeros in the weight of every prunable linear layer, by qualified name."""
    return {
        name: float((layer.weight == 0).sum()) / layer.weight.numel() for name, layer in prunable_linears(model).items()
    }


def _effective_options(method: str, pruner: Pruner, options: dict[str, Any]) -> dict[str, Any]:
    """The pruner's keyword defaults overridden by `options`, so the record shows every setting that was used.

    Refuses (ValueError naming them and the method's options) options the pruner does not take.
    """
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(pruner).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"method {method!r} takes no option {', '.join(unknown)}; its options: {', '.join(defaults) or 'none'}"
        )
    return {**defaults, **options}


def prune_model(
    model: torch.nn.Module,
    method: str,
    target: PruneTarget,
    calibration: torch.Tensor | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Prune `model` in place with the registered `method`; returns the record written to `pruning.json`.

    The record holds the method, the target (`PruneTarget.to_dict`), the options in effect (the pruner's defaults
    plus `options`), the calibration shape [windows, tokens] or None, the sparsity of every prunable linear layer
    and over all of them measured after pruning, the wall time in seconds, and the pruner's own fields (the
    measured fields win a name clash). Refuses a method that needs calibration when `calibration` is None, and
    options the method does not take.
    """
    registered = PRUNERS.get(method)
    function = registered.load()
    effective_options = _effective_options(method, function, options)
    if registered.needs_calibration and calibration is None:
        raise ValueError(f"method {method!r} needs calibration token ids (a [windows, tokens] tensor)")
    started = time.perf_counter()
    fields = function(model, target, calibration, **options)
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "target": target.to_dict(),
        "options": effective_options,
        "calibration_shape": list(calibration.shape) if calibration is not None else None,
        **fields,
        "per_layer_sparsity": layer_sparsity(model),
        "total_sparsity": linear_sparsity(model),
        "seconds": round(seconds, 3),
    }


def save_pruned(model: torch.nn.Module, tokenizer: Any, out_dir: Path, record: dict[str, Any]) -> Path:
    """Write the pruned model + tokenizer + `pruning.json` (the `prune_model` record) to `out_dir` atomically.

    Values JSON cannot encode (a `torch.device` option) are written as strings.
    """
    text = json.dumps(record, indent=2, default=str)
    return save_checkpoint(model, tokenizer, out_dir, {"pruning.json": text})


def prune_checkpoint(
    model_name: str,
    method: str,
    target: PruneTarget,
    out_dir: Path,
    calibration: torch.Tensor | None = None,
    calibration_record: dict[str, Any] | None = None,
    device: str | None = None,
    *,
    calibration_source: str | None = None,
    calibration_samples: int = 128,
    calibration_seqlen: int | None = None,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Load `model_name` (fp32, on `device`: by default cuda when a GPU is visible, else cpu, as in every command),
    prune it and save it to `out_dir` with `pruning.json`.

    Calibration comes either as token ids (`calibration`, described by `calibration_record`) or is drawn here
    from `calibration_source` (see `paser.recovery.calibration.load_calibration`: a corpus or text file, `demo`,
    `wikitext2`, `c4`): `calibration_samples` windows of `calibration_seqlen` tokens (default min(2048, the
    model's maximum)) chosen under `seed`. The record is `prune_model`'s plus `model` and `calibration` (where
    the windows came from, or None). Refuses, before the model loads, an unknown method, a method that needs
    calibration without any, and both kinds of calibration at once (ValueError). Returns the record.
    """
    if calibration is not None and calibration_source is not None:
        raise ValueError("give calibration token ids or a calibration source, not both")
    if needs_calibration(method) and calibration is None and calibration_source is None:
        raise ValueError(
            f"method {method!r} needs calibration data: a corpus file (JSONL/JSON/Parquet), a .txt file, "
            "`demo`, or `wikitext2`/`c4` from the hub"
        )
    model, tokenizer = load_model(model_name, dtype="fp32", device=device)
    if calibration_source is not None:
        from paser.recovery.calibration import load_calibration

        calibration, calibration_record = load_calibration(
            calibration_source,
            tokenizer,
            n_samples=calibration_samples,
            seqlen=calibration_seqlen,
            seed=seed,
            max_length=max_positions(model.config),
        )
    record = {
        **prune_model(model, method, target, calibration, **options),
        "model": model_name,
        "calibration": calibration_record,
    }
    save_pruned(model, tokenizer, Path(out_dir), record)
    return record
