"""Tests for selection.cluster: Leiden (the default), spectral, NMF and k-means clustering, eigengap K, small
cluster merging, landmarks, cluster_texts."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from paser.selection import cluster, manifold
from paser.selection.cluster import (
    CLUSTERERS,
    ClusterResult,
    cluster_embeddings,
    eigengap_n_clusters,
    get_clusterer,
    kmeans_cluster,
)
from paser.selection.config import ClusterConfig
from paser.selection.features import CombinedFeatures
from tests.selection.test_manifold import gaussian_mixture


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    """Five clear groups of 80 unit-norm 384-d rows each."""
    return gaussian_mixture(400, 5, seed=1)


def test_spectral_recovers_mixture_with_fixed_k(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, groups = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(method="spectral", n_clusters=5))
    assert result.n_clusters == 5
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_spectral_eigengap_finds_the_true_number_of_groups(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, groups = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(method="spectral"))
    assert result.n_clusters == 5
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_eigengap_finds_k_on_a_connected_noisy_mixture() -> None:
    embeddings, groups = gaussian_mixture(600, 6, seed=2, noise=2.5)
    result = cluster_embeddings(embeddings, ClusterConfig(method="spectral", n_neighbors=15))
    assert result.n_clusters == 6
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_labels_are_int64_renumbered_without_gaps(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, _ = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(n_clusters=5))
    assert result.labels.dtype == np.int64 and result.labels.shape == (400,)
    assert set(result.labels.tolist()) == set(range(result.n_clusters))
    first_appearance_order = list(dict.fromkeys(result.labels.tolist()))
    assert first_appearance_order == list(range(result.n_clusters))


def test_clustering_is_deterministic_under_seed() -> None:
    embeddings, _ = gaussian_mixture(300, 4, seed=3, noise=3.0)
    config = ClusterConfig(method="spectral", n_clusters=4, seed=7)
    first = cluster_embeddings(embeddings, config)
    second = cluster_embeddings(embeddings, config)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.coordinates, second.coordinates)


def test_no_dense_n_by_n_matrix_is_built(
    mixture: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    embeddings, _ = mixture
    seen_nonzeros = []
    original_diffusion_map = cluster.diffusion_map

    def spy(affinity, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen_nonzeros.append((type(affinity).__name__, affinity.nnz))
        return original_diffusion_map(affinity, *args, **kwargs)

    monkeypatch.setattr(cluster, "diffusion_map", spy)
    config = ClusterConfig(method="spectral", n_clusters=5, n_neighbors=10)
    result = cluster_embeddings(embeddings, config)
    assert seen_nonzeros == [("csr_matrix", seen_nonzeros[0][1])]
    assert seen_nonzeros[0][1] <= len(embeddings) * 2 * config.n_neighbors
    assert result.coordinates.shape[0] == len(embeddings) and result.coordinates.shape[1] < 50


def test_landmark_path_is_used_beyond_threshold_and_still_recovers_groups(
    mixture: tuple[np.ndarray, np.ndarray],
) -> None:
    embeddings, groups = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(landmark_threshold=200, n_landmarks=150))
    assert result.n_landmarks == 150
    assert "assign" in result.seconds
    assert result.n_clusters == 5
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_landmark_path_is_deterministic_under_seed(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, _ = mixture
    config = ClusterConfig(landmark_threshold=200, n_landmarks=150, seed=5)
    np.testing.assert_array_equal(
        cluster_embeddings(embeddings, config).labels, cluster_embeddings(embeddings, config).labels
    )


def _renumbered_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    first_seen = {label: rank for rank, label in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([first_seen[label] for label in labels.tolist()], dtype=np.int64)


def test_blockwise_landmark_assignment_matches_a_whole_matrix_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    embeddings, _ = gaussian_mixture(3000, 6, seed=4, noise=2.5)
    embeddings *= np.random.default_rng(9).uniform(0.5, 3.0, (3000, 1)).astype(np.float32)
    config = ClusterConfig(method="spectral", landmark_threshold=1000, n_landmarks=300, n_neighbors=10, seed=3)
    # Ragged blocks: 97-row checks, 7-row assignment blocks.
    monkeypatch.setattr(manifold, "ROW_BLOCK", 97)
    monkeypatch.setattr(cluster, "_ASSIGNMENT_BLOCK_ELEMENTS", 7 * config.n_landmarks + 5)
    result = cluster_embeddings(embeddings, config)

    landmark_ids = np.sort(np.random.default_rng(config.seed).choice(3000, size=300, replace=False))
    landmark_fit = cluster_embeddings(embeddings[landmark_ids], config)
    unit_rows = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    nearest = (unit_rows @ unit_rows[landmark_ids].T).argmax(axis=1)
    nearest[landmark_ids] = np.arange(300)
    assert result.n_landmarks == 300
    np.testing.assert_array_equal(result.labels, _renumbered_by_first_appearance(landmark_fit.labels[nearest]))
    np.testing.assert_array_equal(result.coordinates, landmark_fit.coordinates[nearest])


def _with_traced_peak(clustering: Callable[[], ClusterResult]) -> tuple[ClusterResult, int]:
    """What `clustering()` returns, and the most bytes Python allocations held at once while it ran."""
    tracemalloc.start()
    try:
        result = clustering()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("block_rows", [1, 7, 64, 500])
def test_chunk_size_does_not_change_the_nearest_landmark(block_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    embeddings, _ = gaussian_mixture(500, 5, seed=8, noise=3.0)
    embeddings *= np.random.default_rng(2).uniform(0.5, 3.0, (500, 1)).astype(np.float32)
    unit_landmarks = manifold.l2_normalise(embeddings[::10])
    unchunked = (manifold.l2_normalise(embeddings) @ unit_landmarks.T).argmax(axis=1)
    monkeypatch.setattr(cluster, "_ASSIGNMENT_BLOCK_ELEMENTS", block_rows * len(unit_landmarks))
    np.testing.assert_array_equal(cluster._nearest_landmark(embeddings, unit_landmarks), unchunked)


def test_landmark_path_on_combined_features_labels_as_on_their_whole_matrix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, _ = gaussian_mixture(20_000, 4, seed=6, noise=2.0)
    prompts = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=rows.shape)
    prompts[:] = rows
    responses = np.lib.format.open_memmap(tmp_path / "r.npy", mode="w+", dtype=np.float32, shape=rows.shape)
    responses[:] = rows[::-1]
    features = CombinedFeatures([prompts, responses], [1.0, 0.7])
    monkeypatch.setattr(manifold, "ROW_BLOCK", 500)
    monkeypatch.setattr(cluster, "ROW_BLOCK", 500)
    config = ClusterConfig(landmark_threshold=1000, n_landmarks=300, seed=4)
    whole = np.asarray(features)
    # First on the whole matrix: the reference, and the clusterer's imports are not counted below.
    expected = cluster_embeddings(whole, config).labels
    lazy, peak_bytes = _with_traced_peak(lambda: cluster_embeddings(features, config))
    np.testing.assert_array_equal(lazy.labels, expected)
    # 500-row blocks (1.5 MB each at 2 x 384 columns), the landmarks and their graph; the whole matrix is 61 MB.
    assert peak_bytes < whole.nbytes / 4


def test_landmark_path_on_a_memmap_makes_no_copy_of_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows, _ = gaussian_mixture(20_000, 4, seed=6, noise=2.0)
    embeddings = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=rows.shape)
    embeddings[:] = rows
    del rows
    # 500-row blocks for the check and, through the cap on assignment blocks, for the assignment.
    monkeypatch.setattr(manifold, "ROW_BLOCK", 500)
    monkeypatch.setattr(cluster, "ROW_BLOCK", 500)
    config = ClusterConfig(method="kmeans", n_clusters=4, landmark_threshold=1000, n_landmarks=200)
    result, peak_bytes = _with_traced_peak(lambda: cluster_embeddings(embeddings, config))
    assert result.n_landmarks == 200
    # A few 500-row blocks (0.8 MB each) and N-long int64 labels (0.16 MB each); the matrix is 30 MB.
    assert peak_bytes < embeddings.nbytes / 4


def test_landmark_path_clusters_float64_input_as_its_float32_conversion(
    mixture: tuple[np.ndarray, np.ndarray],
) -> None:
    embeddings, _ = mixture
    config = ClusterConfig(landmark_threshold=200, n_landmarks=150, seed=2)
    as_float64 = cluster_embeddings(embeddings.astype(np.float64), config)
    np.testing.assert_array_equal(as_float64.labels, cluster_embeddings(embeddings, config).labels)


def test_an_all_zero_row_outside_the_landmarks_is_refused_by_name(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings = mixture[0].copy()
    config = ClusterConfig(landmark_threshold=200, n_landmarks=150, seed=2)
    landmark_ids = np.random.default_rng(config.seed).choice(400, size=150, replace=False)
    zero_row = int(np.setdiff1d(np.arange(400), landmark_ids)[0])
    embeddings[zero_row] = 0.0
    with pytest.raises(ValueError, match=f"embedding row {zero_row} is all zero"):
        cluster_embeddings(embeddings, config)


def test_landmarks_are_not_used_at_or_below_threshold(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, _ = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(n_clusters=5, landmark_threshold=400))
    assert result.n_landmarks == 0


def test_nmf_variant_recovers_mixture(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, groups = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(method="nmf"))
    assert result.n_clusters == 5
    assert adjusted_rand_score(groups, result.labels) >= 0.8


def test_kmeans_method_recovers_mixture_with_fixed_k(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, groups = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(method="kmeans", n_clusters=5))
    assert result.eigenvalues is None and result.coordinates is None
    assert adjusted_rand_score(groups, result.labels) >= 0.8


def test_kmeans_method_takes_k_from_the_eigengap_when_unset(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, _ = mixture
    assert cluster_embeddings(embeddings, ClusterConfig(method="kmeans")).n_clusters == 5


def test_umap_manifold_recovers_mixture(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, groups = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(method="spectral", manifold="umap", n_clusters=5))
    assert result.coordinates.shape == (400, 10)
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_kmeans_cluster_is_deterministic_and_in_range(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, _ = mixture
    labels = kmeans_cluster(embeddings, 5, seed=2)
    np.testing.assert_array_equal(labels, kmeans_cluster(embeddings, 5, seed=2))
    assert labels.dtype == np.int64 and labels.min() == 0 and labels.max() == 4


def test_eigengap_picks_the_largest_gap_within_bounds() -> None:
    eigenvalues = np.array([1.0, 0.99, 0.98, 0.5, 0.45, 0.1, 0.05])
    assert eigengap_n_clusters(eigenvalues, 2, 5) == 3
    assert eigengap_n_clusters(eigenvalues, 4, 5) == 5


def test_unknown_method_error_lists_known_names() -> None:
    with pytest.raises(ValueError, match="^unknown clustering method 'dbscan'; known: kmeans, leiden, nmf, spectral$"):
        get_clusterer("dbscan")
    with pytest.raises(ValueError, match=r"did you mean leiden\?$"):
        get_clusterer("leidn")
    assert set(CLUSTERERS) == {"leiden", "spectral", "nmf", "kmeans"}


def test_unknown_manifold_is_refused(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="unknown manifold 'tsne'; known: diffusion, umap"):
        cluster_embeddings(mixture[0], ClusterConfig(method="spectral", manifold="tsne"))


def test_non_finite_embeddings_are_refused(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings = mixture[0].copy()
    embeddings[7, 3] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        cluster_embeddings(embeddings, ClusterConfig(n_clusters=5))


def test_fewer_rows_than_clusters_is_refused() -> None:
    embeddings, _ = gaussian_mixture(4, 2)
    with pytest.raises(ValueError, match="cannot make 5 clusters from 4 rows"):
        cluster_embeddings(embeddings, ClusterConfig(n_clusters=5))
    with pytest.raises(ValueError, match="cannot make 5 clusters from 4 rows"):
        kmeans_cluster(embeddings, 5)


def test_zero_clusters_is_refused(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="n_clusters must be >= 1"):
        cluster_embeddings(mixture[0], ClusterConfig(n_clusters=0))


def crumbs_and_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five broad groups of 120 rows, plus six tight near-duplicate groups ("crumbs") of 12 copies of one
    group member each (as T0 rows sharing a passage under twelve prompt templates). Labels: the group of
    every row, crumbs included (a crumb belongs to the group its source row came from)."""
    blobs, groups = gaussian_mixture(600, 5, seed=seed, noise=2.2)
    rng = np.random.default_rng(seed)
    sources = rng.choice(600, size=6, replace=False)
    copies = np.repeat(blobs[sources], 12, axis=0) + 0.01 * rng.standard_normal((72, 384)).astype(np.float32)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return np.vstack([blobs, copies]).astype(np.float32), np.concatenate([groups, np.repeat(groups[sources], 12)])


def test_near_duplicate_crumbs_capture_the_paper_spectral_clustering() -> None:
    # The failure measured on T0 task pools, reproduced: each crumb is its own component of the kNN graph, so
    # the eigenvalue 1 repeats and the eigengap K counts every crumb as a capability of its own (and the
    # budget allocation would then give 12 near-copies of one row as much as a group of 120).
    embeddings, groups = crumbs_and_blobs()
    result = cluster_embeddings(embeddings, ClusterConfig(method="spectral", n_neighbors=10))
    assert result.n_clusters == 5 + 6
    crumb_labels = result.labels[600:].reshape(6, 12)
    assert all(len(set(row)) == 1 for row in crumb_labels.tolist())
    # Each crumb's cluster is the crumb and its source row, nothing else.
    assert sorted(np.bincount(result.labels))[:6] == [13] * 6


def test_leiden_merges_the_crumbs_and_recovers_the_groups() -> None:
    embeddings, groups = crumbs_and_blobs()
    result = cluster_embeddings(embeddings, ClusterConfig(n_neighbors=10))
    assert result.n_clusters == 5
    assert result.details["merged_small"] >= 6
    assert adjusted_rand_score(groups, result.labels) >= 0.95


@pytest.mark.parametrize("n_groups", [5, 8, 12])
def test_leiden_finds_the_planted_number_of_groups(n_groups: int) -> None:
    embeddings, groups = gaussian_mixture(100 * n_groups, n_groups, seed=n_groups, noise=2.0)
    result = cluster_embeddings(embeddings, ClusterConfig())
    assert result.n_clusters == n_groups
    assert adjusted_rand_score(groups, result.labels) >= 0.95


def test_leiden_k_holds_still_across_draws_of_one_distribution() -> None:
    embeddings, _ = gaussian_mixture(3000, 9, seed=11, noise=2.5)
    draws = [np.random.default_rng(seed).choice(3000, 1500, replace=False) for seed in range(3)]
    ks = {cluster_embeddings(embeddings[draw], ClusterConfig(seed=seed)).n_clusters for seed, draw in enumerate(draws)}
    assert ks == {9}


def test_leiden_is_deterministic_under_seed() -> None:
    embeddings, _ = crumbs_and_blobs(seed=3)
    config = ClusterConfig(seed=4, resolution=1.0)
    np.testing.assert_array_equal(
        cluster_embeddings(embeddings, config).labels, cluster_embeddings(embeddings, config).labels
    )


def test_leiden_merges_down_to_max_clusters_and_to_a_fixed_k(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, groups = mixture
    capped = cluster_embeddings(embeddings, ClusterConfig(min_clusters=2, max_clusters=3))
    assert capped.n_clusters == 3 and capped.details["merged_to_max"] == 2
    fixed = cluster_embeddings(embeddings, ClusterConfig(n_clusters=4))
    assert fixed.n_clusters == 4


def test_leiden_raises_its_resolution_to_reach_min_clusters() -> None:
    embeddings, _ = gaussian_mixture(400, 2, seed=5, noise=2.0)
    result = cluster_embeddings(embeddings, ClusterConfig(min_clusters=4, min_cluster_fraction=0.01))
    assert result.n_clusters == 4
    assert result.details["resolution"] > ClusterConfig().resolution


def test_leiden_refuses_a_k_the_graph_cannot_give() -> None:
    embeddings, _ = gaussian_mixture(60, 2, seed=5, noise=0.5)
    with pytest.raises(ValueError, match="fewer than the 40 asked for"):
        cluster_embeddings(embeddings, ClusterConfig(n_clusters=40, n_neighbors=10))


def test_merge_small_clusters_joins_the_most_connected_neighbour() -> None:
    # Clusters 0 (3 rows) and 1 (3 rows) and a single row 6, tied to cluster 1 by more weight than to 0.
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    edges = {(0, 1): 1.0, (1, 2): 1.0, (3, 4): 1.0, (4, 5): 1.0, (6, 0): 0.2, (6, 3): 0.5, (6, 4): 0.1}
    rows, columns = zip(*edges, strict=True)
    upper = scipy.sparse.csr_matrix((list(edges.values()), (rows, columns)), shape=(7, 7))
    unit_rows = np.eye(7, dtype=np.float32)
    merged, small, capped = cluster.merge_small_clusters(labels, upper + upper.T, unit_rows, min_size=2)
    np.testing.assert_array_equal(merged, [0, 0, 0, 1, 1, 1, 1])
    assert (small, capped) == (1, 0)


def test_merge_small_clusters_sends_a_disconnected_one_to_the_nearest_centroid() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    affinity = scipy.sparse.csr_matrix(
        np.array([[0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=float)
    )
    unit_rows = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0.6, 0.8]], dtype=np.float32)
    merged, small, _ = cluster.merge_small_clusters(labels, affinity, unit_rows, min_size=2)
    np.testing.assert_array_equal(merged, [0, 0, 1, 1, 1])
    assert small == 1


def test_umap_path_builds_no_diffusion_map(
    mixture: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the UMAP path built a diffusion map")

    monkeypatch.setattr(cluster, "diffusion_map", refuse)
    monkeypatch.setattr(cluster, "umap_embedding", lambda embeddings, **kwargs: embeddings[:, :10])
    embeddings, _ = mixture
    fixed = cluster_embeddings(embeddings, ClusterConfig(method="spectral", manifold="umap", n_clusters=5))
    assert fixed.eigenvalues is None and fixed.n_clusters == 5
    auto = cluster_embeddings(embeddings, ClusterConfig(method="spectral", manifold="umap"))
    assert auto.eigenvalues is not None and auto.n_clusters == 5


def test_umap_manifold_is_refused_for_another_method(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="clustering.manifold=umap is used by clustering.method=spectral only"):
        cluster_embeddings(mixture[0], ClusterConfig(manifold="umap"))


def test_kmeans_restarts_are_configurable(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, _ = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(method="kmeans", n_clusters=5, n_init=1, seed=3))
    expected = KMeans(n_clusters=5, n_init=1, random_state=3).fit_predict(manifold.l2_normalise(embeddings))
    assert adjusted_rand_score(expected, result.labels) == 1.0
    with pytest.raises(ValueError, match="clustering.n_init must be >= 1"):
        cluster_embeddings(embeddings, ClusterConfig(method="kmeans", n_clusters=5, n_init=0))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"resolution": 0.0}, "clustering.resolution must be > 0"),
        ({"min_cluster_fraction": 1.0}, r"clustering.min_cluster_fraction must be in \[0, 1\)"),
        ({"response_weight": -1.0}, "clustering.response_weight must be >= 0"),
        ({"lexical_dimensions": 0}, "clustering.lexical_dimensions must be >= 1"),
    ],
)
def test_bad_leiden_and_feature_options_are_refused_by_key(
    mixture: tuple[np.ndarray, np.ndarray], option: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cluster_embeddings(mixture[0], ClusterConfig(**option))


def test_cluster_texts_embeds_and_clusters_in_one_call(tmp_path: Path) -> None:
    topics = {
        "arithmetic": ("What is {a} plus {b}?", "{c}"),
        "translation": ("Translate to French: I have {a} cats and {b} dogs.", "J'ai {a} chats et {b} chiens."),
        "poems": ("Write a short poem about the number {a}.", "Oh {a}, so round and bright, you shine at night."),
    }
    texts, responses, truth = [], [], []
    for index, (prompt, answer) in enumerate(topics.values()):
        for a in range(40):
            texts.append(prompt.format(a=a, b=a + 3))
            responses.append(answer.format(a=a, b=a + 3, c=2 * a + 3))
            truth.append(index)
    config = ClusterConfig(min_clusters=2, n_neighbors=10)
    result = cluster.cluster_texts(texts, config, responses, cache_dir=tmp_path, show_progress=False)
    assert result.n_clusters == 3
    assert adjusted_rand_score(truth, result.labels) == 1.0
    without_responses = cluster.cluster_texts(texts, config, cache_dir=tmp_path, show_progress=False)
    assert adjusted_rand_score(truth, without_responses.labels) == 1.0
    with pytest.raises(ValueError, match="2 responses for 120 texts"):
        cluster.cluster_texts(texts, config, responses[:2], show_progress=False)


def test_a_small_pool_clusters_with_clamped_settings_that_say_so() -> None:
    embeddings, groups = gaussian_mixture(18, 3, seed=8, noise=0.5)
    result = cluster_embeddings(embeddings, ClusterConfig(min_clusters=3))
    assert result.details["clamped"] == {
        "n_neighbors": {"asked": 20, "used": 17},
        "max_clusters": {"asked": 30, "used": 16},
    }
    assert adjusted_rand_score(groups, result.labels) == 1.0


def test_settings_no_clamp_can_save_are_refused_by_key() -> None:
    with pytest.raises(ValueError, match="clustering needs at least 3 rows; the corpus has 2"):
        cluster.settings_for_rows(ClusterConfig(), 2)
    with pytest.raises(ValueError, match="clustering.n_clusters=9: cannot make 9 clusters from 8 rows"):
        cluster.settings_for_rows(ClusterConfig(n_clusters=9), 8)
    fitted, clamped = cluster.settings_for_rows(ClusterConfig(), 1000)
    assert fitted == ClusterConfig() and clamped == {}
