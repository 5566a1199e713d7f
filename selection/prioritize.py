"""Ranking inside a cluster: the instruction efficiency score (IES).

PASER ranks a cluster's rows by `IES_i = CDS_i / log(cost_i)`, where `cost_i` is the training cost of the
row. The paper takes `cost_i = (prompt tokens + response tokens)²` (attention is quadratic in length), so
long rows need proportionally more degradation to be worth their compute.

`damage_density` is an alternative ranking: a row's summed response-token JSD (`CDS_i · response_i`, the damage
its loss tokens cover) per training token (`prompt_i + response_i`). Taking rows in this order is the greedy
(fractional-knapsack) answer to "cover the most measured damage within a token budget"; IES instead divides a
per-token mean by a log cost, so it prefers short, prompt-heavy rows whose few loss tokens carry the budget's
compute with little supervision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from paser.common.registry import check_name

COST_KINDS = ("squared", "linear")


def sample_cost(prompt_tokens: np.ndarray, response_tokens: np.ndarray, kind: str = "squared") -> np.ndarray:
    """Training cost of each row, in tokens (`"linear"`: p + r) or tokens² (`"squared"`, the paper: (p + r)²).

    Returns a float64 array. Refuses an unknown `kind` (listing the known ones), mismatched shapes, and
    token counts that are negative, non-integral or non-finite.
    """
    check_name("cost kind", kind, COST_KINDS)
    prompt = _token_counts(prompt_tokens, "prompt_tokens")
    response = _token_counts(response_tokens, "response_tokens")
    if prompt.shape != response.shape:
        raise ValueError(f"prompt_tokens and response_tokens differ in shape: {prompt.shape} vs {response.shape}")
    total = prompt + response
    return total**2 if kind == "squared" else total


def efficiency_score(
    cds: np.ndarray, prompt_tokens: np.ndarray, response_tokens: np.ndarray, cost: str = "squared"
) -> np.ndarray:
    """Instruction efficiency score `IES_i = cds_i / log(cost_i)` (as in the paper; natural log).

    `cds` is the per-row capability degradation score (mean response-token JSD, nats). Returns a float64
    array in nats per log-cost unit. Refuses non-finite `cds`, shape mismatches, and rows whose cost is
    <= 1 (a log-cost <= 0 would flip or blow up the ranking), naming how many and the first offender.
    """
    costs = sample_cost(prompt_tokens, response_tokens, kind=cost)
    cds = _checked_cds(cds, costs.shape)
    too_cheap = np.flatnonzero(costs <= 1)
    if too_cheap.size:
        raise ValueError(
            f"{too_cheap.size} row(s) have cost <= 1 ({cost}), so log(cost) <= 0 and IES is undefined; "
            f"first at position {too_cheap[0]} (prompt + response tokens must be >= 2)"
        )
    return cds / np.log(costs)


def damage_density(cds: np.ndarray, prompt_tokens: np.ndarray, response_tokens: np.ndarray) -> np.ndarray:
    """`cds_i · response_i / (prompt_i + response_i)`: each row's summed response JSD per training token.

    `cds` is the per-row mean response-token JSD (nats), so `cds · response` is the row's total. Returns a float64
    array (nats per training token). Refuses non-finite `cds`, shape mismatches, and rows with no tokens.
    """
    total = sample_cost(prompt_tokens, response_tokens, kind="linear")
    cds = _checked_cds(cds, total.shape)
    response = np.asarray(response_tokens, dtype=np.float64)  # validated by sample_cost
    empty = np.flatnonzero(total == 0)
    if empty.size:
        raise ValueError(f"{empty.size} row(s) have no tokens; first at position {empty[0]}")
    return cds * response / total


def rank_within_cluster(scores: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Positions of `scores` ordered by descending score; equal scores are ordered by ascending id string.

    Returns an int64 array, a permutation of `range(len(scores))`. Refuses NaN scores and length mismatches.
    """
    scores = np.asarray(scores, dtype=np.float64)
    id_array = np.asarray(ids, dtype=str)
    if scores.ndim != 1 or id_array.shape != scores.shape:
        raise ValueError(f"scores and ids must be 1-D of the same length, got {scores.shape} and {id_array.shape}")
    if np.any(np.isnan(scores)):
        raise ValueError("scores must not be NaN")
    # lexsort sorts by the last key first: descending score, then id.
    return np.lexsort((id_array, -scores)).astype(np.int64)


def _checked_cds(cds: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`cds` as float64, refused when not finite or not of the token counts' `shape`."""
    cds = np.asarray(cds, dtype=np.float64)
    if not np.all(np.isfinite(cds)):
        raise ValueError("cds must be finite")
    if cds.shape != shape:
        raise ValueError(f"cds and token counts differ in shape: {cds.shape} vs {shape}")
    return cds


def _token_counts(values: np.ndarray, name: str) -> np.ndarray:
    counts = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts != np.floor(counts)):
        raise ValueError(f"{name} must be non-negative whole token counts")
    return counts
