"""The interval functions of pipelines/stats.py on planted data: t-intervals over seeds, item resampling, and
the paired bootstrap over seeds alone and over seeds and items."""

from __future__ import annotations

import math

import numpy as np
import pytest

from paser.pipelines.stats import bootstrap_paired_difference, item_totals, t_interval


def scored_items(items: int, effect: float, seeds: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-item scores (seeds × items) of a strategy and a baseline on one test set: each item has its own
    difficulty (shared by both and every seed), each seed its own offset, and the strategy `effect` more."""
    generator = np.random.default_rng(seed)
    difficulty = generator.normal(0.0, 1.0, items)
    baseline = difficulty + generator.normal(0.0, 0.05, (seeds, 1)) + generator.normal(0.0, 0.3, (seeds, items))
    strategy = (
        difficulty + effect + generator.normal(0.0, 0.05, (seeds, 1)) + generator.normal(0.0, 0.3, (seeds, items))
    )
    return strategy, baseline


def item_level_interval(strategy: np.ndarray, baseline: np.ndarray, seed: int = 0):
    """The two-level bootstrap of mean strategy − baseline: each seed's item mean under shared item draws."""
    seeds, items = strategy.shape
    totals = item_totals(np.hstack([strategy.T, baseline.T]), seed=seed) / items
    return bootstrap_paired_difference(
        strategy.mean(axis=1),
        baseline.mean(axis=1),
        first_items=totals[:, :seeds],
        second_items=totals[:, seeds:],
        seed=seed,
    )


def test_t_interval_is_mean_plus_minus_t_sd_over_root_n():
    summary = t_interval([1.0, 2.0, 3.0, 4.0])
    # sd = sqrt(5/3); t(0.975, 3 df) = 3.182446
    half = 3.182446 * math.sqrt(5 / 3) / 2
    assert summary.n == 4 and summary.mean == 2.5 and summary.sd == pytest.approx(math.sqrt(5 / 3))
    assert summary.lo == pytest.approx(2.5 - half, rel=1e-6) and summary.hi == pytest.approx(2.5 + half, rel=1e-6)


def test_t_interval_of_one_seed_is_the_mean_alone():
    summary = t_interval([0.7])
    assert summary.mean == 0.7 and math.isnan(summary.sd) and math.isnan(summary.lo) and math.isnan(summary.hi)
    assert t_interval([]).n == 0


def test_t_interval_refuses_missing_seeds():
    with pytest.raises(ValueError, match="drop the missing seeds"):
        t_interval([1.0, math.nan])


def test_item_totals_draw_as_many_items_as_there_are_and_the_same_for_every_column():
    values = np.column_stack([np.arange(10.0), 2 * np.arange(10.0), np.ones(10)])
    totals = item_totals(values, resamples=300)
    assert totals.shape == (300, 3)
    assert (totals[:, 2] == 10).all()
    np.testing.assert_allclose(totals[:, 1], 2 * totals[:, 0])
    assert totals[:, 0].std() > 0


def test_item_totals_are_determined_by_the_seed_and_the_item_count():
    values = np.arange(50.0)
    np.testing.assert_array_equal(item_totals(values, 100, seed=3), item_totals(values, 100, seed=3))
    assert not np.array_equal(item_totals(values, 100, seed=3), item_totals(values, 100, seed=4))
    # the same draws for another array of as many items: models scored on one test set stay paired
    np.testing.assert_allclose(item_totals(2 * values, 100, seed=3), 2 * item_totals(values, 100, seed=3))


def test_a_planted_difference_is_detected_over_seeds_and_items():
    strategy, baseline = scored_items(400, effect=0.3)
    interval = item_level_interval(strategy, baseline)
    assert interval.estimate == pytest.approx(0.3, abs=0.1)
    assert 0 < interval.lo < 0.3 < interval.hi


def test_a_zero_difference_gives_an_interval_covering_zero():
    strategy, baseline = scored_items(400, effect=0.0, seed=1)
    interval = item_level_interval(strategy, baseline)
    assert interval.lo < 0 < interval.hi


def test_intervals_shrink_with_more_items():
    widths = []
    for items in (100, 2000):
        strategy, baseline = scored_items(items, effect=0.1, seeds=1)
        interval = item_level_interval(strategy, baseline)
        widths.append(interval.hi - interval.lo)
    # the item share of the width falls as 1/sqrt(items): about 4.5 times here
    assert widths[1] < widths[0] / 3


def test_the_bootstrap_is_determined_by_its_seed():
    strategy, baseline = scored_items(200, effect=0.1)
    assert item_level_interval(strategy, baseline, seed=5) == item_level_interval(strategy, baseline, seed=5)
    assert item_level_interval(strategy, baseline, seed=5) != item_level_interval(strategy, baseline, seed=6)
    seeds_only = bootstrap_paired_difference([1.0, 2.0, 4.0], [0.0, 0.5, 1.0], seed=2)
    assert seeds_only == bootstrap_paired_difference([1.0, 2.0, 4.0], [0.0, 0.5, 1.0], seed=2)


def test_seeds_only_bootstrap_of_two_seeds_spans_their_differences():
    interval = bootstrap_paired_difference([1.0, 3.0], [0.0, 0.0])
    assert (interval.estimate, interval.lo, interval.hi) == (2.0, 1.0, 3.0)


def test_seeds_only_bootstrap_of_one_seed_has_no_interval():
    interval = bootstrap_paired_difference([1.0], [0.5])
    assert interval.estimate == 0.5 and math.isnan(interval.lo) and math.isnan(interval.hi)


def test_one_seed_with_items_gets_the_items_interval():
    strategy, baseline = scored_items(300, effect=0.2, seeds=1)
    interval = item_level_interval(strategy, baseline)
    assert interval.lo < interval.estimate < interval.hi


def test_mismatched_or_missing_inputs_are_refused():
    with pytest.raises(ValueError, match="one value per seed on both sides"):
        bootstrap_paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="drop the unpaired seeds"):
        bootstrap_paired_difference([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="both sides or for neither"):
        bootstrap_paired_difference([1.0], [1.0], first_items=np.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"\(resamples × 2 seeds\)"):
        bootstrap_paired_difference([1.0, 2.0], [1.0, 2.0], first_items=np.zeros((5, 1)), second_items=np.zeros((5, 1)))
    with pytest.raises(ValueError, match="at least one item"):
        item_totals(np.zeros((0, 2)))
