"""Intervals for a sweep's numbers, as plain functions on arrays (`paser.pipelines.analysis.uncertainty` applies
them to a run).

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
- `paired_tests`: two seed-level tests of "mean over seeds of (a − b) is 0": Student's paired t and the
  sign-flip permutation test (exact over all 2^n sign patterns up to `EXACT_SIGN_FLIPS` seeds, seeded Monte
  Carlo beyond). These are what a verdict rests on (`paser.pipelines.analysis.uncertainty.verdict`): the seeds are the
  units that were re-run, so they are what a claim about "this strategy, re-run" can be tested on. A
  bootstrap over two or three seeds spans roughly the spread of their differences, so its interval excludes
  0 whenever the seeds agree in sign, which a null dominated by seed noise does a quarter of the time with
  three seeds.

What n seeds can show. The sign-flip test assumes only that, under the null, each seed's difference is as
likely to be +d as −d; its p-values are multiples of 2/2^n, so its smallest two-sided p is 2/2^n: 0.25 with
three seeds, 0.125 with four, 0.0625 with five (every seed agreeing in sign), 0.03125 with six. With five seeds
it can therefore never reach p < 0.05; its role is to insist that every seed agrees, while the t-test (which
also assumes the differences are roughly normal) weighs how far from 0 they are against their spread. Under
the verdict rule (t p < 0.05 and every seed agreeing) five seeds of normal differences call a true difference of
2 standard deviations of the per-seed difference about 87% of the time, 1.5 sd 65%, 1 sd 36%, and a null one
"better" or "worse" about 3.6% of the time (simulated, 4,000 draws each). A difference smaller than the seeds'
spread comes out "unclear", which is not "no effect"; and five seeds of one setting say nothing about other
corpora, models or budgets.

Every bootstrap and Monte Carlo draw is seeded: the same inputs give the same interval and p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
RESAMPLES = 2000
# Up to this many seeds the sign-flip test enumerates every sign pattern (2^16 = 65,536); beyond, it draws
# SIGN_FLIP_DRAWS seeded patterns.
EXACT_SIGN_FLIPS = 16
SIGN_FLIP_DRAWS = 100_000
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
class PairedTests:
    """Seed-level tests of "the mean over `n` paired seeds of first − second is 0", both two-sided.

    `t_p`: Student's paired t-test. `permutation_p`: the sign-flip test of the mean difference, over `sign_flips`
    sign patterns (`permutation` "exact": all 2^n of them; "monte carlo": that many seeded draws).
    `smallest_p`: the smallest p-value the sign-flip test can give here (2/2^n exact, 1/(draws + 1) by Monte
    Carlo). All p-values are NaN with fewer than two seeds.
    """

    n: int
    mean: float
    t_p: float
    permutation_p: float
    permutation: str
    sign_flips: int
    smallest_p: float


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


def paired_t_p(differences: np.ndarray | list[float]) -> float:
    """The two-sided p-value of Student's one-sample t-test of mean(differences) = 0 (the paired t-test of
    first − second, `scipy.stats.ttest_1samp`), n − 1 degrees of freedom.

    Differences that are all equal have no spread: p is 0 where they are not 0 (every seed moved by the same
    amount) and 1 where they are. NaN with fewer than two values. Refuses NaN values (ValueError).
    """
    differences = _differences(differences)
    if len(differences) < 2:
        return math.nan
    if np.all(differences == differences[0]):
        return 0.0 if differences[0] != 0 else 1.0
    return float(scipy_stats.ttest_1samp(differences, 0.0).pvalue)


def sign_flip_p(
    differences: np.ndarray | list[float],
    *,
    exact_up_to: int = EXACT_SIGN_FLIPS,
    draws: int = SIGN_FLIP_DRAWS,
    seed: int = 0,
) -> tuple[float, str, int]:
    """The two-sided p-value of the sign-flip permutation test of mean(differences) = 0, and how it was computed:
    (p, "exact" or "monte carlo", sign patterns used).

    Under the null each difference is as likely to be +d as −d, so every pattern of signs is equally likely.
    Up to `exact_up_to` values every one of the 2^n patterns is enumerated and p is the share whose |Σ ± d| is
    at least the observed |Σ d| (ties within float rounding count); beyond, `draws` patterns are drawn with a
    generator seeded by (`seed`, n) and p = (1 + at least as extreme) / (1 + draws), which is never 0. NaN with
    fewer than two values. Refuses NaN values and draws < 1 (ValueError).
    """
    differences = _differences(differences)
    n = len(differences)
    if n < 2:
        return math.nan, "exact", 0
    observed = abs(differences.sum())
    # Sums of the same floats in another order differ by rounding: count those as ties, not as less extreme.
    tolerance = 1e-9 * float(np.abs(differences).sum())
    if n <= exact_up_to:
        patterns = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n) & 1
        extreme = int((np.abs((1 - 2 * patterns) @ differences) >= observed - tolerance).sum())
        return extreme / 2**n, "exact", 2**n
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    generator = np.random.default_rng([seed, n])
    extreme = 0
    chunk = max(1, _DRAW_CELLS // n)
    for start in range(0, draws, chunk):
        signs = 1 - 2 * generator.integers(0, 2, size=(min(chunk, draws - start), n))
        extreme += int((np.abs(signs @ differences) >= observed - tolerance).sum())
    return (1 + extreme) / (1 + draws), "monte carlo", draws


def smallest_sign_flip_p(n: int, *, exact_up_to: int = EXACT_SIGN_FLIPS, draws: int = SIGN_FLIP_DRAWS) -> float:
    """The smallest p-value `sign_flip_p` can give for `n` differences: 2/2^n when it enumerates (the observed
    pattern and its mirror image are always at least as extreme), 1/(draws + 1) by Monte Carlo; NaN for n < 2."""
    if n < 2:
        return math.nan
    return 2 / 2**n if n <= exact_up_to else 1 / (draws + 1)


def paired_tests(
    first: np.ndarray | list[float],
    second: np.ndarray | list[float],
    *,
    exact_up_to: int = EXACT_SIGN_FLIPS,
    draws: int = SIGN_FLIP_DRAWS,
    seed: int = 0,
) -> PairedTests:
    """`paired_t_p` and `sign_flip_p` of first − second (one value per seed on each side, the seeds paired).
    Refuses mismatched lengths and NaN values (ValueError)."""
    first = np.asarray(first, dtype=np.float64).ravel()
    second = np.asarray(second, dtype=np.float64).ravel()
    if first.shape != second.shape:
        raise ValueError(f"need one value per seed on both sides, got {len(first)} and {len(second)}")
    differences = _differences(first - second)
    permutation_p, method, flips = sign_flip_p(differences, exact_up_to=exact_up_to, draws=draws, seed=seed)
    return PairedTests(
        n=len(differences),
        mean=float(differences.mean()) if len(differences) else math.nan,
        t_p=paired_t_p(differences),
        permutation_p=permutation_p,
        permutation=method,
        sign_flips=flips,
        smallest_p=smallest_sign_flip_p(len(differences), exact_up_to=exact_up_to, draws=draws),
    )


def _differences(values: np.ndarray | list[float]) -> np.ndarray:
    differences = np.asarray(values, dtype=np.float64).ravel()
    if np.isnan(differences).any():
        raise ValueError("paired tests got NaN values; drop the unpaired seeds first")
    return differences
