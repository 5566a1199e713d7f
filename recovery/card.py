"""The model card (README.md) of a recovered model: what it was pruned from, what it was tuned on, and how.

`model_card` is written by `paser.recovery.train.recover` into `merged/` beside the weights, so the folder says
where it came from to whoever loads it with transformers alone. The settings it lists are the fields of
`TrainConfig` and of the objective's config marked for the card.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from paser.recovery.config import TrainConfig
from paser.recovery.objectives import objective_config_class


def card_settings(objective: str) -> tuple[str, ...]:
    """The training settings the card lists for `objective`: the fields marked `"card": True` of TrainConfig,
    then of the objective's config, in field order."""
    fields = [*dataclasses.fields(TrainConfig), *dataclasses.fields(objective_config_class(objective))]
    return tuple(field.name for field in fields if field.metadata.get("card"))


def read_pruning_record(pruned: str) -> dict[str, Any] | None:
    """The `pruning.json` that `paser prune` left in the pruned checkpoint folder; None for a hub id or a
    folder without one."""
    path = Path(pruned) / "pruning.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def subset_card(subset: str | Path) -> Path | None:
    """The dataset card `paser select` wrote beside the subset (`dataset/README.md` next to selection.jsonl);
    None when there is none."""
    card = Path(subset).parent / "dataset" / "README.md"
    return card if card.is_file() else None


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value:.2%}"


def model_card(record: dict[str, Any], pruned: str, subset: str | Path) -> str:
    """The merged model's card from `recover`'s record (before its outputs are added), the pruned model's
    name or folder and the subset's path: a YAML header (base_model, library_name, tags), then the base model,
    its pruning record when it has one, the subset and its card, the LoRA (or full fine-tuning) and training
    settings and the sparsity kept."""
    pruning = read_pruning_record(pruned)
    card = subset_card(subset)
    original = (record.get("original") or {}).get("name") or (pruning or {}).get("model")
    full = record["hyperparameters"].get("adapter") == "full"
    tags = ["paser", "pruned", "full-fine-tuning" if full else "lora"]
    header = {"base_model": str(pruned), "library_name": "transformers", "tags": tags}
    how = (
        "masked full fine-tuning (every weight trained, the pruned ones held at zero)"
        if full
        else "LoRA, with the adapter merged into the weights"
    )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {Path(pruned).name or pruned}, recovered with paser ({record['objective']})",
        "",
        f"The pruned model `{pruned}` after {record['objective']} on the rows of `{subset}`: {how}.",
        "",
        "## Base model",
        "",
        f"- pruned model: `{pruned}`",
        f"- original model: `{original}`" if original else "- original model: not recorded",
    ]
    if pruning is not None:
        target = pruning.get("target") or {}
        lines.append(
            f"- pruning: `{pruning.get('method')}` {target.get('label', '')}, total sparsity "
            f"{_percent(pruning.get('total_sparsity'))} (pruning.json of the pruned folder)"
        )
    else:
        lines.append("- pruning: no pruning.json in the pruned folder")
    rows = record["rows"]
    lines += [
        "",
        "## Training data",
        "",
        f"- subset: `{subset}` ({rows['used']:,} rows used of {rows['read']:,} read)",
        f"- its dataset card: `{card}`" if card else "- its dataset card: none beside the subset",
        "",
        "## Training",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    settings = record["hyperparameters"]
    # A setting with a value in effect (learning_rate_effective: the objective's default when unset) shows that.
    names = card_settings(record["objective"])
    shown = [f"{name}_effective" if f"{name}_effective" in settings else name for name in names]
    lines += [f"| {name} | {settings[name]} |" for name in shown if name in settings]
    training = record["training"]
    lines += [
        f"| steps | {training['steps']} |",
        f"| train loss (first / last logged) | {training['first_loss']} / {training['last_loss']} |",
        f"| trainable parameters | {training['trainable_parameters']:,} |",
        f"| tokens trained (real, no padding) | {record['compute']['tokens']['trained']:,} |",
        f"| compute (estimated, `paser.recovery.flops`) | {record['compute']['flops']['total']:.3g} FLOPs |",
        f"| dtype, device | {record['dtype']}, {record['device']} |",
        "",
        "## Sparsity",
        "",
    ]
    kept = record["sparsity"]
    if kept["masked"]:
        kept_how = "held at zero through every training step" if full else "set back to zero after merging"
        lines.append(
            f"The pruned weights were {kept_how} ({kept['reason']}): sparsity "
            f"{_percent(kept['total_before'])} before training, {_percent(kept['total_after_remask'])} in "
            "these weights. `sparsity.json` in the folder above has it per layer."
        )
    else:
        lines.append(
            f"No mask was re-applied ({kept['reason']}): sparsity {_percent(kept['total_before'])} before "
            f"training, {_percent(kept['total_after_merge'])} after merging."
        )
    lines += ["", "`recovery.json` in this folder holds the full record.", ""]
    return "\n".join(lines)
