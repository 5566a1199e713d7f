"""Intervals for a sweep's numbers, as plain functions on arrays (`paser.pipelines.uncertainty` applies them to a run).

A recovered model's score varies with the seed (which rows are selected, how the clusters fall, the LoRA
initialisation and data order) and with the test set (a finite sample of items: questions, held-out rows,
perplexity windows). Three tools:

- `t_interval`: mean, sample standard deviation and the Student-t interval of the mean over seeds. It treats
  the seeds as a sample of run-to-run variation; the test items are held fixed.
- `item_totals`: column sums of per-item values under bootstrap draws of the items. Every column (every model
  scored on the same items) sees the same draws, so differences between models are paired item by item.
- `bootstrap_paired_difference`: a percentile bootstrap interval of mean over seeds of (a − b), the seeds
  paired. From per-seed values alone it resamples seeds; given each seed's values under `item_totals` draws
  it resamples seeds on top of those draws: a two-level (seeds, then items) bootstrap.

Every bootstrap is seeded: the same inputs give the same interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
RESAMPLES = 2000
# Bound on the (resamples × items) draw matrix `item_totals` holds at once (4M int64s: 32 MiB).
_DRAW_CELLS = 4_000_000


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample standard deviation (ddof=1) and the t-interval [lo, hi] of the mean over `n` seeds."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval [lo, hi] (NaN where there is nothing to resample)."""

    estimate: float
    lo: float
    hi: float


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def t_interval(values: np.ndarray | list[float], confidence: float = CONFIDENCE) -> SeedSummary:
    """Mean ± t_{(1+confidence)/2, n−1} · sd / √n over the values (one per seed).

    With one value the mean alone (sd, lo, hi NaN); with none, all NaN. Refuses NaN values (drop missing seeds
    first) and a confidence outside (0, 1) (ValueError).
    """
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64).ravel()
    if np.isnan(values).any():
        raise ValueError("t_interval got NaN values; drop the missing seeds first")
    n = len(values)
    if n == 0:
        return SeedSummary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(values.mean())
    if n == 1:
        return SeedSummary(1, mean, math.nan, math.nan, math.nan)
    sd = float(values.std(ddof=1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return SeedSummary(n, mean, sd, mean - half, mean + half)


def item_totals(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Column sums of `values` (items × columns, or one column as a vector) over `resamples` bootstrap draws of
    the items (with replacement, as many as there are): an array (resamples × columns).

    All columns see the same draws, and the draws depend only on (number of items, resamples, seed): two calls
    on equally many items draw the same items, so models scored on one test set stay paired across calls.
    Refuses an empty item set and resamples < 1 (ValueError).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    items = values.shape[0]
    if items == 0:
        raise ValueError("item_totals needs at least one item")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    generator = np.random.default_rng([seed, items])
    totals = np.empty((resamples, values.shape[1]))
    chunk = max(1, _DRAW_CELLS // items)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = generator.integers(0, items, size=(size, items)) + items * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * items).reshape(size, items)
        totals[start : start + size] = counts @ values
    return totals


def bootstrap_paired_difference(
    first: np.ndarray | list[float],
    second: np.ndarray | list[float],
    *,
    first_items: np.ndarray | None = None,
    second_items: np.ndarray | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Interval:
    """The mean over seeds of first − second (one value per seed, the seeds paired) and its percentile bootstrap
    interval.

    Without item values, each resample draws the seeds with replacement (a seeds-only bootstrap; with two seeds
    it can only span the two differences, and with one there is no interval: NaN). With `first_items` and
    `second_items` (resamples × seeds: each seed's metric recomputed under the same item draws, from
    `item_totals`), resample r draws the seeds with replacement and averages their differences under item draw
    r: seeds and items are both resampled, and with one seed the interval is the items' alone. The test items
    are one set shared by every seed, so one item draw serves every seed of a resample (a crossed design), not
    a fresh draw per seed, which would understate the items' share. Refuses mismatched shapes, no seed, NaN
    values and a confidence outside (0, 1) (ValueError).
    """
    _check_confidence(confidence)
    first = np.asarray(first, dtype=np.float64).ravel()
    second = np.asarray(second, dtype=np.float64).ravel()
    if first.shape != second.shape or len(first) == 0:
        raise ValueError(f"need one value per seed on both sides, got {len(first)} and {len(second)}")
    if np.isnan(first).any() or np.isnan(second).any():
        raise ValueError("bootstrap_paired_difference got NaN values; drop the unpaired seeds first")
    seeds = len(first)
    estimate = float(np.mean(first - second))
    if (first_items is None) != (second_items is None):
        raise ValueError("give item values for both sides or for neither")
    if first_items is None:
        if seeds < 2:
            return Interval(estimate, math.nan, math.nan)
        differences = np.broadcast_to(first - second, (resamples, seeds))
    else:
        first_items = np.asarray(first_items, dtype=np.float64)
        second_items = np.asarray(second_items, dtype=np.float64)
        if first_items.shape != second_items.shape or first_items.ndim != 2 or first_items.shape[1] != seeds:
            raise ValueError(
                f"item values must be (resamples × {seeds} seeds) on both sides, got {first_items.shape} "
                f"and {second_items.shape}"
            )
        differences = first_items - second_items
        resamples = differences.shape[0]
    generator = np.random.default_rng([seed, seeds, resamples])
    drawn = generator.integers(0, seeds, size=(resamples, seeds))
    means = np.take_along_axis(differences, drawn, axis=1).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(estimate, float(lo), float(hi))
