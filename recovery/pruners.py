"""The pruning methods by name and what they prune to: the light half of pruning, which imports no torch.

`PruneTarget` says how much (a sparsity, an N:M pattern, a fraction of blocks to drop, or a width ratio);
`PRUNERS` holds the methods: the built-ins (magnitude in `paser.recovery.prune`, Wanda in
`paser.recovery.wanda`, SparseGPT in `paser.recovery.sparsegpt`, block removal in `paser.recovery.layer_drop`,
channel and head removal in `paser.recovery.width`) declared here with what they need and imported on first use,
and what a plug-in registers with `register_pruner`. `paser.recovery.prune` prunes a model with them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paser.common.registry import Registry

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
    """A pruning method: its function, whether it needs calibration token ids, and `default_target`: the target it
    prunes to when none is given (None: it needs one, e.g. a block `drop` or a width `ratio`). A built-in's
    function is given by where it lives ("module:function") and imported on first use (`load`)."""

    function: Pruner | str
    needs_calibration: bool
    default_target: PruneTarget | None = None

    def load(self) -> Pruner:
        """The pruning function, imported if it is given by where it lives."""
        if callable(self.function):
            return self.function
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


# The built-in methods, declared with what they need: the CLI lists them and says which need calibration without
# importing their code (and torch).
PRUNERS: Registry[RegisteredPruner] = Registry("pruning method")
for _name, _pruner in {
    "magnitude": RegisteredPruner("paser.recovery.prune:magnitude_prune", False, HALF_OF_THE_WEIGHTS),
    "wanda": RegisteredPruner("paser.recovery.wanda:wanda_prune", True, HALF_OF_THE_WEIGHTS),
    "sparsegpt": RegisteredPruner("paser.recovery.sparsegpt:sparsegpt_prune", True, HALF_OF_THE_WEIGHTS),
    "layer_drop": RegisteredPruner("paser.recovery.layer_drop:layer_drop_prune", True),
    "width": RegisteredPruner("paser.recovery.width:width_prune", True),
}.items():
    PRUNERS.register(_name, _pruner)


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
    """The names of all registered pruning methods, sorted (nothing is imported)."""
    return PRUNERS.names()


def default_target(name: str) -> PruneTarget | None:
    """What method `name` prunes to when no target is given (e.g. 50% for a weight pruner), or None when it needs
    one; refuses an unknown name as `known_methods` lists."""
    return PRUNERS.get(name).default_target


def get_pruner(name: str) -> Pruner:
    """The registered pruner `name`; unknown names raise ValueError listing the known ones."""
    return PRUNERS.get(name).load()


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
