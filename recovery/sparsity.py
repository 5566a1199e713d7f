"""Keeping a pruned model's zeros through LoRA recovery: capture the mask, re-apply it after the merge, report.

A merged LoRA weight W + BA is dense, so an unstructured or N:M pruned model loses its sparsity at
`merge_and_unload()`. The zeros of a pruned checkpoint are its mask (`paser.recovery.prune` stores nothing else),
so the mask is read from the weights before training (kept = weight != 0) and re-applied to the merged
model. A layer-dropped or width-pruned (structured) model is dense and is merged as is. `sparsity_report` builds the
`sparsity.json` record: per-layer zero fractions before training, after the merge and after re-masking,
the weights the re-mask set back to zero, and the perplexity effect of re-masking.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from paser.recovery.evaluate import perplexity
from paser.recovery.models import linear_sparsity, prunable_linears

# A model with no pruning.json is re-masked when at least this fraction of its prunable weights is exactly
# zero: trained dense weights hold (almost) no exact zeros, while any pruned model holds far more than 1%.
MEASURED_SPARSITY_THRESHOLD = 0.01
TARGET_FIELDS = ("sparsity", "pattern", "drop", "ratio")


def capture_mask(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The keep-mask of every prunable linear layer (lm_head excluded): name -> bool tensor, True where weight != 0.

    Every prunable layer gets an entry, dense ones too (all True), so `apply_mask` and `check_zeros` cover the
    whole model and a name that does not match is always an error. Masks live on the CPU (one byte per weight).
    Capture from the pruned model before it is wrapped by peft: the names are then the base model's, which
    are the names again after `merge_and_unload()`.
    """
    return {name: (layer.weight.detach() != 0).cpu() for name, layer in prunable_linears(model).items()}


def _read_target(record_path: Path) -> tuple[str, dict[str, Any]]:
    """The method and target of a `pruning.json`; refuses (ValueError naming the file) what cannot be read."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{record_path}: cannot parse pruning record ({error})") from error
    target = record.get("target") if isinstance(record, dict) else None
    given = [field for field in TARGET_FIELDS if isinstance(target, dict) and target.get(field) is not None]
    if len(given) != 1:
        raise ValueError(f"{record_path}: 'target' must hold exactly one of {', '.join(TARGET_FIELDS)}")
    return str(record.get("method", "unknown method")), target


def mask_policy(model_dir: str | Path | None, model: torch.nn.Module) -> tuple[bool, str]:
    """Whether the merged model must be re-masked, and the one-line reason recorded in `sparsity.json`.

    With a `pruning.json` in `model_dir`, its target decides: sparsity or N:M pattern -> re-mask; block drop or
    width ratio -> dense, merged as is. Without one (or with `model_dir` None, e.g. a hub id), the model's
    prunable linears are measured: re-mask when at least 1% of their weights are exactly zero. Refuses
    (ValueError naming the file) a `pruning.json` that cannot be parsed or has no single recognisable target,
    and one that promises a sparse model when `model` holds under 1% zeros (the record does not belong to this
    model).
    """
    zeros = linear_sparsity(model)
    record_path = Path(model_dir) / "pruning.json" if model_dir is not None else None
    if record_path is None or not record_path.is_file():
        if zeros >= MEASURED_SPARSITY_THRESHOLD:
            return True, f"no pruning.json; {zeros:.1%} zeros measured: re-masked after merge"
        return False, f"no pruning.json; {zeros:.1%} zeros measured: dense, merged as is"
    method, target = _read_target(record_path)
    if target.get("drop") is not None:
        return False, "layer-dropped: dense, merged as is"
    if target.get("ratio") is not None:
        return False, "width-pruned: dense, merged as is"
    label = target.get("label") or target.get("sparsity") or target.get("pattern")
    if zeros < MEASURED_SPARSITY_THRESHOLD:
        raise ValueError(
            f"{record_path}: records {method} pruning to {label}, but the model holds only {zeros:.1%} zeros"
        )
    return True, f"pruning.json: {method} to {label}: re-masked after merge"


def _matched_layers(model: torch.nn.Module, mask: dict[str, torch.Tensor]) -> dict[str, torch.nn.Linear]:
    """The model's prunable linears, refusing (ValueError naming the layer) a name or shape the mask disagrees on."""
    layers = prunable_linears(model)
    for name, keep in mask.items():
        if name not in layers:
            raise ValueError(f"mask layer {name!r} is not a prunable linear of the model")
        if keep.shape != layers[name].weight.shape:
            raise ValueError(
                f"mask layer {name!r} has shape {tuple(keep.shape)}, the weight {tuple(layers[name].weight.shape)}"
            )
        if keep.dtype != torch.bool:
            raise ValueError(f"mask layer {name!r} has dtype {keep.dtype}, expected torch.bool")
    unmasked = [name for name in layers if name not in mask]
    if unmasked:
        raise ValueError(f"model layer {unmasked[0]!r} has no mask entry ({len(unmasked)} layers in all)")
    return layers


@torch.no_grad()
def apply_mask(model: torch.nn.Module, mask: dict[str, torch.Tensor]) -> dict[str, int]:
    """Zero every prunable weight outside `mask`, in place; returns per layer how many weights went nonzero -> 0.

    Works on a plain transformers model (after `merge_and_unload()` the names are the base model's). Every
    layer is checked before any weight changes, so a bad mask leaves the model untouched: refuses (ValueError
    naming the layer) a mask name the model lacks, a model layer the mask lacks, a shape mismatch and a
    non-bool mask.
    """
    layers = _matched_layers(model, mask)
    changed = {}
    for name, keep in mask.items():
        weight = layers[name].weight
        pruned = ~keep.to(weight.device)
        changed[name] = int((weight[pruned] != 0).sum())
        weight.masked_fill_(pruned, 0)
    return changed


def check_zeros(model: torch.nn.Module, mask: dict[str, torch.Tensor], *, exact: bool = True) -> None:
    """Post-condition of a masked merge: raise ValueError unless the zeros of the prunable linears match `mask`.

    With `exact` (the default) the zero positions must be exactly ~mask; with `exact=False` only the pruned
    positions must be zero, and a kept weight that training happened to bring to exactly zero is allowed (in
    bf16, W + BA can cancel exactly). The message names the first bad layer and how many positions differ.
    Refuses the same name and shape mismatches as `apply_mask`. Returns None.
    """
    layers = _matched_layers(model, mask)
    for name, keep in mask.items():
        zero = (layers[name].weight.detach() == 0).cpu()
        nonzero_pruned = int((~keep & ~zero).sum())
        zero_kept = int((keep & zero).sum()) if exact else 0
        if nonzero_pruned or zero_kept:
            raise ValueError(
                f"layer {name!r}: zeros differ from the mask at {nonzero_pruned + zero_kept} positions "
                f"({nonzero_pruned} pruned weights nonzero, {zero_kept} kept weights zero)"
            )


def layer_sizes(model: torch.nn.Module) -> dict[str, int]:
    """Weights per prunable linear layer, by qualified name: the weights of the totals in `sparsity_report`."""
    return {name: layer.weight.numel() for name, layer in prunable_linears(model).items()}


def _weighted_total(fractions: dict[str, float], sizes: dict[str, int]) -> float:
    """Zero fraction over all layers, each layer's fraction weighted by its number of weights."""
    total = sum(sizes.values())
    return sum(fractions[name] * sizes[name] for name in sizes) / total if total else 0.0


def _check_ppl_record(ppl: dict[str, Any]) -> None:
    """Refuse (ValueError) a ppl record that is neither {"skipped": reason} nor a `remask_ppl_effect` result."""
    if "skipped" in ppl:
        return
    missing = [key for key in ("text", "windows", "seqlen", "ppl_merged", "ppl_remasked") if key not in ppl]
    if missing:
        raise ValueError(f"ppl record lacks {', '.join(missing)}; give a remask_ppl_effect result or {{'skipped'}}")


def sparsity_report(
    before: dict[str, float],
    after_merge: dict[str, float],
    after_remask: dict[str, float] | None,
    *,
    sizes: dict[str, int],
    policy_reason: str,
    changed: dict[str, int] | None,
    ppl: dict[str, Any] | None,
) -> dict[str, Any]:
    """The `sparsity.json` payload of a recovery run.

    Inputs are per-layer zero fractions (`paser.recovery.prune.layer_sparsity`) before training, after the merge, and
    after re-masking (None for a dense model that was not re-masked), `sizes` from `layer_sizes`, the
    `mask_policy` reason, the `apply_mask` counts, and the ppl effect (a `remask_ppl_effect` record or
    {"skipped": reason}; None only for a model that was not re-masked).

    Returns {"policy": reason, "remasked": bool, "total": {"weights", "before", "after_merge", "after_remask"}
    (fractions weighted by layer size), "layers": {name: {"weights", "before", "after_merge", "after_remask"}},
    "weights_rezeroed": {"total", "per_layer"} or None, "ppl": the ppl record}. Refuses (ValueError) layer names
    that differ between the inputs, re-mask fractions without counts (or counts without them), and a ppl record
    of another shape or missing for a re-masked model.
    """
    remasked = after_remask is not None
    named = {"before": before, "after_merge": after_merge, "sizes": sizes}
    if remasked:
        named |= {"after_remask": after_remask, "changed": changed}
    elif changed is not None:
        raise ValueError("changed counts given for a model that was not re-masked (after_remask is None)")
    for label, values in named.items():
        if values is None:
            raise ValueError(f"{label} is required when after_remask is given")
        if set(values) != set(before):
            missing, extra = sorted(set(before) - set(values)), sorted(set(values) - set(before))
            raise ValueError(f"{label} names other layers than before: missing {missing[:3]}, extra {extra[:3]}")
    if ppl is None:
        if remasked:
            raise ValueError("ppl is required for a re-masked model: a remask_ppl_effect record or {'skipped': why}")
        ppl = {"skipped": "not re-masked"}
    _check_ppl_record(ppl)
    stages = {"before": before, "after_merge": after_merge, "after_remask": after_remask}
    return {
        "policy": policy_reason,
        "remasked": remasked,
        "total": {
            "weights": sum(sizes.values()),
            **{stage: _weighted_total(values, sizes) if values else None for stage, values in stages.items()},
        },
        "layers": {
            name: {
                "weights": sizes[name],
                **{stage: values[name] if values else None for stage, values in stages.items()},
            }
            for name in before
        },
        "weights_rezeroed": {"total": sum(changed.values()), "per_layer": changed} if remasked else None,
        "ppl": ppl,
    }


def remask_ppl_effect(
    model: Any,
    tokenizer: Any,
    mask: dict[str, torch.Tensor],
    text: str,
    *,
    text_name: str,
    seqlen: int = 512,
    windows: int = 8,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Perplexity of the merged model on `text`, then `apply_mask`, then perplexity again.

    Both runs use `paser.recovery.evaluate.perplexity` on the first `windows` windows of `seqlen` tokens (small
    defaults: this runs on CPU at the end of training). Returns ({"text": text_name, "windows": windows
    evaluated, "seqlen", "ppl_merged", "ppl_remasked"}, the `apply_mask` counts); the model ends re-masked.
    The mask is checked before the first perplexity run, so a bad mask fails fast. Refuses what `apply_mask`
    and `perplexity` refuse (seqlen beyond the model's maximum, a text shorter than one window).
    """
    _matched_layers(model, mask)
    merged = perplexity(model, tokenizer, text, seqlen=seqlen, limit=windows)
    changed = apply_mask(model, mask)
    remasked = perplexity(model, tokenizer, text, seqlen=seqlen, limit=windows)
    return {
        "text": text_name,
        "windows": merged["n_windows"],
        "seqlen": merged["seqlen"],
        "ppl_merged": merged["ppl"],
        "ppl_remasked": remasked["ppl"],
    }, changed
