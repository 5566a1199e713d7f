import math

import numpy as np
import pytest

from paser.selection.prioritize import damage_density, efficiency_score, rank_within_cluster, sample_cost


def test_squared_cost_is_the_square_of_the_total_token_count():
    assert sample_cost(np.array([3, 10]), np.array([7, 90])).tolist() == [100.0, 10_000.0]


def test_linear_cost_is_the_total_token_count():
    assert sample_cost(np.array([3, 10]), np.array([7, 90]), kind="linear").tolist() == [10.0, 100.0]


def test_unknown_cost_kind_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match="squared, linear"):
        sample_cost(np.array([3]), np.array([7]), kind="cubic")


def test_negative_or_fractional_token_counts_are_refused():
    with pytest.raises(ValueError, match="prompt_tokens"):
        sample_cost(np.array([-1]), np.array([7]))
    with pytest.raises(ValueError, match="response_tokens"):
        sample_cost(np.array([1]), np.array([7.5]))


def test_ies_golden_values():
    # IES = cds / ln((p + r)^2): 0.2 / ln(100) = 0.0434294..., 0.6 / ln(10_000) = 0.0651442...,
    # 0.1 / ln(4) = 0.0721348...
    ies = efficiency_score(np.array([0.2, 0.6, 0.1]), np.array([3, 10, 1]), np.array([7, 90, 1]))
    np.testing.assert_allclose(ies, [0.2 / math.log(100), 0.6 / math.log(10_000), 0.1 / math.log(4)], rtol=1e-12)
    np.testing.assert_allclose(ies, [0.0434294482, 0.0651441723, 0.0721347520], rtol=1e-9)


def test_damage_density_golden_values():
    # cds * r / (p + r): 0.2 * 7 / 10 = 0.14, 0.6 * 90 / 100 = 0.54, 0.5 * 1 / 9 = 0.0555...
    density = damage_density(np.array([0.2, 0.6, 0.5]), np.array([3, 10, 8]), np.array([7, 90, 1]))
    np.testing.assert_allclose(density, [0.14, 0.54, 0.5 / 9], rtol=1e-12)


def test_damage_density_refuses_rows_without_tokens_and_non_finite_cds():
    with pytest.raises(ValueError, match="no tokens; first at position 1"):
        damage_density(np.array([0.2, 0.3]), np.array([3, 0]), np.array([7, 0]))
    with pytest.raises(ValueError, match="finite"):
        damage_density(np.array([np.nan]), np.array([3]), np.array([7]))


def test_ies_with_linear_cost_divides_by_log_of_the_token_count():
    ies = efficiency_score(np.array([0.2]), np.array([3]), np.array([7]), cost="linear")
    np.testing.assert_allclose(ies, [0.2 / math.log(10)], rtol=1e-12)


def test_ies_is_refused_when_cost_is_at_most_one():
    with pytest.raises(ValueError, match="cost <= 1"):
        efficiency_score(np.array([0.2, 0.3]), np.array([3, 1]), np.array([7, 0]))


def test_ies_is_refused_for_non_finite_cds():
    with pytest.raises(ValueError, match="finite"):
        efficiency_score(np.array([np.nan]), np.array([3]), np.array([7]))


def test_ranking_is_by_descending_score():
    assert rank_within_cluster(np.array([0.1, 0.5, 0.3]), ["a", "b", "c"]).tolist() == [1, 2, 0]


def test_equal_scores_are_ranked_by_id():
    order = rank_within_cluster(np.array([0.2, 0.5, 0.2, 0.2]), ["r9", "r5", "r10", "r1"])
    assert order.tolist() == [1, 3, 2, 0]  # r5, then r1 < r10 < r9 as strings


def test_ranking_refuses_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        rank_within_cluster(np.array([0.1, np.nan]), ["a", "b"])


def test_ranking_refuses_mismatched_ids():
    with pytest.raises(ValueError, match="same length"):
        rank_within_cluster(np.array([0.1, 0.2]), ["a"])
