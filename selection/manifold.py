"""Manifold learning on sentence embeddings: a sparse cosine kNN graph, its diffusion map, or UMAP.

Everything here scales with N·k, never N²: the kNN graph is built in row chunks (exact) or with
pynndescent (approximate), and the diffusion map takes the top eigenpairs of the sparse normalised
affinity with Lanczos (`scipy.sparse.linalg.eigsh`), which needs only sparse matrix-vector products.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg

# Exact top-k costs N² · d flops (≈2 TFLOP at 50k rows, under a minute on 2 cores); beyond this many
# rows pynndescent's approximate graph is far cheaper and its recall (>0.9) is ample for clustering.
EXACT_KNN_MAX_ROWS = 60_000
# Elements of the N-wide similarity block held at once by the exact search: 64 MB of float32 plus
# argpartition's int64 indices of the same shape (800 rows at 20k landmarks). Blocks 4x larger measured
# no faster on 2 cores and peaked at 1.3 GB on 20k landmarks, against 0.36 GB.
_SIMILARITY_BLOCK_ELEMENTS = 16_000_000
# Rows per block when a pass over all the embeddings must not hold an N × d temporary (96 MiB of float32
# at d = 384): 2.6M memory-mapped rows are checked and normalised without a second copy of the matrix.
ROW_BLOCK = 65_536
# Local-scaling bandwidth uses the distance to this neighbour (Zelnik-Manor & Perona's self-tuning choice).
_LOCAL_SCALE_NEIGHBOUR = 7


class LazyMatrix(abc.ABC):
    """An (N, d) float32 matrix whose rows are computed when they are read, so it is never held whole
    (`paser.selection.features.CombinedFeatures`: the clustering features). `check_embedding_rows`,
    `unit_row_blocks`, `l2_normalise` and the landmark path of `cluster_embeddings` read it in row blocks;
    `np.asarray` builds the whole matrix."""

    shape: tuple[int, int]
    dtype = np.dtype(np.float32)
    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @abc.abstractmethod
    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        """The rows a slice or a 1-D integer array names, as a new (n, d) float32 array."""

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(f"{type(self).__name__} computes its rows when read; it has no array to view")
        matrix = np.empty(self.shape, dtype=np.float32)
        for start in range(0, self.shape[0], ROW_BLOCK):
            matrix[start : start + ROW_BLOCK] = self[start : start + ROW_BLOCK]
        return matrix if dtype is None else matrix.astype(dtype, copy=False)


def _rows_as_float32(rows: np.ndarray) -> np.ndarray:
    """`rows` as a C-contiguous float32 array; no copy when they already are one."""
    return np.ascontiguousarray(rows, dtype=np.float32)


def check_embedding_rows(embeddings: np.ndarray | LazyMatrix) -> np.ndarray | LazyMatrix:
    """Return `embeddings` as an (N, d) ndarray of their own dtype and layout, not copied (a memory-mapped
    matrix stays a view of its file), once checked; a `LazyMatrix` is returned as it is.

    Refuses (ValueError) anything that is not 2-D, has no rows or columns, is not numeric, or holds NaN/inf
    (counting the offending rows and naming the first). The NaN/inf check converts `ROW_BLOCK` rows at a
    time to float32, so values beyond float32's range count as inf, as they would after conversion; it never
    holds an N × d temporary.
    """
    array = embeddings if isinstance(embeddings, LazyMatrix) else np.asarray(embeddings)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array (N, d); got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"embeddings must be numeric; got dtype {array.dtype}")
    bad_rows, first_bad_row = 0, -1
    for start in range(0, array.shape[0], ROW_BLOCK):
        finite_rows = np.isfinite(_rows_as_float32(array[start : start + ROW_BLOCK])).all(axis=1)
        if not finite_rows.all():
            if bad_rows == 0:
                first_bad_row = start + int(np.argmin(finite_rows))
            bad_rows += int(finite_rows.size - np.count_nonzero(finite_rows))
    if bad_rows:
        raise ValueError(
            f"embeddings hold non-finite values (NaN or inf) in {bad_rows} rows (first: row {first_bad_row})"
        )
    return array


def check_embeddings(embeddings: np.ndarray | LazyMatrix) -> np.ndarray:
    """Return `embeddings` as a C-contiguous float32 (N, d) array, copied only when they are not one already
    (a `LazyMatrix` is built whole).

    Refuses what `check_embedding_rows` refuses (ValueError): not 2-D, no rows or columns, not numeric, NaN/inf.
    """
    return _rows_as_float32(check_embedding_rows(embeddings))


def unit_row_blocks(
    embeddings: np.ndarray | LazyMatrix, block_rows: int = ROW_BLOCK
) -> Iterator[tuple[slice, np.ndarray]]:
    """Consecutive blocks of at most `block_rows` rows of `embeddings`, scaled to unit length.

    Yields `(rows, unit_block)`: the slice of `embeddings` a block covers and its rows as a new float32
    array, bitwise what `l2_normalise` returns for them (each row is scaled on its own). Memory beyond the
    input is a few blocks. Does not check finiteness (see `check_embedding_rows`); refuses all-zero rows
    (ValueError naming the first of its block), for which cosine similarity is undefined.
    """
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1; got {block_rows}")
    n_rows = embeddings.shape[0]
    for start in range(0, n_rows, block_rows):
        rows = slice(start, min(start + block_rows, n_rows))
        block = _rows_as_float32(embeddings[rows])
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        zero_rows = np.flatnonzero(norms == 0)
        if zero_rows.size:
            raise ValueError(
                f"embedding row {start + int(zero_rows[0])} is all zero ({zero_rows.size} such rows in rows "
                f"{start}..{rows.stop - 1}); cosine similarity is undefined"
            )
        yield rows, block / norms


def l2_normalise(embeddings: np.ndarray | LazyMatrix) -> np.ndarray:
    """Return a float32 copy of `embeddings` with unit-length rows, made in row blocks (no temporaries the
    size of the input). Refuses non-finite values and all-zero rows (ValueError naming the first)."""
    array = check_embedding_rows(embeddings)
    unit_rows = np.empty(array.shape, dtype=np.float32)
    for rows, unit_block in unit_row_blocks(array, ROW_BLOCK):
        unit_rows[rows] = unit_block
    return unit_rows


def _exact_neighbours(unit_rows: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`n_neighbors` cosine neighbours of every row (self excluded), by chunked matrix products."""
    n_rows = unit_rows.shape[0]
    block_rows = max(1, _SIMILARITY_BLOCK_ELEMENTS // n_rows)
    indices = np.empty((n_rows, n_neighbors), dtype=np.int64)
    similarities = np.empty((n_rows, n_neighbors), dtype=np.float32)
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        block = unit_rows[start:stop] @ unit_rows.T
        # Mask self by position, not by value: duplicate rows must still count as each other's neighbours.
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        top = np.argpartition(block, -n_neighbors, axis=1)[:, -n_neighbors:]
        indices[start:stop] = top
        similarities[start:stop] = np.take_along_axis(block, top, axis=1)
    return indices, similarities


def _approximate_neighbours(unit_rows: np.ndarray, n_neighbors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-`n_neighbors` cosine neighbours (self excluded) with pynndescent."""
    from pynndescent import NNDescent

    index = NNDescent(unit_rows, n_neighbors=n_neighbors + 1, metric="cosine", random_state=seed)
    neighbour_ids, cosine_distances = index.neighbor_graph
    n_rows = unit_rows.shape[0]
    # Drop each row's own entry; where the search did not return it (duplicates), drop the farthest instead.
    is_self = neighbour_ids == np.arange(n_rows)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    indices = neighbour_ids[keep].reshape(n_rows, n_neighbors).astype(np.int64)
    similarities = (1.0 - cosine_distances[keep]).reshape(n_rows, n_neighbors).astype(np.float32)
    return indices, similarities


def knn_graph(embeddings: np.ndarray, n_neighbors: int = 20, seed: int = 0) -> scipy.sparse.csr_matrix:
    """Symmetric sparse cosine-kNN affinity of the rows of `embeddings`.

    Returns an N × N float64 CSR matrix with zero diagonal and at most 2·N·k nonzeros. Weights are the
    self-tuning Gaussian kernel `exp(-d_ij² / (σ_i σ_j))` on the chordal distance `d = sqrt(2 - 2 cos)`
    between L2-normalised rows, σ_i being the distance to the row's 7th neighbour (or k-th if k < 7);
    the graph is symmetrised by taking the larger of `w_ij` and `w_ji`. Exact top-k (chunked products)
    up to `EXACT_KNN_MAX_ROWS` rows, pynndescent beyond (seeded by `seed`).
    Refuses non-finite or all-zero rows, `n_neighbors < 1` and `n_neighbors >= N` (ValueError).
    """
    unit_rows = l2_normalise(embeddings)
    n_rows = unit_rows.shape[0]
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1; got {n_neighbors}")
    if n_neighbors >= n_rows:
        raise ValueError(f"n_neighbors ({n_neighbors}) must be smaller than the number of rows ({n_rows})")
    if n_rows <= EXACT_KNN_MAX_ROWS:
        indices, similarities = _exact_neighbours(unit_rows, n_neighbors)
    else:
        indices, similarities = _approximate_neighbours(unit_rows, n_neighbors, seed)
    squared_distances = np.clip(2.0 - 2.0 * similarities.astype(np.float64), 0.0, None)
    scale_rank = min(_LOCAL_SCALE_NEIGHBOUR, n_neighbors) - 1
    local_scale = np.sqrt(np.sort(squared_distances, axis=1)[:, scale_rank])
    # A row whose first neighbours are exact duplicates has σ = 0; floor it so the kernel stays finite.
    local_scale = np.maximum(local_scale, 1e-6)
    weights = np.exp(-squared_distances / (local_scale[:, None] * local_scale[indices]))
    rows = np.repeat(np.arange(n_rows), n_neighbors)
    directed = scipy.sparse.csr_matrix((weights.ravel(), (rows, indices.ravel())), shape=(n_rows, n_rows))
    return directed.maximum(directed.T).tocsr()


@dataclass
class DiffusionMap:
    """Diffusion-map embedding of a graph.

    `coordinates` (N, m): the non-trivial diffusion coordinates `ψ_i · λ_i^t`, i = 1..m, ordered by
    decreasing eigenvalue. `eigenvalues` (m + 1,): the top eigenvalues of `D^-1/2 A D^-1/2`, the trivial
    one (1 for a connected graph) first. `trivial_coordinate` (N,): `ψ_0 · λ_0^t`; constant on a connected
    graph, but on a graph with several components the eigenvalue 1 repeats and this column separates them.
    """

    coordinates: np.ndarray
    eigenvalues: np.ndarray
    trivial_coordinate: np.ndarray


def _top_eigenpairs(
    normalised: scipy.sparse.csr_matrix, sqrt_degree: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top `count` eigenpairs of `S = D^-1/2 A D^-1/2`, eigenvalues decreasing.

    Lanczos finds only one copy of an exactly repeated eigenvalue, and a kNN graph of well-separated
    groups falls apart into components, each with eigenvalue 1 (eigenvector `D^1/2 1_component`). Those are
    written down exactly, largest component first, and Lanczos runs on S with them deflated.
    """
    n_rows = normalised.shape[0]
    n_parts, part_of_row = scipy.sparse.csgraph.connected_components(normalised, directed=False)
    part_sizes = np.bincount(part_of_row)
    # Largest component first; the stable sort keeps equal sizes in order of their first row.
    part_order = np.argsort(-part_sizes, kind="stable")[: min(n_parts, count)]
    unit_vectors = np.zeros((n_rows, len(part_order)))
    for column, part in enumerate(part_order):
        in_part = part_of_row == part
        unit_vectors[in_part, column] = sqrt_degree[in_part] / np.linalg.norm(sqrt_degree[in_part])
    remaining = count - len(part_order)
    if remaining == 0:
        return np.ones(count), unit_vectors
    # Every component is among those kept here (n_parts < count), so deflation leaves no unit eigenvalue.
    deflated = scipy.sparse.linalg.LinearOperator(
        normalised.shape,
        matvec=lambda x: normalised @ x - unit_vectors @ (unit_vectors.T @ x),
        dtype=np.float64,
    )
    start_vector = np.random.default_rng(seed).standard_normal(n_rows)
    values, vectors = scipy.sparse.linalg.eigsh(deflated, k=remaining, which="LA", v0=start_vector, tol=1e-8)
    order = np.argsort(values)[::-1]
    return np.concatenate([np.ones(len(part_order)), values[order]]), np.hstack([unit_vectors, vectors[:, order]])


def normalised_affinity(affinity: scipy.sparse.spmatrix) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """`(D^-1/2 A D^-1/2, degree)` of a non-negative sparse affinity A, D = diag(row sums).

    Refuses (ValueError) rows with zero degree (isolated points).
    """
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    if (degree <= 0).any():
        raise ValueError(f"{int((degree <= 0).sum())} rows of the affinity have zero degree (isolated points)")
    inverse_sqrt_degree = scipy.sparse.diags(1.0 / np.sqrt(degree))
    return (inverse_sqrt_degree @ affinity @ inverse_sqrt_degree).tocsr(), degree


def affinity_spectrum(affinity: scipy.sparse.spmatrix, count: int, seed: int = 0) -> np.ndarray:
    """The top `count` eigenvalues (decreasing, trivial first) of `D^-1/2 A D^-1/2` for a symmetric
    non-negative sparse affinity, without the eigenvectors' coordinates a diffusion map would build.
    Refuses what `diffusion_map` refuses for `n_components = count - 1` (ValueError)."""
    matrix = scipy.sparse.csr_matrix(affinity, dtype=np.float64)
    if count < 2 or count >= matrix.shape[0]:
        raise ValueError(f"count must be in [2, N - 1] = [2, {matrix.shape[0] - 1}]; got {count}")
    normalised, degree = normalised_affinity(matrix)
    eigenvalues, _ = _top_eigenpairs(normalised, np.sqrt(degree), count, seed)
    return eigenvalues


def diffusion_map(
    affinity: scipy.sparse.spmatrix, n_components: int, diffusion_time: float = 1.0, seed: int = 0
) -> DiffusionMap:
    """Diffusion map (Coifman & Lafon 2006) of a symmetric non-negative sparse affinity.

    Takes the top `n_components + 1` eigenpairs `(λ_i, v_i)` of `S = D^-1/2 A D^-1/2` with Lanczos
    (seeded start vector, so results are deterministic), sets `ψ_i = D^-1/2 v_i` (right eigenvectors of
    the random walk `D^-1 A`) and returns `ψ_i · λ_i^t`. For non-integer t a negative λ contributes
    `sign(λ)·|λ|^t`, which only flips the sign of that column. Eigenvector signs are fixed so that each
    column's largest-magnitude entry is positive. Refuses non-square or asymmetric input, rows with zero
    degree, `n_components < 1`, `n_components + 1 >= N` and `diffusion_time < 0` (ValueError).
    """
    matrix = scipy.sparse.csr_matrix(affinity, dtype=np.float64)
    n_rows = matrix.shape[0]
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"affinity must be square; got shape {matrix.shape}")
    if n_components < 1 or n_components + 1 >= n_rows:
        raise ValueError(f"n_components must be in [1, N - 2] = [1, {n_rows - 2}]; got {n_components}")
    if diffusion_time < 0:
        raise ValueError(f"diffusion_time must be >= 0; got {diffusion_time}")
    if abs(matrix - matrix.T).max() > 1e-9:
        raise ValueError("affinity must be symmetric")
    normalised, degree = normalised_affinity(matrix)
    eigenvalues, eigenvectors = _top_eigenpairs(normalised, np.sqrt(degree), n_components + 1, seed)
    psi = eigenvectors / np.sqrt(degree)[:, None]
    largest = np.abs(psi).argmax(axis=0)
    psi *= np.sign(psi[largest, np.arange(psi.shape[1])])
    scaled = psi * (np.sign(eigenvalues) * np.abs(eigenvalues) ** diffusion_time)
    return DiffusionMap(coordinates=scaled[:, 1:], eigenvalues=eigenvalues, trivial_coordinate=scaled[:, 0])


def umap_embedding(embeddings: np.ndarray, n_components: int = 10, n_neighbors: int = 20, seed: int = 0) -> np.ndarray:
    """UMAP coordinates (N, n_components), float32, of the rows of `embeddings` under cosine distance.

    Seeded (`random_state=seed`), which makes umap-learn single-threaded and deterministic.
    Refuses non-finite input, `n_components < 1` and `n_neighbors` outside [2, N - 1] (ValueError).
    """
    import umap

    array = check_embeddings(embeddings)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}")
    if not 2 <= n_neighbors < array.shape[0]:
        raise ValueError(f"n_neighbors must be in [2, N - 1] = [2, {array.shape[0] - 1}]; got {n_neighbors}")
    reducer = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, metric="cosine", random_state=seed)
    return reducer.fit_transform(array).astype(np.float32)
