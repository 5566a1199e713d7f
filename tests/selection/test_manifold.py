"""Tests for selection.manifold: sparse kNN graph, diffusion map, UMAP."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from paser.selection import manifold
from paser.selection.manifold import (
    check_embedding_rows,
    check_embeddings,
    diffusion_map,
    knn_graph,
    l2_normalise,
    umap_embedding,
    unit_row_blocks,
)


def gaussian_mixture(n_rows: int, n_groups: int, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm 384-d rows around `n_groups` random directions, and their group ids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_groups, 384))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    groups = rng.permutation(np.arange(n_rows) % n_groups)
    rows = centres[groups] + noise * rng.standard_normal((n_rows, 384)) / np.sqrt(384)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32), groups


def test_knn_graph_is_sparse_symmetric_with_at_most_2nk_nonzeros() -> None:
    embeddings, _ = gaussian_mixture(300, 5)
    affinity = knn_graph(embeddings, n_neighbors=10)
    assert scipy.sparse.issparse(affinity)
    assert affinity.shape == (300, 300)
    assert 300 * 10 <= affinity.nnz <= 300 * 2 * 10
    assert abs(affinity - affinity.T).max() == 0
    assert affinity.diagonal().sum() == 0


def test_knn_graph_links_rows_of_the_same_group() -> None:
    embeddings, groups = gaussian_mixture(300, 5)
    affinity = knn_graph(embeddings, n_neighbors=10).tocoo()
    assert (groups[affinity.row] == groups[affinity.col]).mean() > 0.99


@pytest.mark.slow  # pynndescent's numba compilation takes minutes on a cold cache
def test_approximate_knn_graph_agrees_with_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    embeddings, _ = gaussian_mixture(400, 4)
    exact = knn_graph(embeddings, n_neighbors=10)
    monkeypatch.setattr(manifold, "EXACT_KNN_MAX_ROWS", 100)
    approximate = knn_graph(embeddings, n_neighbors=10)
    shared_edges = exact.multiply(approximate > 0).nnz
    assert shared_edges / exact.nnz > 0.9


def test_exact_knn_graph_in_row_blocks_equals_the_one_block_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    embeddings, _ = gaussian_mixture(300, 5, noise=2.0)
    one_block = knn_graph(embeddings, n_neighbors=10)
    monkeypatch.setattr(manifold, "_SIMILARITY_BLOCK_ELEMENTS", 7 * 300 + 5)
    in_blocks = knn_graph(embeddings, n_neighbors=10)
    np.testing.assert_array_equal(in_blocks.indptr, one_block.indptr)
    np.testing.assert_array_equal(in_blocks.indices, one_block.indices)
    # the same neighbours; their similarities agree to float rounding (a block's matmul sums in another order)
    np.testing.assert_allclose(in_blocks.data, one_block.data, rtol=1e-6, atol=0)


def test_duplicate_rows_are_each_others_neighbours() -> None:
    embeddings, _ = gaussian_mixture(50, 2)
    embeddings[1] = embeddings[0]
    affinity = knn_graph(embeddings, n_neighbors=5)
    assert np.isfinite(affinity.data).all()
    assert affinity[0, 1] > 0


def test_knn_graph_refuses_non_finite_rows_and_too_many_neighbours() -> None:
    embeddings, _ = gaussian_mixture(30, 2)
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_graph(embeddings, n_neighbors=30)
    embeddings[3, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        knn_graph(embeddings, n_neighbors=5)


def test_non_finite_rows_are_counted_across_row_blocks_and_the_first_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(manifold, "ROW_BLOCK", 4)
    embeddings = np.ones((20, 3), dtype=np.float32)
    embeddings[5, 1] = np.nan
    embeddings[6, 0] = embeddings[6, 2] = np.inf
    embeddings[17, 2] = -np.inf
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in 3 rows \(first: row 5\)"):
        check_embeddings(embeddings)


def test_values_beyond_float32_range_are_refused_as_non_finite() -> None:
    embeddings = np.ones((3, 2))
    embeddings[2, 0] = 1e39
    with pytest.raises(ValueError, match=r"in 1 rows \(first: row 2\)"), np.errstate(over="ignore"):
        check_embeddings(embeddings)


def test_check_embedding_rows_returns_a_memmap_without_copying_it(tmp_path: Path) -> None:
    embeddings = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=(50, 8))
    embeddings[:] = 1.0
    checked = check_embedding_rows(embeddings)
    assert np.shares_memory(checked, embeddings)
    assert np.shares_memory(check_embeddings(embeddings), embeddings)


def test_checking_a_large_matrix_holds_no_temporary_of_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifold, "ROW_BLOCK", 1000)
    embeddings = np.ones((40_000, 64), dtype=np.float32)
    tracemalloc.start()
    try:
        check_embedding_rows(embeddings)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < embeddings.nbytes / 20


def test_l2_normalise_in_row_blocks_is_bitwise_the_whole_matrix_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifold, "ROW_BLOCK", 7)
    rng = np.random.default_rng(0)
    embeddings = np.asfortranarray(rng.standard_normal((101, 33)) * rng.uniform(0.1, 10.0, (101, 1)))
    # C order first, as `check_embeddings` converts: norms summed along strided rows differ in the last bit.
    as_float32 = np.ascontiguousarray(embeddings, dtype=np.float32)
    expected = as_float32 / np.linalg.norm(as_float32, axis=1, keepdims=True)
    unit_rows = l2_normalise(embeddings)
    assert unit_rows.dtype == np.float32 and unit_rows.flags.c_contiguous
    np.testing.assert_array_equal(unit_rows, expected)


def test_unit_row_blocks_cover_the_rows_in_order_as_l2_normalise_makes_them() -> None:
    embeddings, _ = gaussian_mixture(23, 2)
    embeddings *= 3.0
    blocks = list(unit_row_blocks(embeddings, block_rows=10))
    assert [(rows.start, rows.stop) for rows, _ in blocks] == [(0, 10), (10, 20), (20, 23)]
    np.testing.assert_array_equal(np.concatenate([block for _, block in blocks]), l2_normalise(embeddings))


def test_all_zero_rows_are_refused_naming_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifold, "ROW_BLOCK", 4)
    embeddings = np.ones((12, 3), dtype=np.float32)
    embeddings[[9, 11]] = 0.0
    with pytest.raises(ValueError, match=r"embedding row 9 is all zero \(2 such rows in rows 8..11\)"):
        l2_normalise(embeddings)


def test_diffusion_map_eigenvalues_show_one_unit_eigenvalue_per_separated_group() -> None:
    embeddings, _ = gaussian_mixture(300, 5)
    result = diffusion_map(knn_graph(embeddings, n_neighbors=10), n_components=8)
    assert result.eigenvalues.shape == (9,)
    assert result.coordinates.shape == (300, 8)
    assert np.all(np.diff(result.eigenvalues) <= 1e-12)
    np.testing.assert_allclose(result.eigenvalues[:5], 1.0, atol=1e-6)
    assert result.eigenvalues[5] < 0.9


def test_diffusion_coordinates_are_random_walk_eigenvectors_scaled_by_eigenvalue_power() -> None:
    embeddings, _ = gaussian_mixture(200, 3, noise=3.0)
    affinity = knn_graph(embeddings, n_neighbors=10)
    result = diffusion_map(affinity, n_components=4, diffusion_time=2.0)
    transition = scipy.sparse.diags(1.0 / np.asarray(affinity.sum(axis=1)).ravel()) @ affinity
    for column, eigenvalue in enumerate(result.eigenvalues[1:]):
        coordinate = result.coordinates[:, column]
        np.testing.assert_allclose(transition @ coordinate, eigenvalue * coordinate, atol=1e-6)


def test_diffusion_map_is_deterministic_under_seed() -> None:
    embeddings, _ = gaussian_mixture(200, 3, noise=3.0)
    affinity = knn_graph(embeddings, n_neighbors=10)
    first = diffusion_map(affinity, n_components=4, seed=3)
    second = diffusion_map(affinity, n_components=4, seed=3)
    np.testing.assert_array_equal(first.coordinates, second.coordinates)


def test_diffusion_map_refuses_asymmetric_affinity() -> None:
    affinity = scipy.sparse.random(20, 20, density=0.3, random_state=0, format="csr")
    with pytest.raises(ValueError, match="symmetric"):
        diffusion_map(affinity, n_components=3)


def test_umap_embedding_has_requested_shape_and_is_deterministic() -> None:
    embeddings, _ = gaussian_mixture(200, 3)
    first = umap_embedding(embeddings, n_components=3, n_neighbors=10, seed=1)
    second = umap_embedding(embeddings, n_components=3, n_neighbors=10, seed=1)
    assert first.shape == (200, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
