"""Clustering of row features into capabilities: Leiden communities (default), the paper's spectral
clustering (diffusion map or UMAP, K from the eigengap), NMF, or k-means.

PASER clusters the instruction embeddings to find capability groups before spreading the budget over them
(paper §3.1). The paper's spectral variant fails on real task pools (measured in `bench/cluster_quality.py`):
rows that share a passage under different prompt templates form near-duplicate groups that are almost
disconnected in the kNN graph, so they take the leading eigenvectors, and the spectrum of a real instruction
corpus decays smoothly, so the eigengap K is noise (5 to 29 between draws of the same pool). The default is
therefore modularity communities of the same kNN graph (Leiden, Traag et al. 2019, through igraph) at a
coarse resolution, with every community smaller than `min_cluster_fraction` of the rows merged into the
community it has the most edges to (the near-duplicate crumbs), and the count brought into
[`min_clusters`, `max_clusters`]. Nothing N × N is ever materialised; beyond `landmark_threshold` rows the
clustering is fitted on a seeded random sample of landmarks and every other row joins the cluster of its
nearest landmark.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

from paser.common.registry import Registry, check_name
from paser.selection.config import ClusterConfig
from paser.selection.embed import embed_texts
from paser.selection.features import CombinedFeatures, cluster_features
from paser.selection.manifold import (
    ROW_BLOCK,
    LazyMatrix,
    affinity_spectrum,
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
class ClusterResult:
    """Outcome of `cluster_embeddings`.

    `labels` (N,) int64 in [0, n_clusters), numbered by first appearance in row order, none empty.
    `eigenvalues`: top eigenvalues of the normalised affinity (trivial first), None when no graph was built.
    `coordinates` (N, m): manifold coordinates (diffusion or UMAP; NMF: the factor W), None for 'kmeans';
    on the landmark path a non-landmark row gets its nearest landmark's coordinates.
    `n_landmarks`: landmark sample size, 0 when every row was fitted. `seconds`: wall seconds per step.
    `details`: what the clusterer decided on the way ('leiden': communities found, resolution used, small
    communities merged, communities merged to respect `max_clusters`).
    """

    labels: np.ndarray
    n_clusters: int
    eigenvalues: np.ndarray | None
    coordinates: np.ndarray | None
    n_landmarks: int
    seconds: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Fit:
    """What a clusterer returns for the rows it was fitted on."""

    labels: np.ndarray
    eigenvalues: np.ndarray | None
    coordinates: np.ndarray | None
    details: dict[str, Any] = field(default_factory=dict)


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


def kmeans_cluster(embeddings: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = 4) -> np.ndarray:
    """k-means labels (N,) int64 in [0, n_clusters) of the rows of `embeddings` (Euclidean, as given).

    Deterministic under `seed` (k-means++ init, `n_init` restarts). Labels are as k-means numbers them; a
    cluster can only be empty when there are fewer distinct rows than clusters.
    Refuses non-finite input, `n_clusters < 1`, `n_init < 1` and fewer rows than clusters (ValueError).
    """
    array = check_embeddings(embeddings)
    _check_n_clusters(n_clusters, array.shape[0])
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1; got {n_init}")
    model = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    return model.fit_predict(array).astype(np.int64)


def _check_n_clusters(n_clusters: int, n_rows: int) -> None:
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1; got {n_clusters}")
    if n_rows < n_clusters:
        raise ValueError(f"cannot make {n_clusters} clusters from {n_rows} rows")


def _k_from_spectrum(affinity: scipy.sparse.csr_matrix, config: ClusterConfig) -> tuple[np.ndarray, int]:
    """The affinity's top eigenvalues (trivial first) and the eigengap K in [min_clusters, max_clusters]."""
    eigenvalues = affinity_spectrum(affinity, config.max_clusters + 1, seed=config.seed)
    return eigenvalues, eigengap_n_clusters(eigenvalues, config.min_clusters, config.max_clusters)


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
    if config.manifold == "umap":
        # UMAP needs no diffusion map: only K, from the graph's eigenvalues, when it is not fixed.
        eigenvalues, n_clusters = None, config.n_clusters
        if n_clusters is None:
            with timer.step("knn_graph"):
                affinity = knn_graph(embeddings, config.n_neighbors, seed=config.seed)
            with timer.step("spectrum"):
                eigenvalues, n_clusters = _k_from_spectrum(affinity, config)
        with timer.step("umap"):
            coordinates = umap_embedding(embeddings, n_neighbors=config.n_neighbors, seed=config.seed)
    else:
        _, eigenvalues, coordinates, n_clusters = _graph_spectrum(embeddings, config, timer)
    with timer.step("kmeans"):
        labels = kmeans_cluster(coordinates, n_clusters, config.seed, config.n_init)
    return _Fit(labels, eigenvalues, coordinates)


def _fit_nmf(embeddings: np.ndarray, config: ClusterConfig, timer: _StepTimer) -> _Fit:
    """The paper's NMF variant: factor the sparse normalised affinity `D^-1/2 A D^-1/2 ≈ W H` with K
    non-negative components and give each row the component with the largest weight in W."""
    with timer.step("knn_graph"):
        affinity = knn_graph(embeddings, config.n_neighbors, seed=config.seed)
    eigenvalues, n_clusters = None, config.n_clusters
    if n_clusters is None:
        with timer.step("spectrum"):
            eigenvalues, n_clusters = _k_from_spectrum(affinity, config)
    with timer.step("nmf"):
        normalised, _ = normalised_affinity(affinity)
        model = NMF(n_components=n_clusters, init="nndsvda", max_iter=500, random_state=config.seed)
        factor = model.fit_transform(normalised)
    return _Fit(factor.argmax(axis=1).astype(np.int64), eigenvalues, factor)


def _fit_kmeans(embeddings: np.ndarray, config: ClusterConfig, timer: _StepTimer) -> _Fit:
    """k-means on the L2-normalised features; K from the graph's eigengap unless fixed."""
    eigenvalues, n_clusters = None, config.n_clusters
    if n_clusters is None:
        with timer.step("knn_graph"):
            affinity = knn_graph(embeddings, config.n_neighbors, seed=config.seed)
        with timer.step("spectrum"):
            eigenvalues, n_clusters = _k_from_spectrum(affinity, config)
    with timer.step("kmeans"):
        labels = kmeans_cluster(l2_normalise(embeddings), n_clusters, config.seed, config.n_init)
    return _Fit(labels, eigenvalues, None)


# Resolution doublings 'leiden' tries when it finds fewer communities than it must (min_clusters or a
# fixed K): 0.3 -> 19.2 covers every pool we have measured; beyond that the graph has no such structure.
_MAX_RESOLUTION_DOUBLINGS = 6


def leiden_communities(affinity: scipy.sparse.spmatrix, resolution: float, seed: int = 0) -> np.ndarray:
    """Modularity communities (N,) int64 of a symmetric non-negative sparse affinity, by the Leiden
    algorithm (igraph's `community_leiden`, iterated until the partition no longer improves), with
    modularity resolution `resolution` (higher: more, smaller communities). Deterministic under `seed`
    (igraph's random generator is seeded for the call and restored after). Refuses `resolution <= 0`
    and a non-square affinity (ValueError)."""
    import igraph

    if resolution <= 0:
        raise ValueError(f"resolution must be > 0; got {resolution}")
    if affinity.shape[0] != affinity.shape[1]:
        raise ValueError(f"affinity must be square; got shape {affinity.shape}")
    upper = scipy.sparse.triu(affinity, k=1).tocoo()
    graph = igraph.Graph(n=affinity.shape[0], edges=np.column_stack([upper.row, upper.col]).tolist())
    graph.es["weight"] = upper.data.astype(np.float64)
    igraph.set_random_number_generator(random.Random(seed))
    try:
        partition = graph.community_leiden(
            objective_function="modularity", weights="weight", resolution=resolution, n_iterations=-1
        )
    finally:
        igraph.set_random_number_generator(random)
    return np.asarray(partition.membership, dtype=np.int64)


def merge_small_clusters(
    labels: np.ndarray,
    affinity: scipy.sparse.spmatrix,
    unit_rows: np.ndarray,
    min_size: int,
    max_clusters: int | None = None,
) -> tuple[np.ndarray, int, int]:
    """Merge clusters until none has fewer than `min_size` rows and there are at most `max_clusters`.

    The smallest cluster goes first (ties: the lowest label) into the cluster it shares the most affinity
    weight with; one with no edge to another cluster (its own graph component) goes to the cluster whose
    mean unit row is the most cosine-similar (`unit_rows`, (N, d) unit-length). Stops at one cluster.
    Returns (labels renumbered 0..K-1 by first appearance, merges for size, merges for the cap).
    Works on the K × K cluster graph, never on rows: O(nnz) once, then O(K · degree) per merge.
    """
    labels, n_clusters = _renumber_by_first_appearance(np.asarray(labels))
    sizes = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    membership = scipy.sparse.csr_matrix(
        (np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(n_clusters, len(labels))
    )
    between = (membership @ scipy.sparse.csr_matrix(affinity) @ membership.T).tocoo()
    links: list[dict[int, float]] = [{} for _ in range(n_clusters)]
    for row, column, weight in zip(between.row, between.col, between.data, strict=True):
        if row != column and weight > 0:
            links[row][column] = links[row].get(column, 0.0) + float(weight)
    sums = np.asarray(membership @ unit_rows, dtype=np.float64)
    target = np.arange(n_clusters)
    alive = np.ones(n_clusters, dtype=bool)
    heap = [(int(size), cluster) for cluster, size in enumerate(sizes)]
    heapq.heapify(heap)
    remaining, merged_small, merged_cap = n_clusters, 0, 0
    while heap and remaining > 1:
        size, cluster = heap[0]
        if not alive[cluster] or size != sizes[cluster]:
            heapq.heappop(heap)
            continue
        too_small = size < min_size
        if not too_small and (max_clusters is None or remaining <= max_clusters):
            break
        heapq.heappop(heap)
        if links[cluster]:
            into = max(links[cluster], key=lambda other: (links[cluster][other], -other))
        else:
            centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
            similarity = centroids @ centroids[cluster]
            similarity[~alive] = -np.inf
            similarity[cluster] = -np.inf
            into = int(np.argmax(similarity))
        for other, weight in links[cluster].items():
            links[other].pop(cluster, None)
            if other != into:
                links[into][other] = links[into].get(other, 0.0) + weight
                links[other][into] = links[other].get(into, 0.0) + weight
        links[cluster] = {}
        sizes[into] += sizes[cluster]
        sums[into] += sums[cluster]
        alive[cluster] = False
        target[target == cluster] = into
        heapq.heappush(heap, (int(sizes[into]), int(into)))
        remaining -= 1
        merged_small += too_small
        merged_cap += not too_small
    merged, _ = _renumber_by_first_appearance(target[labels])
    return merged, merged_small, merged_cap


def _fit_leiden(embeddings: np.ndarray, config: ClusterConfig, timer: _StepTimer) -> _Fit:
    """Leiden communities of the kNN graph, small ones merged, K brought into range (see the module doc)."""
    n_rows = embeddings.shape[0]
    fewest = config.n_clusters or min(config.min_clusters, n_rows)
    most = config.n_clusters or config.max_clusters
    min_size = max(2, math.ceil(config.min_cluster_fraction * n_rows))
    with timer.step("knn_graph"):
        affinity = knn_graph(embeddings, config.n_neighbors, seed=config.seed)
    unit_rows = l2_normalise(embeddings)
    resolution = config.resolution
    with timer.step("leiden"):
        for doubling in range(_MAX_RESOLUTION_DOUBLINGS + 1):
            communities = leiden_communities(affinity, resolution, config.seed)
            labels, merged_small, _ = merge_small_clusters(communities, affinity, unit_rows, min_size)
            n_found = int(labels.max()) + 1
            if n_found >= fewest or doubling == _MAX_RESOLUTION_DOUBLINGS:
                break
            resolution *= 2
    if n_found < fewest:
        raise ValueError(
            f"leiden found {n_found} communities of at least {min_size} rows even at resolution {resolution:g}, "
            f"fewer than the {fewest} asked for (clustering.n_clusters / min_clusters); lower "
            "clustering.min_cluster_fraction or use clustering.method=kmeans for a fixed K"
        )
    # A resolution raised to reach `fewest` overshoots it (communities multiply); merge back down to it.
    with timer.step("merge"):
        cap = fewest if resolution > config.resolution else most
        labels, _, merged_cap = merge_small_clusters(labels, affinity, unit_rows, min_size, cap)
    details = {
        "communities": int(communities.max()) + 1,
        "resolution": resolution,
        "min_cluster_size": min_size,
        "merged_small": merged_small,
        "merged_to_max": merged_cap,
    }
    return _Fit(labels, None, None, details)


Clusterer = Callable[[np.ndarray, ClusterConfig, _StepTimer], _Fit]
CLUSTERERS: Registry[Clusterer] = Registry("clustering method")
CLUSTERERS.register("leiden", _fit_leiden)
CLUSTERERS.register("spectral", _fit_spectral)
CLUSTERERS.register("nmf", _fit_nmf)
CLUSTERERS.register("kmeans", _fit_kmeans)
MANIFOLDS = ("diffusion", "umap")
# The fewest rows clustering takes: the diffusion map's eigensolver needs 2 clusters below the row count.
MIN_CLUSTER_ROWS = 3


def get_clusterer(name: str) -> Clusterer:
    """The clusterer registered under `name`; unknown names raise `UnknownNameError` (a ValueError) listing the
    known ones."""
    return CLUSTERERS.get(name)


def settings_for_rows(config: ClusterConfig, n_rows: int) -> tuple[ClusterConfig, dict[str, dict[str, int]]]:
    """`config` fitted to clustering `n_rows` rows, and what was changed (`{key: {"asked", "used"}}`).

    Clamped, because a small corpus should still cluster: `n_neighbors` to `n_rows - 1`, `max_clusters` to
    `n_rows - 2` (the eigensolver's limit) and `min_clusters` to that. Refused (ValueError naming the
    `clustering.*` key), because no clamp keeps its meaning: fewer than 3 rows, and a fixed `n_clusters`
    above the row count. Also refuses what `cluster_embeddings` refuses of the settings themselves.
    `paser select` and `paser run` call it with the valid row count before scoring, so a setting the corpus
    cannot satisfy is refused before hours of scoring, not after.
    """
    if n_rows < MIN_CLUSTER_ROWS:
        raise ValueError(f"clustering needs at least {MIN_CLUSTER_ROWS} rows; the corpus has {n_rows}")
    if config.n_clusters is not None and config.n_clusters > n_rows:
        raise ValueError(
            f"clustering.n_clusters={config.n_clusters}: cannot make {config.n_clusters} clusters from {n_rows} rows"
        )
    changes: dict[str, int] = {}
    if config.n_neighbors >= n_rows:
        changes["n_neighbors"] = n_rows - 1
    if config.max_clusters > n_rows - 2:
        changes["max_clusters"] = n_rows - 2
    if config.min_clusters > changes.get("max_clusters", config.max_clusters):
        changes["min_clusters"] = changes["max_clusters"]
    fitted = replace(config, **changes)
    _check_config(fitted, n_rows)
    return fitted, {key: {"asked": getattr(config, key), "used": value} for key, value in changes.items()}


def _check_config(config: ClusterConfig, n_rows: int) -> None:
    check_name("manifold", config.manifold, MANIFOLDS)
    if config.manifold != "diffusion" and config.method != "spectral":
        raise ValueError(
            f"clustering.manifold={config.manifold} is used by clustering.method=spectral only (method is "
            f"{config.method!r}); set both"
        )
    if config.n_clusters is not None:
        _check_n_clusters(config.n_clusters, n_rows)
    if not 1 <= config.min_clusters <= config.max_clusters:
        raise ValueError(f"need 1 <= min_clusters <= max_clusters; got {config.min_clusters} and {config.max_clusters}")
    if config.landmark_threshold < 1 or config.n_landmarks < 1:
        raise ValueError("landmark_threshold and n_landmarks must be >= 1")
    check_feature_options(config)


def check_feature_options(config: ClusterConfig) -> None:
    """Refuse (ValueError, naming the `clustering.*` key) option values no row count can make valid."""
    if config.resolution <= 0:
        raise ValueError(f"clustering.resolution must be > 0; got {config.resolution}")
    if not 0 <= config.min_cluster_fraction < 1:
        raise ValueError(f"clustering.min_cluster_fraction must be in [0, 1); got {config.min_cluster_fraction}")
    if config.n_init < 1:
        raise ValueError(f"clustering.n_init must be >= 1; got {config.n_init}")
    for key in ("response_weight", "lexical_weight"):
        if getattr(config, key) < 0:
            raise ValueError(f"clustering.{key} must be >= 0; got {getattr(config, key)}")
    if config.lexical_dimensions < 1:
        raise ValueError(f"clustering.lexical_dimensions must be >= 1; got {config.lexical_dimensions}")


def _nearest_landmark(rows: np.ndarray | LazyMatrix, unit_landmarks: np.ndarray) -> np.ndarray:
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


def cluster_embeddings(embeddings: np.ndarray | LazyMatrix, config: ClusterConfig) -> ClusterResult:
    """Cluster the rows of `embeddings` (N, d) as `config` says; see `ClusterResult` for what is returned.

    Up to `config.landmark_threshold` rows every row is fitted. Beyond it, `config.n_landmarks` rows drawn
    at random under `config.seed` are fitted and every other row takes the label of its most
    cosine-similar landmark (exact, in blocks: N · n_landmarks · d flops, no N × N matrix).
    Memory beyond the input and the result stays bounded on the landmark path: a memory-mapped matrix is
    checked and normalised in row blocks, never copied, and a `LazyMatrix` (the `CombinedFeatures` that
    `features_for` returns) is computed a row block at a time, never whole. Deterministic under `config.seed`.
    Refuses non-finite or all-zero rows, unknown method or manifold,
    `n_clusters < 1`, fewer rows than clusters or than `n_neighbors + 1`, `max_clusters + 1 >= N` and
    `min_clusters > max_clusters` (ValueError).
    """
    clusterer = get_clusterer(config.method)
    config = with_seed(config)
    array = check_embedding_rows(embeddings)
    n_rows = array.shape[0]
    use_landmarks = n_rows > config.landmark_threshold and config.n_landmarks < n_rows
    config, clamped = settings_for_rows(config, config.n_landmarks if use_landmarks else n_rows)
    timer = _StepTimer()
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
        details={**fit.details, "clamped": clamped} if clamped else fit.details,
    )


def with_seed(config: ClusterConfig) -> ClusterConfig:
    """`config` with its seed resolved: an unset seed (None) is 0 in the library."""
    return config if config.seed is not None else replace(config, seed=0)


def features_for(
    config: ClusterConfig,
    prompt_embeddings: np.ndarray,
    response_embeddings: np.ndarray | None = None,
    prompt_texts: Sequence[str] | None = None,
) -> CombinedFeatures:
    """What `config` clusters on: `paser.selection.features.cluster_features` with its weights, LSA size and seed."""
    config = with_seed(config)
    return cluster_features(
        prompt_embeddings,
        response_embeddings=response_embeddings,
        prompt_texts=prompt_texts,
        response_weight=config.response_weight,
        lexical_weight=config.lexical_weight,
        lexical_dimensions=config.lexical_dimensions,
        seed=config.seed,
    )


def cluster_texts(
    texts: Sequence[str],
    config: ClusterConfig | None = None,
    responses: Sequence[str] | None = None,
    *,
    embedder: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> ClusterResult:
    """Embed and cluster in one call, for notebooks and scripts: no corpus store or shard folder needed.

    `texts` are the prompts (instruction and input, as clustering should see them) and `responses` the
    answers, one per text; `config` defaults to `ClusterConfig()`. Without `responses` the response block is
    left out (as `response_weight=0` would). `embedder` is a sentence-transformers model (default: the
    packaged all-MiniLM-L6-v2); with `cache_dir`, embeddings are cached there by content. Returns what
    `cluster_embeddings` returns for the features. Refuses what `embed_texts` and `cluster_embeddings`
    refuse, and `responses` of another length than `texts` (ValueError).
    """
    config = config or ClusterConfig()
    check_feature_options(config)
    if responses is not None and len(responses) != len(texts):
        raise ValueError(f"{len(responses)} responses for {len(texts)} texts")
    options = {"model": embedder, "batch_size": batch_size, "device": device, "show_progress": show_progress}
    cache = None if cache_dir is None else Path(cache_dir)
    prompt_embeddings = embed_texts(list(texts), cache_dir=cache, **options)
    response_embeddings = None
    if responses is not None and config.response_weight > 0:
        response_embeddings = embed_texts(list(responses), cache_dir=cache, **options)
    elif responses is None:
        config = replace(config, response_weight=0.0)
    features = features_for(config, prompt_embeddings, response_embeddings, list(texts))
    return cluster_embeddings(features, config)
