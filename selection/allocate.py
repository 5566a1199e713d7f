"""Budgets: what a user may ask for, resolution to rows, per-cluster allocation, taking rows within tokens.

A budget is rows (a fraction in (0, 1] of the valid rows, or a row count) or training tokens (`TokenBudget`,
written `200000t`): strategies can then be compared at equal rows or at equal compute, which differ because
PASER's IES ranking favours short rows.

PASER gives each cluster a share of the budget proportional to its cluster CDS (the mean capability
degradation score of its rows): `n_k = B · CDS_k / Σ_j CDS_j`, in rows or in tokens. The paper floors `n_k`
and so loses rows; here the shares are rounded by largest remainder so that `Σ n_k = B` exactly, and a
cluster too small for its share hands the rest to the others in proportion to their weights (water-filling).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

TOKEN_BUDGET = re.compile(r"([0-9]+)t")


@dataclass(frozen=True)
class TokenBudget:
    """A budget in training tokens: the chosen rows' prompt + response tokens as the scorer counted them (under
    its template, after its truncation to `formatting.max_length`), which is what SFT forwards. Rows are whole,
    so a selection's total is at most `tokens`, not exactly `tokens`. Written `200000t` (`str` gives that back).
    Refuses `tokens` that is not an int >= 1."""

    tokens: int

    def __post_init__(self) -> None:
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, numbers.Integral) or self.tokens < 1:
            raise ValueError(f"a token budget must be a whole number of tokens >= 1, got {self.tokens!r}")

    def __str__(self) -> str:
        return f"{self.tokens}t"


def parse_budget(value: float | int | str | TokenBudget, key: str = "budget") -> float | int | TokenBudget:
    """A budget as written in a config or on the command line: a number is a row budget (a fraction in (0, 1]
    or a count >= 1, returned as given; `resolve_budget` turns it into rows), `"<int>t"` a `TokenBudget`.

    Refuses (ValueError naming `key`) any other string, a token count < 1 and what `resolve_budget` refuses.
    """
    if isinstance(value, TokenBudget):
        return value
    if isinstance(value, str):
        match = TOKEN_BUDGET.fullmatch(value.strip())
        if match is None or int(match.group(1)) < 1:
            raise ValueError(
                f"{key}: {value!r} is not a budget; give a fraction of the rows in (0, 1] (0.1), a row count "
                "(5000) or a number of training tokens >= 1 followed by t (200000t)"
            )
        return TokenBudget(int(match.group(1)))
    try:
        resolve_budget(value, 2**62)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from error
    return value


def is_one_row(budget: object) -> bool:
    """Whether `budget` is the row count 1, an int: the one number whose float spelling (1.0, the fraction) means
    something else, every row. Whatever stores or names a budget keeps the two apart with it."""
    return isinstance(budget, numbers.Integral) and not isinstance(budget, bool) and budget == 1


def resolve_budget(budget: float | int, n_rows: int) -> int:
    """Turn a user budget into a row count.

    A float in (0, 1] is a fraction of `n_rows`, rounded half-up to the nearest row and at least 1 (so
    `1.0` means every row, while the int `1` means one row). An int >= 1 (or an integral float > 1, such as
    `500.0`) is a row count. A count above `n_rows` is capped at `n_rows`; the caller reports the cap.

    Returns the number of rows to select, in `[1, n_rows]`. Refuses bools, non-numbers, NaN/inf, budgets
    <= 0, non-integral floats > 1 and `n_rows < 1`.
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, numbers.Integral) or n_rows < 1:
        raise ValueError(f"n_rows must be an int >= 1 (there must be rows to select from), got {n_rows!r}")
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise ValueError(f"budget must be a fraction in (0, 1] or a row count >= 1, got {budget!r}")
    if isinstance(budget, numbers.Integral):
        if budget < 1:
            raise ValueError(f"budget as a row count must be >= 1, got {budget}")
        return int(min(int(budget), n_rows))
    value = float(budget)
    if not math.isfinite(value):
        raise ValueError(f"budget must be finite, got {budget!r}")
    if value <= 0:
        raise ValueError(f"budget must be > 0, got {budget!r}")
    if value <= 1:
        return max(1, min(n_rows, math.floor(value * n_rows + 0.5)))
    if not value.is_integer():
        raise ValueError(
            f"budget {budget!r} is neither a fraction in (0, 1] nor a whole row count; "
            "pass e.g. 0.1 for 10% of the rows or 5000 for 5,000 rows"
        )
    return int(min(int(value), n_rows))


def take_within_tokens(order: np.ndarray, row_tokens: np.ndarray, budget: TokenBudget) -> np.ndarray:
    """The rows a token budget buys, walking `order` (row positions, best first): rows are taken until the next
    one would take the total over `budget.tokens`, so the total is at most the budget. A row larger than the
    whole budget could never be taken: it is passed over rather than ending the walk. `row_tokens[i]` is row
    i's tokens (`paser.selection.strategies.row_tokens`).

    Returns the taken positions (int64), in `order`'s order.
    """
    order = np.asarray(order, dtype=np.int64)
    costs = np.asarray(row_tokens, dtype=np.int64)[order]
    fits = costs <= budget.tokens
    taken = np.searchsorted(np.cumsum(costs[fits]), budget.tokens, side="right")
    return order[fits][:taken]


def allocate_budget(weights: np.ndarray, capacities: np.ndarray, budget: int) -> np.ndarray:
    """Split `budget` rows over clusters in proportion to `weights`, never beyond `capacities`.

    `weights[k]` is cluster k's claim (PASER: its cluster CDS; any non-negative number), `capacities[k]`
    the most rows it can give (its size). Shares are computed in exact rational arithmetic, so the result
    depends only on the inputs, not on float rounding:

    1. Water-filling: each unsaturated positive-weight cluster gets `rest · w_k / Σ w_unsaturated`; a
       cluster whose share reaches its capacity is filled to capacity and the rest is re-split over the
       others, until no share exceeds a capacity.
    2. Largest remainder: shares are floored and the leftover rows go, one each, to the largest fractional
       parts (ties to the lower cluster index).
    3. Zero-weight clusters get nothing while a positive-weight cluster has room; once all are full, the
       remainder is spread in proportion to the remaining capacity (the same rule when all weights are 0).

    Returns an int64 array, one count per cluster, with `sum == min(budget, capacities.sum())` exactly and
    every entry `<= capacities`. Refuses non-1-D or mismatched shapes, negative or non-finite weights,
    negative or non-integral capacities and a negative or non-integral budget.
    """
    weights = np.asarray(weights)
    capacities = np.asarray(capacities)
    if weights.ndim != 1 or capacities.ndim != 1 or weights.shape != capacities.shape:
        raise ValueError(
            f"weights and capacities must be 1-D arrays of the same length, got shapes {weights.shape} "
            f"and {capacities.shape}"
        )
    if not np.issubdtype(weights.dtype, np.number) or not np.all(np.isfinite(weights)):
        raise ValueError("weights must be finite numbers")
    if np.any(weights < 0):
        raise ValueError(f"weights must be >= 0, got negative weights at clusters {np.flatnonzero(weights < 0)}")
    if not np.issubdtype(capacities.dtype, np.number) or not np.all(np.isfinite(capacities)):
        raise ValueError("capacities must be finite numbers")
    if np.any(capacities < 0) or np.any(capacities != np.floor(capacities)):
        raise ValueError("capacities must be non-negative whole numbers of rows")
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 0:
        raise ValueError(f"budget must be an int >= 0, got {budget!r}")

    capacity = [int(c) for c in capacities]
    allocation = [0] * len(capacity)
    remaining = min(int(budget), sum(capacity))
    positive = [k for k in range(len(capacity)) if weights[k] > 0]
    remaining = _water_fill({k: Fraction(float(weights[k])) for k in positive}, capacity, allocation, remaining)
    if remaining > 0:
        # Every positive-weight cluster is full: spread what is left over the clusters with room, in
        # proportion to that room (this is also the all-zero-weights case).
        room = {k: Fraction(capacity[k] - allocation[k]) for k in range(len(capacity)) if capacity[k] > allocation[k]}
        remaining = _water_fill(room, capacity, allocation, remaining)
    assert remaining == 0, "allocation left rows unassigned although capacity remained"
    return np.asarray(allocation, dtype=np.int64)


def _water_fill(weights: dict[int, Fraction], capacity: list[int], allocation: list[int], rows: int) -> int:
    """Add up to `rows` rows to `allocation` (in place) over the clusters in `weights`; returns rows left."""
    active = {k: w for k, w in weights.items() if capacity[k] > allocation[k]}
    while rows > 0 and active:
        total_weight = sum(active.values())
        shares = {k: rows * w / total_weight for k, w in active.items()}
        saturated = [k for k, share in shares.items() if share >= capacity[k] - allocation[k]]
        if saturated:
            for k in saturated:
                rows -= capacity[k] - allocation[k]
                allocation[k] = capacity[k]
                del active[k]
            continue
        floors = {k: math.floor(share) for k, share in shares.items()}
        leftover = rows - sum(floors.values())
        by_remainder = sorted(active, key=lambda k: (-(shares[k] - floors[k]), k))
        for k in active:
            allocation[k] += floors[k]
        # No share reached its room, so floor + 1 still fits.
        for k in by_remainder[:leftover]:
            allocation[k] += 1
        rows = 0
    return rows
