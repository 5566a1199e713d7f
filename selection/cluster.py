"""Clustering of sentence embeddings: spectral (diffusion map or UMAP), NMF, or k-means, with K auto or fixed.

PASER clusters the instruction embeddings to find capability groups before spreading the budget over them
(paper §3.1). The number of clusters K comes from the eigengap of the normalised kNN affinity unless the
user fixes it. Nothing N × N is ever materialised; beyond `landmark_threshold` rows the clustering is fitted
on a seeded random sample of landmarks and every other row joins the cluster of its nearest landmark.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

from selection.manifold import (
    ROW_BLOCK,
    check_embedding_rows,
    check_embeddings,
    diffusion_map,
    knn_graph,
    l2_normalise,
    normalised_affinity,
    umap_embedding,
    unit_row_blocks,
)

# Elements of the (rows × landmarks) similarity buffer reused by every assignment block (≈128 MB of
# float32: 1,600 rows against 20k landmarks). Larger row blocks or tiling the landmarks as well measured
# no faster on 2 cores; allocating a fresh buffer per block (page faults on 128 MB) cost about 15%.
_ASSIGNMENT_BLOCK_ELEMENTS = 32_000_000


@dataclass
class ClusterConfig:
    """How to cluster embeddings; defaults are what a user should run."""

    method: str = field(
        default="spectral",
        metadata={
            "help": "Clusterer: 'spectral' (k-means on manifold coordinates of the sparse kNN graph), "
            "'nmf' (the paper's NMF variant on the sparse affinity) or 'kmeans' (on raw embeddings)."
        },
    )
    manifold: str = field(
        default="diffusion",
        metadata={"help": "Coordinates for 'spectral': 'diffusion' (diffusion map) or 'umap'."},
    )
    n_clusters: int | None = field(
        default=None, metadata={"help": "Fixed number of clusters K; None picks K from the eigengap."}
    )
    min_clusters: int = field(
        default=5,
        metadata={
            "help": "Smallest K the eigengap may choose. Real instruction corpora have a smoothly decaying "
            "spectrum whose largest gap is often at K=2 (one outlying skill vs the rest: 2,000 Alpaca rows "
            "gave K=2 with a floor of 2), which leaves the allocation nothing to work with; 5 keeps K useful."
        },
    )
    max_clusters: int = field(default=30, metadata={"help": "Largest K the eigengap may choose."})
    n_neighbors: int = field(default=20, metadata={"help": "Neighbours per row in the cosine kNN graph."})
    diffusion_time: float = field(default=1.0, metadata={"help": "Diffusion time t: coordinates are ψ_i · λ_i^t."})
    landmark_threshold: int = field(
        default=200_000,
        metadata={"help": "Above this many rows, fit on landmarks and assign the rest by nearest landmark."},
    )
    n_landmarks: int = field(
        default=20_000,
        metadata={"help": "Landmark sample size when the landmark path is used (seeded random rows)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for landmarks, eigensolver start and k-means."})


@dataclass
class ClusterResult:
    """Outcome of `cluster_embeddings`.

    `labels` (N,) int64 in [0, n_clusters), numbered by first appearance in row order, none empty.
    `eigenvalues`: top eigenvalues of the normalised affinity (trivial first), None when no graph was built.
    `coordinates` (N, m): manifold coordinates (diffusion or UMAP; NMF: the factor W), None for 'kmeans';
    on the landmark path a non-landmark row gets its nearest landmark's coordinates.
    `n_landmarks`: landmark sample size, 0 when every row was fitted. `seconds`: wall seconds per step.
    """

    labels: np.ndarray
    n_clusters: int
    eigenvalues: np.ndarray | None
    coordinates: np.ndarray | None
    n_landmarks: int
    seconds: dict[str, float]


@dataclass
class _Fit:
    """What a clusterer returns for the rows it was fitted on."""

    labels: np.ndarray
    eigenvalues: np.ndarray | None
    coordinates: np.ndarray | None


class _StepTimer:
    """Accumulates wall seconds per named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def eigengap_n_clusters(eigenvalues: np.ndarray, min_clusters: int, max_clusters: int) -> int:
    """K maximising the gap `λ_{K-1} - λ_K` of consecutive eigenvalues (sorted decreasing, trivial first).

    K ranges over [min_clusters, max_clusters]; needs at least `max_clusters + 1` eigenvalues (ValueError).
    Ties go to the smallest K.
    """
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    if len(values) < max_clusters + 1:
        raise ValueError(f"eigengap up to K={max_clusters} needs {max_clusters + 1} eigenvalues; got {len(values)}")
    candidates = np.arange(min_clusters, max_clusters + 1)
    gaps = values[candidates - 1] - values[candidates]
    return int(candidates[np.argmax(gaps)])


def kmeans_cluster(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means labels (N,) int64 in [0, n_clusters) of the rows of `embeddings` (Euclidean, as given).

    Deterministic under `seed` (k-means++ init, 4 restarts). Labels are as k-means numbers them; a
    cluster can only be empty when there are fewer distinct rows than clusters.
    Refuses non-finite input, `n_clusters < 1` and fewer rows than clusters (ValueError).
    """
    array = check_embeddings(embeddings)
    _check_n_clusters(n_clusters, array.shape[0])
    model = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed)
    return model.fit_predict(array).astype(np.int64)


def _check_n_clusters(n_clusters: int, n_rows: int) -> None:
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1; got {n_clusters}")
    if n_rows < n_clusters:
        raise ValueError(f"cannot make {n_clusters} clusters from {n_rows} rows")


def _graph_spectrum(
    embeddings: np.ndarray, config: ClusterConfig, timer: _StepTimer
) -> tuple[scipy.sparse.csr_matrix, np.ndarray, np.ndarray, int]:
    """kNN affinity, diffusion map, its eigenvalues and K (fixed, or from the eigengap)."""
    with timer.step("knn_graph"):
        affinity = knn_graph(embeddings, config.n_neighbors, seed=config.seed)
    n_components = max(config.max_clusters, config.n_clusters or 0)
    with timer.step("diffusion_map"):
        diffusion = diffusion_map(affinity, n_components, config.diffusion_time, seed=config.seed)
    n_clusters = config.n_clusters or eigengap_n_clusters(
        diffusion.eigenvalues, config.min_clusters, config.max_clusters
    )
    # The first K eigenvectors, trivial one included: on a graph with several components the eigenvalue
    # 1 repeats and the "trivial" column is what tells those components apart.
    spectral_coordinates = np.column_stack([diffusion.trivial_coordinate, diffusion.coordinates])[:, :n_clusters]
    return affinity, diffusion.eigenvalues, spectral_coordinates, n_clusters


def _fit_spectral(embeddings: np.ndarray, config: ClusterConfig, timer: _StepTimer) -> _Fit:
    """k-means on the first K diffusion coordinates (or on UMAP coordinates) of the kNN graph."""
    _, eigenvalues, spectral_coordinates, n_clusters = _graph_spectrum(embeddings, config, timer)
    if config.manifold == "umap":
        with timer.step("umap"):
            coordinates = umap_embedding(embeddings, n_neighbors=config.n_neighbors, seed=config.seed)
    else:
        coordinates = spectral_coordinates
    with timer.step("kmeans"):
        labels = kmeans_cluster(coordinates, n_clusters, config.seed)
    return _Fit(labels, eigenvalues, coordinates)


def _fit_nmf(embeddings: np.ndarray, config: ClusterConfig, timer: _StepTimer) -> _Fit:
    """The paper's NMF variant: factor the sparse normalised affinity `D^-1/2 A D^-1/2 ≈ W H` with K
    non-negative components and give each row the component with the largest weight in W."""
    affinity, eigenvalues, _, n_clusters = _graph_spectrum(embeddings, config, timer)
    with timer.step("nmf"):
        normalised, _ = normalised_affinity(affinity)
        model = NMF(n_components=n_clusters, init="nndsvda", max_iter=500, random_state=config.seed)
        factor = model.fit_transform(normalised)
    return _Fit(factor.argmax(axis=1).astype(np.int64), eigenvalues, factor)


def _fit_kmeans(embeddings: np.ndarray, config: ClusterConfig, timer: _StepTimer) -> _Fit:
    """k-means on the L2-normalised embeddings; K from the graph's eigengap unless fixed."""
    eigenvalues = None
    n_clusters = config.n_clusters
    if n_clusters is None:
        _, eigenvalues, _, n_clusters = _graph_spectrum(embeddings, config, timer)
    with timer.step("kmeans"):
        labels = kmeans_cluster(l2_normalise(embeddings), n_clusters, config.seed)
    return _Fit(labels, eigenvalues, None)


Clusterer = Callable[[np.ndarray, ClusterConfig, _StepTimer], _Fit]
CLUSTERERS: dict[str, Clusterer] = {"spectral": _fit_spectral, "nmf": _fit_nmf, "kmeans": _fit_kmeans}
MANIFOLDS = ("diffusion", "umap")


def get_clusterer(name: str) -> Clusterer:
    """The clusterer registered under `name`; unknown names raise ValueError listing the known ones."""
    if name not in CLUSTERERS:
        raise ValueError(f"unknown clustering method {name!r}; known: {', '.join(sorted(CLUSTERERS))}")
    return CLUSTERERS[name]


def _check_config(config: ClusterConfig, n_rows: int) -> None:
    if config.manifold not in MANIFOLDS:
        raise ValueError(f"unknown manifold {config.manifold!r}; known: {', '.join(MANIFOLDS)}")
    if config.n_clusters is not None:
        _check_n_clusters(config.n_clusters, n_rows)
    if not 1 <= config.min_clusters <= config.max_clusters:
        raise ValueError(f"need 1 <= min_clusters <= max_clusters; got {config.min_clusters} and {config.max_clusters}")
    if config.landmark_threshold < 1 or config.n_landmarks < 1:
        raise ValueError("landmark_threshold and n_landmarks must be >= 1")


def _nearest_landmark(rows: np.ndarray, unit_landmarks: np.ndarray) -> np.ndarray:
    """Index (int64) of the most cosine-similar landmark for every one of `rows` (checked, any dtype).

    Exact: `argmax` over the float32 products of unit rows and unit landmarks, ties to the lowest index.
    Rows are normalised one block at a time as `l2_normalise` would (bitwise), so no copy of `rows` is
    made; each block's similarities land in one reused buffer and are reduced there by `argmax`.
    """
    n_landmarks = unit_landmarks.shape[0]
    # Capped: with few landmarks the buffer's rows would otherwise make the normalised block N × d.
    block_rows = max(1, min(ROW_BLOCK, _ASSIGNMENT_BLOCK_ELEMENTS // n_landmarks))
    similarities = np.empty((min(block_rows, rows.shape[0]), n_landmarks), dtype=np.float32)
    nearest = np.empty(rows.shape[0], dtype=np.int64)
    for block, unit_block in unit_row_blocks(rows, block_rows):
        block_similarities = similarities[: unit_block.shape[0]]
        np.matmul(unit_block, unit_landmarks.T, out=block_similarities)
        np.argmax(block_similarities, axis=1, out=nearest[block])
    return nearest


def _renumber_by_first_appearance(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 0..K-1 in order of first appearance (so no label is empty), and K."""
    unique_labels, first_positions, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank_of_label = np.empty(len(unique_labels), dtype=np.int64)
    rank_of_label[np.argsort(first_positions)] = np.arange(len(unique_labels))
    return rank_of_label[inverse], len(unique_labels)


def cluster_embeddings(embeddings: np.ndarray, config: ClusterConfig) -> ClusterResult:
    """Cluster the rows of `embeddings` (N, d) as `config` says; see `ClusterResult` for what is returned.

    Up to `config.landmark_threshold` rows every row is fitted. Beyond it, `config.n_landmarks` rows drawn
    at random under `config.seed` are fitted and every other row takes the label of its most
    cosine-similar landmark (exact, in blocks: N · n_landmarks · d flops, no N × N matrix).
    Memory beyond the input and the result stays bounded on the landmark path: a memory-mapped matrix is
    checked and normalised in row blocks, never copied. Deterministic under `config.seed`.
    Refuses non-finite or all-zero rows, unknown method or manifold,
    `n_clusters < 1`, fewer rows than clusters or than `n_neighbors + 1`, `max_clusters + 1 >= N` and
    `min_clusters > max_clusters` (ValueError).
    """
    clusterer = get_clusterer(config.method)
    array = check_embedding_rows(embeddings)
    n_rows = array.shape[0]
    _check_config(config, n_rows)
    timer = _StepTimer()
    use_landmarks = n_rows > config.landmark_threshold and config.n_landmarks < n_rows
    if use_landmarks:
        with timer.step("landmarks"):
            rng = np.random.default_rng(config.seed)
            landmark_ids = np.sort(rng.choice(n_rows, size=config.n_landmarks, replace=False))
        # Checked above: only the converted copy is new, and only of the landmarks.
        landmarks = np.ascontiguousarray(array[landmark_ids], dtype=np.float32)
        fit = clusterer(landmarks, config, timer)
        with timer.step("assign"):
            nearest = _nearest_landmark(array, l2_normalise(landmarks))
            # A landmark's most similar landmark is itself, unless it has an exact duplicate among the
            # landmarks; pin landmarks to their own fitted label either way.
            nearest[landmark_ids] = np.arange(len(landmark_ids))
            labels = fit.labels[nearest]
            coordinates = None if fit.coordinates is None else fit.coordinates[nearest]
    else:
        fit = clusterer(np.ascontiguousarray(array, dtype=np.float32), config, timer)
        labels, coordinates = fit.labels, fit.coordinates
    labels, n_clusters = _renumber_by_first_appearance(labels)
    return ClusterResult(
        labels=labels,
        n_clusters=n_clusters,
        eigenvalues=fit.eigenvalues,
        coordinates=coordinates,
        n_landmarks=len(landmark_ids) if use_landmarks else 0,
        seconds=timer.seconds,
    )
