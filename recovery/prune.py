"""Pruning a causal LM into a plain Hugging Face checkpoint.

Pruners are registered by name with `register_pruner`; each takes `(model, target, calibration, **options)`,
prunes the model in place and returns extra fields for the record written to `pruning.json`. This module holds
the target (`PruneTarget`: a sparsity, an N:M pattern, or a fraction of blocks to drop), the N:M helpers every
weight pruner shares, and magnitude pruning (the baseline of the Wanda and SparseGPT papers: smallest |W|
within each linear layer of the decoder, embeddings and lm_head kept). Wanda and SparseGPT live in
`paser.recovery.wanda` and `paser.recovery.sparsegpt`, block removal in `paser.recovery.layer_drop`, channel and
head removal in `paser.recovery.width`; `PRUNERS` declares them by module and imports one on its first lookup,
so importing this module stays cheap and free of import cycles. The zeros of a pruned checkpoint are its mask:
nothing else is stored.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from paser.common.registry import Registry
from paser.recovery.models import linear_sparsity, load_model, max_positions, prunable_linears, save_checkpoint

Pruner = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class PruneTarget:
    """How much to prune: exactly one of an unstructured `sparsity`, an N:M `pattern`, a block `drop` fraction, or
    a width `ratio`.

    `sparsity`: fraction of the weights of every prunable linear layer set to zero, in (0, 1).
    `pattern`: (N, M) with 0 < N < M: at most N of every M consecutive input weights of a row stay non-zero
    (N kept per group, as in the Wanda/SparseGPT papers and NVIDIA's 2:4).
    `drop`: fraction of decoder blocks removed, in (0, 1) (structured layer drop).
    `ratio`: fraction of the MLP channels and attention heads of every block removed, in (0, 1) (width pruning).
    """

    sparsity: float | None = None
    pattern: tuple[int, int] | None = None
    drop: float | None = None
    ratio: float | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("sparsity", "pattern", "drop", "ratio") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of sparsity, pattern, drop or ratio; got {', '.join(given) or 'none'}")
        for name in ("sparsity", "drop", "ratio"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.pattern is not None:
            kept, group = self.pattern
            if not 0 < kept < group:
                raise ValueError(f"N:M pattern needs 0 < N < M (N weights kept per group of M), got {kept}:{group}")

    @classmethod
    def from_args(
        cls,
        sparsity: float | None = None,
        pattern: str | None = None,
        drop: float | None = None,
        ratio: float | None = None,
    ) -> PruneTarget:
        """The target from command-line style values; `pattern` is "N:M" (e.g. "2:4"). Refuses malformed values."""
        parsed_pattern = None
        if pattern is not None:
            parts = pattern.split(":")
            if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
                raise ValueError(f"pattern must look like N:M (e.g. 2:4), got {pattern!r}")
            parsed_pattern = (int(parts[0]), int(parts[1]))
        return cls(sparsity=sparsity, pattern=parsed_pattern, drop=drop, ratio=ratio)

    @property
    def kind(self) -> str:
        """ "sparsity", "pattern", "drop" or "ratio": which field is set."""
        return next(name for name in ("sparsity", "pattern", "drop", "ratio") if getattr(self, name) is not None)

    @property
    def fraction_pruned(self) -> float:
        """The fraction of weights (sparsity, pattern), of decoder blocks (drop) or of channels and heads (ratio)
        removed."""
        if self.pattern is not None:
            kept, group = self.pattern
            return (group - kept) / group
        return getattr(self, self.kind)

    @property
    def density(self) -> float:
        """The fraction kept: 1 - `fraction_pruned`."""
        return 1.0 - self.fraction_pruned

    def describe(self) -> str:
        """A short label: "50%", "2:4", "drop 25%" or "width 20%"."""
        if self.pattern is not None:
            return f"{self.pattern[0]}:{self.pattern[1]}"
        if self.sparsity is not None:
            return f"{self.sparsity * 100:g}%"
        if self.drop is not None:
            return f"drop {self.drop * 100:g}%"
        return f"width {self.ratio * 100:g}%"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in `pruning.json`: the set field, the pattern as "N:M", and the label."""
        value: Any = self.describe() if self.pattern is not None else getattr(self, self.kind)
        return {self.kind: value, "fraction_pruned": self.fraction_pruned, "label": self.describe()}


# The target of a weight pruner given none: half of every prunable layer's weights, as the papers' main setting.
HALF_OF_THE_WEIGHTS = PruneTarget(sparsity=0.5)


@dataclass(frozen=True)
class RegisteredPruner:
    """A pruning function, whether it needs calibration token ids, and `default_target`: the target it prunes to
    when none is given (None: it needs one, e.g. a block `drop` or a width `ratio`)."""

    function: Pruner
    needs_calibration: bool
    default_target: PruneTarget | None = None


# The built-in methods outside this module, by the module that registers each when imported.
PRUNERS: Registry[RegisteredPruner] = Registry(
    "pruning method",
    builtins={
        "wanda": "paser.recovery.wanda",
        "sparsegpt": "paser.recovery.sparsegpt",
        "layer_drop": "paser.recovery.layer_drop",
        "width": "paser.recovery.width",
    },
)


def register_pruner(
    name: str, needs_calibration: bool = False, default_target: PruneTarget | None = None
) -> Callable[[Pruner], Pruner]:
    """Register `fn(model, target: PruneTarget, calibration: Tensor | None, **options) -> dict` as method `name`.

    The function prunes in place and returns fields to merge into the `pruning.json` record. With
    `needs_calibration`, `prune_model` refuses to call it without calibration token ids. Refuses a name
    registered twice.
    """

    def decorator(function: Pruner) -> Pruner:
        PRUNERS.register(name, RegisteredPruner(function, needs_calibration, default_target))
        return function

    return decorator


def known_methods() -> list[str]:
    """The names of all registered pruning methods, sorted (the built-ins are listed without importing them)."""
    return PRUNERS.names()


def default_target(name: str) -> PruneTarget | None:
    """What method `name` prunes to when no target is given (e.g. 50% for a weight pruner), or None when it needs
    one; refuses an unknown name as `known_methods` lists."""
    return PRUNERS.get(name).default_target


def get_pruner(name: str) -> Pruner:
    """The registered pruner `name`; unknown names raise ValueError listing the known ones."""
    return PRUNERS.get(name).function


def needs_calibration(name: str) -> bool:
    """Whether method `name` needs calibration token ids; unknown names raise ValueError listing the known ones."""
    return PRUNERS.get(name).needs_calibration


def check_pattern(layer_name: str, in_features: int, pattern: tuple[int, int]) -> None:
    """Refuse an N:M pattern whose group size M does not divide the layer's input width (groups run along inputs)."""
    kept, group = pattern
    if in_features % group:
        raise ValueError(
            f"pattern {kept}:{group} does not fit layer {layer_name}: its input width {in_features} "
            f"is not a multiple of {group}"
        )


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


@register_pruner("magnitude", default_target=HALF_OF_THE_WEIGHTS)
def magnitude_prune(model: torch.nn.Module, target: PruneTarget, calibration: torch.Tensor | None) -> dict[str, Any]:
    """Magnitude-prune every prunable linear layer in place (`magnitude_prune_layer`); calibration is unused.

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
    effective_options = _effective_options(method, registered.function, options)
    if registered.needs_calibration and calibration is None:
        raise ValueError(f"method {method!r} needs calibration token ids (a [windows, tokens] tensor)")
    started = time.perf_counter()
    fields = registered.function(model, target, calibration, **options)
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


# PruneSpec fields of width pruning, hashed only when set (`PruneSpec.hash_inputs`).
WIDTH_FIELDS = ("ratio", "importance")


@dataclass
class PruneSpec:
    """What `paser prune` does and a run's `models.prune` says: a method, its target (or the method's default),
    the calibration and the device; `apply` prunes a checkpoint into a folder."""

    method: str = field(
        default="wanda", metadata={"help": "A registered pruning method (`paser prune --help` lists them)."}
    )
    sparsity: float | None = field(default=None, metadata={"help": "Unstructured fraction in (0, 1)."})
    pattern: str | None = field(default=None, metadata={"help": "N:M pattern, e.g. 2:4."})
    drop: float | None = field(default=None, metadata={"help": "layer_drop: fraction of blocks."})
    ratio: float | None = field(
        default=None, metadata={"help": "width: fraction of MLP channels and attention heads removed per block."}
    )
    importance: str | None = field(default=None, metadata={"help": "width: activation (default), taylor or random."})
    calibration: str | None = field(
        default=None, metadata={"help": "Calibration text: a corpus file, a .txt file, demo, wikitext2 or c4."}
    )
    calibration_samples: int = field(default=128, metadata={"help": "Calibration windows."})
    seqlen: int | None = field(default=None, metadata={"help": "Tokens per calibration window."})
    seed: int = field(default=0, metadata={"help": "Seed of the calibration draw."})
    device: str | None = field(default=None, metadata={"help": "cuda or cpu; default: cuda if present."})

    def target(self) -> Any:
        """The target given, or with none the method's declared default (`default_target`)."""
        unset = self.sparsity is None and self.pattern is None and self.drop is None and self.ratio is None
        if unset and default_target(self.method) is not None:
            return default_target(self.method)
        return PruneTarget.from_args(sparsity=self.sparsity, pattern=self.pattern, drop=self.drop, ratio=self.ratio)

    def hash_inputs(self) -> dict[str, Any]:
        """The spec as the prune stage hashes it: `ratio` and `importance` (added after runs were cached) count
        only when set, so those runs keep their hashes."""
        fields = asdict(self)
        return {name: value for name, value in fields.items() if value is not None or name not in WIDTH_FIELDS}

    def apply(self, model: str, out: Path) -> dict[str, Any]:
        """Prune `model` as this spec says into `out` (`prune_checkpoint`); returns its record."""
        return prune_checkpoint(
            model,
            self.method,
            self.target(),
            Path(out),
            device=self.device,
            calibration_source=self.calibration,
            calibration_samples=self.calibration_samples,
            calibration_seqlen=self.seqlen,
            seed=self.seed,
            **({"importance": self.importance} if self.importance is not None else {}),
        )
