"""Selection strategies: per-row scores and clusters in, an ordered list of ids out.

`paser` is the method of the paper (allocation ∝ cluster CDS, IES ranking, CCG filter with refill), with
a switch per component for ablations; the others are the baselines it is compared against. Strategies are
registered by name; `get_strategy("paser", ccg=False)` builds one with options.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from selection.allocate import allocate_budget
from selection.consistency import (
    ConceptCache,
    ConceptConsistencyGraph,
    ConceptExtractor,
    PrefetchedConcepts,
    SerialConcepts,
)
from selection.prioritize import COST_KINDS, efficiency_score, rank_within_cluster

BASE_COLUMNS = ("id", "cluster", "cds", "prompt_tokens", "response_tokens", "nll_original", "nll_pruned")
CLUSTER_COLUMNS = ("cluster", "size", "mean_cds", "budget", "selected", "ccg_rejected")


@dataclass
class SelectionInputs:
    """Everything a strategy may use, aligned row by row.

    `table` has one row per valid sample in corpus order, with columns `id` (str, unique), `cluster` (int),
    `cds` (mean response-token JSD, nats, in [0, ln 2]), `prompt_tokens`, `response_tokens` (int),
    `nll_original`, `nll_pruned` (mean response NLL, nats) and optionally `nll_pruned_unconditioned` (the
    response NLL under the pruned model without the prompt; `ifd` needs it). `embeddings` (N × d float32,
    L2-normalised) are needed by k-means based strategies, `concept_text(id)` by the CCG. `concept_cache`
    (optional) remembers the CCG's concepts per text, in memory or in a folder, for the next selection over
    the same rows (a budget sweep); the strategy reads and fills it.
    """

    table: pd.DataFrame
    embeddings: np.ndarray | None = None
    concept_text: Callable[[str], str] | None = None
    seed: int = 0
    concept_cache: ConceptCache | None = None


@dataclass
class SelectionResult:
    """What a strategy chose.

    `ids`: the chosen ids in selection order, unique, exactly `budget` of them (all rows for `full`).
    `clusters`: one row per cluster with at least the columns of `CLUSTER_COLUMNS` (`budget` is the first
    allocation, `selected` what the cluster finally gave), or None for strategies without clusters.
    `stats`: strategy-specific counts. `scores`: the score each row was ranked by, indexed by id, or None.
    """

    ids: list[str]
    clusters: pd.DataFrame | None
    stats: dict[str, Any]
    scores: pd.Series | None = None


class Strategy(Protocol):
    """A selection strategy: `select(inputs, budget)` with `1 <= budget <= len(inputs.table)`."""

    name: ClassVar[str]

    def select(self, inputs: SelectionInputs, budget: int) -> SelectionResult: ...


STRATEGIES: dict[str, type] = {}


def register_strategy(name: str) -> Callable[[type], type]:
    """Class decorator registering a strategy dataclass under `name` (its fields are its options)."""

    def register(cls: type) -> type:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return register


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy registered as `name` with `options`.

    Refuses an unknown name (listing the known ones) and unknown options (listing the accepted ones).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    cls = STRATEGIES[name]
    accepted = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for strategy {name!r}; "
            f"accepted: {', '.join(accepted) if accepted else 'none'}"
        )
    return cls(**options)


@register_strategy("paser")
@dataclass
class PaserStrategy:
    """PASER: allocate the budget ∝ cluster CDS, rank by IES inside each cluster, filter with the CCG.

    Options (each switch is one of the paper's ablations): `manifold` (False: k-means clusters on the
    embeddings, K = the number of clusters in the table, in place of the manifold clusters);
    `degradation_allocation` (False: budget ∝ cluster size); `ranking` ("ies", "cds" = IES off, "random");
    `ccg` (False: no consistency filter); `cost` ("squared" or "linear", for IES; both give the same order,
    since log((p + r)²) = 2 log(p + r), and differ only in the reported scores); `max_concepts` and
    `concept_max_ngram` for the YAKE concepts, or `concept_extractor` (text -> concepts) to replace YAKE.

    The walk: clusters in descending cluster CDS (ties by label) each take their ranked rows in turn,
    offering every row to one CCG shared by all clusters; a rejected row's slot is refilled by the
    cluster's next row. A cluster that runs out of rows before its quota keeps what it achieved, and the
    shortfall is split over the clusters that still have rows with `allocate_budget` (∝ weight, capped by
    their remaining rows), repeated until the budget is met or every row has been offered. If the CCG
    rejected so many rows that the budget still cannot be met, rejected rows are readmitted (split over
    clusters the same way, each cluster's in rank order) and counted as `ccg_readmitted`, so the result has
    exactly `budget` ids.

    Concepts (see `selection.consistency`): with `concept_workers` = 0 they are extracted in this process
    for exactly the rows offered, when offered. Otherwise `concept_workers` processes (None: os.cpu_count())
    extract them ahead of the walk, in tasks of `concept_batch_rows` rows, for the next
    `concept_prefetch_rows` rows the walk is expected to offer (each cluster's remaining quota divided by the
    CCG's acceptance rate so far, in walk order); the selection is the same either way, but rows expected
    and then not offered are extracted too. `inputs.concept_cache` remembers concepts per text across
    selections. A custom `concept_extractor` must pickle to run in workers, and needs a `settings()` method
    (what determines its output) to use a cache.

    `ccg_max_offers_per_slot` (None: no bound, the paper's walk) bounds how many rows one cluster may offer
    per row of its quota: once a cluster has offered that many times its quota and still falls short, it
    stops as if it had run out of rows, its shortfall going to the other clusters (and, at the end, to
    readmitted rows). The quota is the cluster's quota of the round, so the walk offers at most
    `ccg_max_offers_per_slot` × (budget + `rows_reallocated`) rows (rounded up per cluster): a bound on the
    concept extraction when the CCG rejects most rows, at the price of departing from the paper, whose walk
    offers every row it needs to.

    `clusters` adds `ccg_readmitted` (how many of the cluster's `ccg_rejected` rows came back) and
    `exhausted` (every row was offered, or the offer bound was reached) to the common columns;
    `stats["ccg"]` holds the graph's counts and `stats["concepts_extracted"]` how many rows were extracted
    (not found in the cache).
    """

    name: ClassVar[str]
    manifold: bool = True
    degradation_allocation: bool = True
    ranking: str = "ies"
    ccg: bool = True
    cost: str = "squared"
    max_concepts: int = 5
    concept_max_ngram: int = 2
    concept_extractor: Callable[[str], tuple[str, ...]] | None = None
    concept_workers: int | None = None
    concept_batch_rows: int = 32
    concept_prefetch_rows: int = 1024
    ccg_max_offers_per_slot: float | None = None

    RANKINGS: ClassVar[tuple[str, ...]] = ("ies", "cds", "random")

    def __post_init__(self) -> None:
        if self.ranking not in self.RANKINGS:
            raise ValueError(f"unknown ranking {self.ranking!r}; known: {', '.join(self.RANKINGS)}")
        if self.cost not in COST_KINDS:
            raise ValueError(f"unknown cost kind {self.cost!r}; known: {', '.join(COST_KINDS)}")
        if self.concept_workers is not None and self.concept_workers < 0:
            raise ValueError(f"concept_workers must be >= 0 or None (one per CPU), got {self.concept_workers}")
        if self.concept_batch_rows < 1 or self.concept_prefetch_rows < self.concept_batch_rows:
            raise ValueError(
                "need 1 <= concept_batch_rows <= concept_prefetch_rows, got "
                f"{self.concept_batch_rows} and {self.concept_prefetch_rows}"
            )
        if self.ccg_max_offers_per_slot is not None and self.ccg_max_offers_per_slot < 1:
            raise ValueError(f"ccg_max_offers_per_slot must be >= 1 or None, got {self.ccg_max_offers_per_slot}")
        if self.ccg and self.concept_extractor is None:
            # Kept on the strategy so that repeated serial selections reuse its per-text cache (worker
            # processes see each text once; a budget sweep keeps their concepts in inputs.concept_cache).
            self.concept_extractor = ConceptExtractor(top_n=self.max_concepts, max_ngram=self.concept_max_ngram)

    def select(self, inputs: SelectionInputs, budget: int) -> SelectionResult:
        table = _validated_table(inputs, budget, BASE_COLUMNS, self.name)
        if self.ccg and inputs.concept_text is None:
            raise ValueError("paser with ccg=True needs inputs.concept_text (id -> text) to extract concepts")
        ids = table["id"].to_numpy(dtype=str)
        cds = table["cds"].to_numpy(dtype=np.float64)
        labels = _table_clusters(table) if self.manifold else _kmeans_labels(inputs, _n_table_clusters(table))
        scores = self._scores(table, inputs.seed)

        cluster_labels, members = _members_by_cluster(labels)
        sizes = np.array([m.size for m in members], dtype=np.int64)
        mean_cds = np.array([cds[m].mean() for m in members])
        weights = mean_cds if self.degradation_allocation else sizes.astype(np.float64)
        ranked = [m[rank_within_cluster(scores[m], ids[m])] for m in members]
        walk_order = sorted(range(len(members)), key=lambda k: (-mean_cds[k], cluster_labels[k]))
        walk = _PaserWalk(ranked, walk_order, weights, budget, self.ccg_max_offers_per_slot)

        graph = None
        extracted = 0
        if self.ccg:
            graph = ConceptConsistencyGraph(rule="paper")
            with self._concepts(inputs, ids, walk, graph) as concepts_of:
                walk.run(lambda row: graph.offer(concepts_of(ids[row])))
            extracted = concepts_of.extracted
        else:
            walk.run(None)

        clusters = pd.DataFrame(
            {
                "cluster": cluster_labels,
                "size": sizes,
                "mean_cds": mean_cds,
                "budget": walk.initial_quota,
                "selected": [len(c) for c in walk.chosen],
                "ccg_rejected": [len(r) for r in walk.rejected],
                "ccg_readmitted": walk.readmitted,
                "exhausted": walk.stopped | (walk.cursor >= sizes),
            }
        )
        stats: dict[str, Any] = {
            "strategy": self.name,
            "budget": budget,
            "n_rows": len(table),
            "n_clusters": len(members),
            "manifold": self.manifold,
            "degradation_allocation": self.degradation_allocation,
            "ranking": self.ranking,
            "cost": self.cost,
            "allocation_rounds": walk.rounds,
            "rows_reallocated": walk.reallocated,
            "ccg": graph.stats() if graph is not None else None,
            "ccg_readmitted": int(walk.readmitted.sum()),
            "ccg_max_offers_per_slot": self.ccg_max_offers_per_slot,
            "concepts_extracted": extracted,
        }
        return SelectionResult(
            ids=[str(ids[row]) for row in walk.order],
            clusters=clusters,
            stats=stats,
            scores=pd.Series(scores, index=ids, name=self.ranking),
        )

    def _concepts(
        self, inputs: SelectionInputs, ids: np.ndarray, walk: _PaserWalk, graph: ConceptConsistencyGraph
    ) -> SerialConcepts | PrefetchedConcepts:
        """Where the walk gets a row's concepts: in this process, or from worker processes ahead of it."""
        cache = inputs.concept_cache
        if cache is not None:
            settings = getattr(self.concept_extractor, "settings", None)
            if settings is None:
                raise ValueError(
                    f"inputs.concept_cache needs an extractor with a settings() method (what determines its "
                    f"concepts) to tell caches apart; {self.concept_extractor!r} has none"
                )
            cache.bind(settings())
        workers = self.concept_workers if self.concept_workers is not None else os.cpu_count() or 1
        if workers == 0:
            return SerialConcepts(self.concept_extractor, inputs.concept_text, cache)

        def plan() -> Iterator[str]:
            acceptance = (graph.accepted + 1) / (graph.offered + 1)
            for row in walk.upcoming_rows(acceptance, self.concept_prefetch_rows):
                yield str(ids[row])

        return PrefetchedConcepts(
            self.concept_extractor,
            inputs.concept_text,
            plan,
            workers=workers,
            batch_rows=self.concept_batch_rows,
            window=self.concept_prefetch_rows,
            cache=cache,
        )

    def _scores(self, table: pd.DataFrame, seed: int) -> np.ndarray:
        if self.ranking == "ies":
            return efficiency_score(
                table["cds"].to_numpy(),
                table["prompt_tokens"].to_numpy(),
                table["response_tokens"].to_numpy(),
                self.cost,
            )
        if self.ranking == "cds":
            return table["cds"].to_numpy(dtype=np.float64)
        return np.random.default_rng(seed).random(len(table))


class _PaserWalk:
    """The state of paser's walk over the ranked clusters (the rules are in `PaserStrategy`'s docstring).

    `ranked[k]`: cluster k's row positions, best first; `walk_order`: the clusters in walk order;
    `offer_limit[k]`: how many of cluster k's rows may be offered (all of them, unless
    `max_offers_per_slot` bounds it by the cluster's quota at the time); `stopped[k]`: cluster k ended a
    round short of its quota, so it takes no more. After `run`: `order` (the chosen rows in selection
    order), `chosen`/`rejected` per cluster, `cursor` (rows offered per cluster), `readmitted`, `rounds`,
    `reallocated`, `initial_quota`.
    """

    def __init__(
        self,
        ranked: list[np.ndarray],
        walk_order: list[int],
        weights: np.ndarray,
        budget: int,
        max_offers_per_slot: float | None,
    ):
        self.ranked, self.walk_order, self.weights, self.budget = ranked, walk_order, weights, budget
        self.max_offers_per_slot = max_offers_per_slot
        self.sizes = np.array([r.size for r in ranked], dtype=np.int64)
        self.initial_quota = allocate_budget(weights, self.sizes, budget)
        self.quota = self.initial_quota.copy()
        self.offer_limit = self._offer_limit()
        self.cursor = np.zeros(len(ranked), dtype=np.int64)
        self.stopped = np.zeros(len(ranked), dtype=bool)
        self.chosen: list[list[int]] = [[] for _ in ranked]
        self.rejected: list[list[int]] = [[] for _ in ranked]
        self.readmitted = np.zeros(len(ranked), dtype=np.int64)
        self.order: list[int] = []
        self.rounds = 0
        self.reallocated = 0
        self._position = 0  # in walk_order, of the cluster now offering

    def run(self, accept: Callable[[int], bool] | None) -> None:
        """Walk until the budget is met; `accept(row)` is the CCG's verdict (None: accept every row)."""
        chosen, rejected, cursor, quota = self.chosen, self.rejected, self.cursor, self.quota
        while True:
            self.rounds += 1
            for position, k in enumerate(self.walk_order):
                self._position = position
                while len(chosen[k]) < quota[k] and cursor[k] < self.offer_limit[k]:
                    row = int(self.ranked[k][cursor[k]])
                    # Asked before the cursor moves on, so that the rows planned next start with this one.
                    if accept is None or accept(row):
                        chosen[k].append(row)
                        self.order.append(row)
                    else:
                        rejected[k].append(row)
                    cursor[k] += 1
            # A cluster short of its quota at the end of a round has run out of rows (or offers): it keeps
            # what it achieved, and the clusters that still have rows take over its shortfall.
            achieved = np.array([len(c) for c in chosen], dtype=np.int64)
            self.stopped |= achieved < quota
            shortfall = self.budget - len(self.order)
            capacity = np.where(self.stopped, 0, self.sizes - cursor)
            if shortfall == 0 or capacity.sum() == 0:
                break
            extra = allocate_budget(self.weights, capacity, shortfall)
            quota[:] = achieved + extra
            self.reallocated += int(extra.sum())
            self.offer_limit = np.maximum(self._offer_limit(), cursor)

        shortfall = self.budget - len(self.order)
        if shortfall > 0:
            rejected_counts = np.array([len(r) for r in rejected], dtype=np.int64)
            self.readmitted = allocate_budget(self.weights, rejected_counts, shortfall)
            for k in self.walk_order:
                readmit_rows = rejected[k][: self.readmitted[k]]
                chosen[k].extend(readmit_rows)
                self.order.extend(readmit_rows)

    def upcoming_rows(self, acceptance: float, limit: int) -> Iterator[int]:
        """Up to `limit` rows the walk is expected to offer next in this round, the next one first: from the
        cluster now offering on, each cluster's next rows, as many as its missing rows / `acceptance`."""
        left = limit
        for k in self.walk_order[self._position :]:
            missing = int(self.quota[k]) - len(self.chosen[k])
            if missing <= 0:
                continue
            start = int(self.cursor[k])
            stop = min(start + math.ceil(missing / acceptance), int(self.offer_limit[k]), start + left)
            yield from (int(row) for row in self.ranked[k][start:stop])
            left -= stop - start
            if left <= 0:
                return

    def _offer_limit(self) -> np.ndarray:
        if self.max_offers_per_slot is None:
            return self.sizes.copy()
        bound = np.ceil(self.max_offers_per_slot * self.quota).astype(np.int64)
        return np.minimum(bound, self.sizes)


@register_strategy("random")
@dataclass
class RandomStrategy:
    """Uniform random rows without replacement, seeded by `inputs.seed`; ids in draw order."""

    name: ClassVar[str]

    def select(self, inputs: SelectionInputs, budget: int) -> SelectionResult:
        table = _validated_table(inputs, budget, ("id",), self.name)
        rows = np.random.default_rng(inputs.seed).choice(len(table), size=budget, replace=False)
        ids = table["id"].to_numpy(dtype=str)
        return SelectionResult(ids=[str(i) for i in ids[rows]], clusters=None, stats={"strategy": self.name})


@register_strategy("full")
@dataclass
class FullStrategy:
    """Every row in corpus order: the no-selection reference. The budget is ignored (recorded in stats)."""

    name: ClassVar[str]

    def select(self, inputs: SelectionInputs, budget: int) -> SelectionResult:
        table = _validated_table(inputs, None, ("id",), self.name)
        stats = {"strategy": self.name, "budget_ignored": budget, "selected": len(table)}
        return SelectionResult(ids=[str(i) for i in table["id"]], clusters=None, stats=stats)


@dataclass
class _ColumnTopK:
    """The `budget` rows with the highest value in `column` (ties by id), no clusters, no CCG."""

    name: ClassVar[str]
    column: ClassVar[str]

    def select(self, inputs: SelectionInputs, budget: int) -> SelectionResult:
        table = _validated_table(inputs, budget, ("id", self.column), self.name)
        return _top_k(self.name, table, table[self.column].to_numpy(dtype=np.float64), budget, self.column)


@register_strategy("cds_topk")
@dataclass
class CdsTopKStrategy(_ColumnTopK):
    """The `budget` rows with the highest CDS (ties by id), no clusters, no CCG."""

    column: ClassVar[str] = "cds"


@register_strategy("loss")
@dataclass
class LossStrategy(_ColumnTopK):
    """The `budget` rows the pruned model finds hardest: highest mean response NLL (`nll_pruned`)."""

    column: ClassVar[str] = "nll_pruned"


@register_strategy("ifd")
@dataclass
class IfdStrategy:
    """Instruction-following difficulty (Li et al., "Cherry LLM"), highest first, under the pruned model.

    `IFD_i = nll_pruned_i / nll_pruned_unconditioned_i`: how much the prompt fails to help the model
    produce the response. Needs the `nll_pruned_unconditioned` column; refuses rows where it is <= 0 or not
    finite. Unlike Cherry LLM, rows with IFD > 1 are not filtered out (every strategy returns `budget` ids).
    """

    name: ClassVar[str]

    def select(self, inputs: SelectionInputs, budget: int) -> SelectionResult:
        table = _validated_table(inputs, budget, ("id", "nll_pruned", "nll_pruned_unconditioned"), self.name)
        unconditioned = table["nll_pruned_unconditioned"].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(unconditioned) | (unconditioned <= 0))
        if bad.size:
            raise ValueError(
                f"ifd needs nll_pruned_unconditioned > 0 and finite; {bad.size} row(s) are not, "
                f"first id {table['id'].iloc[bad[0]]!r}"
            )
        ifd = table["nll_pruned"].to_numpy(dtype=np.float64) / unconditioned
        return _top_k(self.name, table, ifd, budget, "ifd")


@register_strategy("kmeans_diverse")
@dataclass
class KMeansDiverseStrategy:
    """k-means on the embeddings, an equal budget per cluster (water-filled), random rows inside each.

    `n_clusters`: K, or None for the number of clusters in `table.cluster`. Seeded by `inputs.seed` for
    both k-means and the within-cluster draw. Ids come cluster by cluster (ascending label).
    """

    name: ClassVar[str]
    n_clusters: int | None = None

    def __post_init__(self) -> None:
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1 or None, got {self.n_clusters}")

    def select(self, inputs: SelectionInputs, budget: int) -> SelectionResult:
        table = _validated_table(inputs, budget, ("id", "cds"), self.name)
        n_clusters = self.n_clusters if self.n_clusters is not None else _n_table_clusters(table)
        labels = _kmeans_labels(inputs, n_clusters)
        cluster_labels, members = _members_by_cluster(labels)
        sizes = np.array([m.size for m in members], dtype=np.int64)
        quota = allocate_budget(np.ones(len(members)), sizes, budget)
        rng = np.random.default_rng(inputs.seed)
        ids = table["id"].to_numpy(dtype=str)
        order = [int(row) for m, q in zip(members, quota, strict=True) for row in rng.permutation(m)[:q]]
        cds = table["cds"].to_numpy(dtype=np.float64)
        clusters = pd.DataFrame(
            {
                "cluster": cluster_labels,
                "size": sizes,
                "mean_cds": [cds[m].mean() for m in members],
                "budget": quota,
                "selected": quota,
                "ccg_rejected": np.zeros(len(members), dtype=np.int64),
            }
        )
        stats = {"strategy": self.name, "n_clusters": len(members)}
        return SelectionResult(ids=[str(ids[row]) for row in order], clusters=clusters, stats=stats)


def _top_k(name: str, table: pd.DataFrame, scores: np.ndarray, budget: int, score_name: str) -> SelectionResult:
    ids = table["id"].to_numpy(dtype=str)
    rows = rank_within_cluster(scores, ids)[:budget]
    return SelectionResult(
        ids=[str(i) for i in ids[rows]],
        clusters=None,
        stats={"strategy": name},
        scores=pd.Series(scores, index=ids, name=score_name),
    )


def _validated_table(
    inputs: SelectionInputs, budget: int | None, columns: tuple[str, ...], strategy: str
) -> pd.DataFrame:
    """The table, after checking the columns `strategy` needs, unique ids and (unless None) the budget."""
    table = inputs.table
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs column(s) {', '.join(missing)} in inputs.table")
    if len(table) == 0:
        raise ValueError("inputs.table has no rows to select from")
    if not table["id"].is_unique:
        duplicated = table["id"][table["id"].duplicated()].iloc[0]
        raise ValueError(f"ids in inputs.table must be unique; {duplicated!r} repeats")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= len(table)
    ):
        raise ValueError(
            f"budget must be a resolved row count in [1, {len(table)}] "
            f"(see selection.allocate.resolve_budget), got {budget!r}"
        )
    for column in ("cds", "nll_pruned"):
        if column in columns and not np.all(np.isfinite(table[column].to_numpy(dtype=np.float64))):
            raise ValueError(f"column {column!r} must be finite")
    return table


def _table_clusters(table: pd.DataFrame) -> np.ndarray:
    labels = table["cluster"].to_numpy()
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"column 'cluster' must hold integer labels, got dtype {labels.dtype}")
    return labels


def _n_table_clusters(table: pd.DataFrame) -> int:
    if "cluster" not in table.columns:
        raise ValueError("the number of k-means clusters comes from column 'cluster', which is missing")
    return int(np.unique(_table_clusters(table)).size)


def _kmeans_labels(inputs: SelectionInputs, n_clusters: int) -> np.ndarray:
    """k-means labels for the rows, from `selection.cluster.kmeans_cluster` on `inputs.embeddings`."""
    if inputs.embeddings is None:
        raise ValueError("k-means clustering needs inputs.embeddings (N × d, aligned with the table)")
    if len(inputs.embeddings) != len(inputs.table):
        raise ValueError(
            f"inputs.embeddings has {len(inputs.embeddings)} rows but inputs.table has {len(inputs.table)}"
        )
    # Imported here: the clustering module pulls in scikit-learn, which most strategies never need.
    from selection.cluster import kmeans_cluster

    return np.asarray(kmeans_cluster(inputs.embeddings, n_clusters, inputs.seed))


def _members_by_cluster(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted distinct labels and, for each, the row positions in corpus order."""
    cluster_labels, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    boundaries = np.cumsum(np.bincount(inverse, minlength=cluster_labels.size))[:-1]
    return cluster_labels, np.split(order, boundaries)
