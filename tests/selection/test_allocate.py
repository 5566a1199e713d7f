import math

import numpy as np
import pytest

from paser.selection.allocate import TokenBudget, allocate_budget, parse_budget, resolve_budget, take_within_tokens


def test_fraction_budget_rounds_to_nearest_row():
    assert resolve_budget(0.1, 52_002) == 5_200  # 5200.2
    assert resolve_budget(0.25, 10) == 3  # 2.5 rounds half up
    assert resolve_budget(1.0, 7) == 7


def test_tiny_fraction_budget_keeps_at_least_one_row():
    assert resolve_budget(1e-9, 100) == 1


def test_count_budget_is_taken_as_is_and_capped_at_the_corpus():
    assert resolve_budget(1, 100) == 1
    assert resolve_budget(40, 100) == 40
    assert resolve_budget(np.int64(40), 100) == 40
    assert resolve_budget(500.0, 100) == 100
    assert resolve_budget(1_000, 100) == 100


@pytest.mark.parametrize("bad", [0, -3, 0.0, -0.5, math.nan, math.inf, 1.5, True, "10%", None])
def test_invalid_budget_is_refused(bad):
    with pytest.raises(ValueError):
        resolve_budget(bad, 100)


def test_resolving_a_budget_over_no_rows_is_refused():
    with pytest.raises(ValueError, match="n_rows"):
        resolve_budget(0.5, 0)


def test_proportional_allocation_is_exact_without_rounding():
    allocation = allocate_budget(np.array([0.5, 0.3, 0.2]), np.array([100, 100, 100]), 50)
    assert allocation.tolist() == [25, 15, 10]
    assert allocation.dtype == np.int64


def test_largest_remainder_gives_leftover_rows_to_the_largest_fractions():
    # Shares 7 * [0.45, 0.35, 0.2] = [3.15, 2.45, 1.4]; floors [3, 2, 1] leave 1 row, which goes to the
    # largest fractional part (0.45, cluster 1).
    allocation = allocate_budget(np.array([0.45, 0.35, 0.2]), np.array([10, 10, 10]), 7)
    assert allocation.tolist() == [3, 3, 1]


def test_largest_remainder_ties_go_to_the_lower_cluster_index():
    # Shares 10/3 each: floors [3, 3, 3], one leftover row, all fractions equal -> cluster 0.
    assert allocate_budget(np.ones(3), np.full(3, 10), 10).tolist() == [4, 3, 3]
    # Two leftover rows -> clusters 0 and 1.
    assert allocate_budget(np.ones(3), np.full(3, 10), 11).tolist() == [4, 4, 3]


def test_budget_is_exact_when_a_cluster_is_too_small():
    # Shares 50 * [0.5, 0.3, 0.2] = [25, 15, 10]; cluster 1 holds only 2, so it is filled (2) and its
    # missing 13 rows are re-split over clusters 0 and 2 in proportion 0.5 : 0.2: 48 * 5/7 = 34.29 and
    # 48 * 2/7 = 13.71; floors [34, 13] leave 1 row for the larger fraction (cluster 2) -> [34, 2, 14].
    allocation = allocate_budget(np.array([0.5, 0.3, 0.2]), np.array([100, 2, 100]), 50)
    assert allocation.tolist() == [34, 2, 14]


def test_water_filling_iterates_when_a_second_cluster_saturates():
    # Shares 30 * [0.4, 0.4, 0.2] = [12, 12, 6]; cluster 0 (cap 3) is full, 27 rows over clusters 1 and 2
    # in 2:1 = [18, 9]; cluster 1 (cap 10) is now full, so cluster 2 takes the remaining 17.
    allocation = allocate_budget(np.array([0.4, 0.4, 0.2]), np.array([3, 10, 100]), 30)
    assert allocation.tolist() == [3, 10, 17]


def test_zero_weight_clusters_get_nothing_while_others_have_room():
    allocation = allocate_budget(np.array([0.0, 0.2, 0.0, 0.6]), np.array([50, 50, 50, 50]), 20)
    assert allocation.tolist() == [0, 5, 0, 15]


def test_zero_weight_clusters_take_the_rest_in_proportion_to_capacity_once_others_are_full():
    # Positive-weight clusters 1 and 3 hold 5 + 5; the other 20 rows go to clusters 0 and 2 by room 10 : 30.
    allocation = allocate_budget(np.array([0.0, 0.2, 0.0, 0.6]), np.array([10, 5, 30, 5]), 30)
    assert allocation.tolist() == [5, 5, 15, 5]


def test_all_zero_weights_allocate_in_proportion_to_capacity():
    assert allocate_budget(np.zeros(3), np.array([10, 30, 60]), 10).tolist() == [1, 3, 6]


def test_budget_beyond_total_capacity_fills_every_cluster():
    assert allocate_budget(np.array([0.3, 0.7]), np.array([4, 6]), 1_000).tolist() == [4, 6]


def test_zero_budget_allocates_nothing():
    assert allocate_budget(np.array([0.3, 0.7]), np.array([4, 6]), 0).tolist() == [0, 0]


def test_random_allocations_are_exact_capped_and_roughly_proportional():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n_clusters = int(rng.integers(1, 30))
        weights = rng.random(n_clusters) * (rng.random(n_clusters) > 0.2)
        capacities = rng.integers(0, 200, size=n_clusters)
        budget = int(rng.integers(0, capacities.sum() + 50))
        allocation = allocate_budget(weights, capacities, budget)
        assert allocation.sum() == min(budget, capacities.sum())
        assert np.all(allocation >= 0) and np.all(allocation <= capacities)
        unsaturated = (allocation < capacities) & (weights > 0)
        if unsaturated.sum() >= 2:
            # Clusters with room got their proportional share of what the saturated ones left, within a row.
            rest = allocation[unsaturated].sum()
            shares = rest * weights[unsaturated] / weights[unsaturated].sum()
            assert np.all(np.abs(allocation[unsaturated] - shares) < 1 + 1e-9)


def test_negative_weights_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        allocate_budget(np.array([0.5, -0.1]), np.array([10, 10]), 5)


def test_non_finite_weights_are_refused():
    with pytest.raises(ValueError, match="finite"):
        allocate_budget(np.array([0.5, np.nan]), np.array([10, 10]), 5)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same length"):
        allocate_budget(np.array([0.5, 0.5]), np.array([10, 10, 10]), 5)


def test_negative_or_fractional_capacities_are_refused():
    with pytest.raises(ValueError, match="whole numbers"):
        allocate_budget(np.array([0.5, 0.5]), np.array([10, -1]), 5)
    with pytest.raises(ValueError, match="whole numbers"):
        allocate_budget(np.array([0.5, 0.5]), np.array([10, 2.5]), 5)


def test_negative_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        allocate_budget(np.array([0.5, 0.5]), np.array([10, 10]), -1)


def test_a_number_followed_by_t_is_a_token_budget():
    assert parse_budget("200000t") == TokenBudget(200_000)
    assert parse_budget(" 500t ") == TokenBudget(500)
    assert str(TokenBudget(200_000)) == "200000t"


def test_a_row_budget_is_returned_as_written():
    assert parse_budget(0.1) == 0.1
    assert parse_budget(500) == 500
    assert parse_budget(TokenBudget(7)) == TokenBudget(7)


@pytest.mark.parametrize("bad", ["2e5t", "200000T", "200_000t", "t", "0t", "-5t", "1.5t", "500 t", "10%", "abc", ""])
def test_a_malformed_budget_text_is_refused_naming_the_key(bad):
    with pytest.raises(ValueError, match=r"selection\.budgets\[1\]: .* is not a budget.*200000t"):
        parse_budget(bad, "selection.budgets[1]")


@pytest.mark.parametrize(("bad", "message"), [(0, "must be >= 1"), (2.5, "neither a fraction"), (None, "got None")])
def test_a_bad_row_budget_is_refused_naming_the_key(bad, message):
    with pytest.raises(ValueError, match=rf"selection\.budget: .*{message}"):
        parse_budget(bad, "selection.budget")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_a_token_budget_below_one_whole_token_is_refused(bad):
    with pytest.raises(ValueError, match="whole number of tokens"):
        TokenBudget(bad)


def test_rows_are_taken_in_order_until_the_next_would_overflow_the_tokens():
    tokens = np.array([30, 50, 40, 10, 5])
    # 30 + 50 = 80; the next row (40) would make 120, so the walk stops there although 10 and 5 would fit.
    assert take_within_tokens(np.arange(5), tokens, TokenBudget(100)).tolist() == [0, 1]
    assert take_within_tokens(np.array([3, 4, 2, 0, 1]), tokens, TokenBudget(100)).tolist() == [3, 4, 2, 0]
    assert take_within_tokens(np.arange(5), tokens, TokenBudget(1_000)).tolist() == [0, 1, 2, 3, 4]


def test_a_row_larger_than_the_whole_token_budget_is_passed_over():
    tokens = np.array([150, 30, 50, 40])
    assert take_within_tokens(np.arange(4), tokens, TokenBudget(100)).tolist() == [1, 2]
    assert take_within_tokens(np.arange(4), tokens, TokenBudget(10)).tolist() == []
