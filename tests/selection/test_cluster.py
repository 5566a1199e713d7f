"""Tests for selection.cluster: spectral, NMF and k-means clustering, eigengap K, landmarks."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from selection import cluster, manifold
from selection.cluster import (
    CLUSTERERS,
    ClusterConfig,
    cluster_embeddings,
    eigengap_n_clusters,
    get_clusterer,
    kmeans_cluster,
)
from tests.selection.test_manifold import gaussian_mixture


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    """Five clear groups of 80 unit-norm 384-d rows each."""
    return gaussian_mixture(400, 5, seed=1)


def test_spectral_recovers_mixture_with_fixed_k(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, groups = mixture
    result = cluster_embeddings(embeddings, ClusterConfig(n_clusters=5))
    assert result.n_clusters == 5
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_spectral_eigengap_finds_the_true_number_of_groups(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    embeddings, groups = mixture
    result = cluster_embeddings(embeddings, ClusterConfig())
    assert result.n_clusters == 5
    assert adjusted_rand_score(groups, result.labels) >= 0.9


def test_eigengap_finds_k_on_a_connected_noisy_mixture() -> None:
    embeddings, groups = gaussian_mixture(600, 6, seed=2, noise=2.5)
    result = cluster_embeddings(embeddings, ClusterConfig(n_neighbors=15))
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
    config = ClusterConfig(n_clusters=4, seed=7)
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
    config = ClusterConfig(n_clusters=5, n_neighbors=10)
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
    config = ClusterConfig(landmark_threshold=1000, n_landmarks=300, n_neighbors=10, seed=3)
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


def test_landmark_path_on_a_memmap_makes_no_copy_of_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows, _ = gaussian_mixture(20_000, 4, seed=6, noise=2.0)
    embeddings = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=rows.shape)
    embeddings[:] = rows
    del rows
    # 500-row blocks for the check and, through the cap on assignment blocks, for the assignment.
    monkeypatch.setattr(manifold, "ROW_BLOCK", 500)
    monkeypatch.setattr(cluster, "ROW_BLOCK", 500)
    config = ClusterConfig(method="kmeans", n_clusters=4, landmark_threshold=1000, n_landmarks=200)
    tracemalloc.start()
    try:
        result = cluster_embeddings(embeddings, config)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
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
    result = cluster_embeddings(embeddings, ClusterConfig(manifold="umap", n_clusters=5))
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
    with pytest.raises(ValueError, match="known: kmeans, nmf, spectral"):
        get_clusterer("dbscan")
    assert set(CLUSTERERS) == {"spectral", "nmf", "kmeans"}


def test_unknown_manifold_is_refused(mixture: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="unknown manifold 'tsne'; known: diffusion, umap"):
        cluster_embeddings(mixture[0], ClusterConfig(manifold="tsne"))


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
