"""Tests for selection.features: the lexical (LSA) block and the weighted combination of feature blocks, computed
for the rows that are read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paser.selection.features import CombinedFeatures, cluster_features, lexical_features


def whole_matrix(blocks: list[np.ndarray], weights: list[float] | tuple[float, ...]) -> np.ndarray:
    return np.asarray(CombinedFeatures(blocks, weights))


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_combined_cosine_is_the_weighted_mean_of_block_cosines() -> None:
    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((2, 6, 5)), rng.standard_normal((2, 6, 3))
    weights = (1.0, 0.7)
    combined = whole_matrix([first[0], second[0]], weights)
    other = whole_matrix([first[1], second[1]], weights)
    block_cosines = [np.sum(unit(block[0]) * unit(block[1]), axis=1) for block in (first, second)]
    expected = (weights[0] ** 2 * block_cosines[0] + weights[1] ** 2 * block_cosines[1]) / sum(w**2 for w in weights)
    cosine = np.sum(combined * other, axis=1) / (np.linalg.norm(combined, axis=1) * np.linalg.norm(other, axis=1))
    np.testing.assert_allclose(cosine, expected, rtol=1e-5)
    assert combined.dtype == np.float32 and combined.shape == (6, 8)


def test_a_block_of_weight_zero_is_left_out_and_zero_rows_stay_zero() -> None:
    prompts = np.array([[3.0, 4.0], [0.0, 2.0]])
    lexical = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(whole_matrix([prompts, lexical], [1.0, 0.0]), [[0.6, 0.8], [0.0, 1.0]])
    np.testing.assert_allclose(
        whole_matrix([prompts, lexical], [1.0, 0.5]), [[0.6, 0.8, 0, 0, 0], [0.0, 1.0, 0.5, 0, 0]]
    )


@pytest.mark.parametrize(
    ("blocks", "weights", "message"),
    [
        ([np.ones((2, 2))], [1.0, 1.0], "one weight per feature block"),
        ([np.ones((2, 2))], [-1.0], "must be >= 0"),
        ([np.ones((2, 2))], [0.0], "every feature weight is 0"),
        ([np.ones((2, 2)), np.ones((3, 2))], [1.0, 1.0], "different row counts"),
        ([np.full((2, 2), np.nan)], [1.0], "non-finite"),
    ],
)
def test_bad_feature_blocks_are_refused(blocks: list[np.ndarray], weights: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CombinedFeatures(blocks, weights)


def test_rows_read_in_any_blocks_or_order_are_bitwise_the_whole_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    prompts = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(103, 7))
    prompts[:] = rng.standard_normal((103, 7)) * rng.uniform(0.1, 5.0, (103, 1))
    responses = rng.standard_normal((103, 5))  # float64, converted as it is read
    lexical = rng.standard_normal((103, 3)).astype(np.float32)
    lexical[[4, 50]] = 0.0
    features = CombinedFeatures([prompts, responses, lexical], [1.0, 0.7, 0.7])
    whole = np.asarray(features)
    assert whole.shape == features.shape == (103, 15) and whole.dtype == np.float32
    expected = np.hstack(
        [
            weight * block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-30)
            for block, weight in ((prompts, 1.0), (responses, 0.7), (lexical, 0.7))
        ]
    )
    np.testing.assert_allclose(whole, expected, rtol=1e-6, atol=1e-7)
    ragged = np.vstack([features[start : start + 10] for start in range(0, 103, 10)])
    np.testing.assert_array_equal(ragged, whole)
    scattered = np.array([99, 4, 0, 50, 17, 17])
    np.testing.assert_array_equal(features[scattered], whole[scattered])
    np.testing.assert_array_equal(features[np.array([102])], whole[[102]])


def test_combined_features_hold_the_embeddings_without_a_copy(tmp_path: Path) -> None:
    prompts = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(30, 6))
    prompts[:] = np.random.default_rng(0).standard_normal((30, 6))
    features = cluster_features(prompts, response_weight=0, lexical_weight=0)
    assert np.shares_memory(features.blocks[0][0], prompts)
    with pytest.raises(ValueError, match="computes its rows when read"):
        np.asarray(features, copy=False)


@pytest.mark.parametrize("rows", [3, np.zeros(30, dtype=bool), np.zeros((2, 2), dtype=np.int64)])
def test_combined_features_refuse_rows_named_other_than_by_slice_or_integer_array(rows: object) -> None:
    features = CombinedFeatures([np.ones((30, 4))], [1.0])
    with pytest.raises(TypeError, match="slice or a 1-D integer array"):
        features[rows]


TEMPLATES = [
    "Summarize the following article about {topic}.",
    "What is the sentiment of this review of {topic}? Positive or negative.",
    "Question: which of these is true about {topic}? Choices: A, B, C.",
]
TOPICS = ["cats", "stocks", "football", "rain", "pianos", "rivers", "bread", "trains", "chess", "moons"]


def test_lexical_features_group_texts_by_their_template_words() -> None:
    texts = [template.format(topic=topic) for template in TEMPLATES for topic in TOPICS]
    features = lexical_features(texts, dimensions=4)
    assert features.shape == (30, 4) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    similarity = features @ features.T
    same_template = np.equal.outer(np.arange(30) // 10, np.arange(30) // 10)
    assert similarity[same_template].mean() > 0.9 > 0.2 > similarity[~same_template].mean()


def test_lexical_features_are_deterministic_and_fitted_on_a_seeded_sample() -> None:
    texts = [template.format(topic=topic) for template in TEMPLATES for topic in TOPICS]
    np.testing.assert_array_equal(lexical_features(texts, 4, seed=1), lexical_features(texts, 4, seed=1))
    sampled = lexical_features(texts, 4, seed=1, fit_rows=12)
    assert sampled.shape == (30, 4)


def test_a_text_without_vocabulary_gets_a_zero_lexical_row() -> None:
    texts = [template.format(topic=topic) for template in TEMPLATES for topic in TOPICS] + ["???"]
    features = lexical_features(texts, dimensions=4)
    np.testing.assert_array_equal(features[-1], 0.0)


def test_lexical_features_refuse_texts_without_vocabulary() -> None:
    with pytest.raises(ValueError, match="no vocabulary"):
        lexical_features(["!!", "??"], dimensions=4)
    with pytest.raises(ValueError, match="no texts"):
        lexical_features([], dimensions=4)


def test_cluster_features_build_only_the_weighted_blocks_and_refuse_a_missing_input() -> None:
    rng = np.random.default_rng(0)
    prompts, responses = rng.standard_normal((30, 6)), rng.standard_normal((30, 5))
    texts = [template.format(topic=topic) for template in TEMPLATES for topic in TOPICS]
    assert cluster_features(prompts, response_weight=0, lexical_weight=0).shape == (30, 6)
    assert cluster_features(prompts, response_embeddings=responses, lexical_weight=0).shape == (30, 11)
    both = cluster_features(prompts, response_embeddings=responses, prompt_texts=texts, lexical_dimensions=4)
    assert both.shape == (30, 15)
    with pytest.raises(ValueError, match="response_weight > 0 needs"):
        cluster_features(prompts, lexical_weight=0)
    with pytest.raises(ValueError, match="lexical_weight > 0 needs"):
        cluster_features(prompts, response_weight=0)
