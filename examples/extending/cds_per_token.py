"""A selection strategy in one file: the rows whose degradation per training token is highest.

Load it with `--plugin examples/extending/cds_per_token.py` (or `plugins: [...]` in a config), then select with
`--strategy cds_per_token`, or list it in a `paser run` sweep's `selection.strategies`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from paser.selection.allocate import TokenBudget, take_within_tokens
from paser.selection.strategies import SelectionInputs, SelectionResult, register_strategy, row_tokens


@register_strategy("cds_per_token")
@dataclass
class CdsPerTokenStrategy:
    """CDS / (prompt + response tokens), highest first (ties by id); under a token budget, rows in that order
    while the next fits."""

    name: ClassVar[str]
    # The table columns it reads: paser checks them and scores what they need (see `Strategy`).
    requires_columns: ClassVar[tuple[str, ...]] = ("id", "cds", "prompt_tokens", "response_tokens")

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        table = inputs.table
        tokens = row_tokens(table)
        ranked = table.assign(score=table["cds"] / tokens).sort_values(["score", "id"], ascending=[False, True])
        order = ranked.index.to_numpy()
        rows = take_within_tokens(order, tokens, budget) if isinstance(budget, TokenBudget) else order[:budget]
        return SelectionResult(
            ids=table["id"].to_numpy(dtype=str)[rows].tolist(), clusters=None, stats={"strategy": self.name}
        )
