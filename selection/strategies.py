"""Selection strategies: per-row scores and clusters in, an ordered list of ids out.

`paser` is the method of the paper (allocation ∝ cluster CDS, IES ranking, CCG filter with refill), with
a switch per component for ablations; the others are the baselines it is compared against. Strategies are
registered by name; `get_strategy("paser", ccg=False)` builds one with options.

A budget is a row count or a `TokenBudget` (training tokens: a row costs its prompt + response tokens as the
scorer counted them, `row_tokens`). Under a token budget every strategy but `full` takes rows in its own order
until the next row would take the total over the budget (rows are whole, so the total is at most the budget;
a row larger than the whole budget is passed over, and counted as `rows_over_budget` in the stats).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from paser.common.registry import Registry, check_name
from paser.selection.allocate import TokenBudget, allocate_budget, take_within_tokens
from paser.selection.consistency import (
    ConceptCache,
    ConceptConsistencyGraph,
    ConceptExtractor,
    PrefetchedConcepts,
    SerialConcepts,
)
from paser.selection.prioritize import (
    COST_KINDS,
    damage_density,
    efficiency_score,
    rank_within_cluster,
    sample_cost,
)

if TYPE_CHECKING:
    import pandas as pd

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

    `ids`: the chosen ids in selection order, unique: exactly `budget` of them for a row budget, as many as
    fit a token budget, all rows for `full`. `clusters`: one row per cluster with at least the columns of
    `CLUSTER_COLUMNS` (`budget` is the first allocation, in the budget's unit, `selected` the rows the cluster
    finally gave; a token budget adds `selected_tokens`), or None for strategies without clusters.
    `stats`: strategy-specific counts; under a token budget also `budget_tokens`, `selected_tokens` and
    `rows_over_budget`. `scores`: the score each row was ranked by, indexed by id, or None.
    """

    ids: list[str]
    clusters: pd.DataFrame | None
    stats: dict[str, Any]
    scores: pd.Series | None = None


class Strategy(Protocol):
    """A selection strategy: `select(inputs, budget)` with a row count `1 <= budget <= len(inputs.table)` or a
    `TokenBudget`.

    What a strategy declares, read by the pipelines instead of its name: `requires_columns` (the columns of
    `inputs.table` it reads; a column the scorer computes only on demand, `nll_pruned_unconditioned`, makes
    `needs_unconditioned_nll` true, set by `register_strategy`), `uses_budget` (False: it ignores the budget,
    as `full` does) and `role` ("baseline": what other strategies are compared against; "reference": the
    no-selection cost reference; "per_cluster": trains on one cluster's rows, recorded as `cluster` in its
    stats, the instrument of the CDS-vs-gain analysis; None for the rest). At most one registered strategy holds
    each role.
    """

    name: ClassVar[str]
    requires_columns: ClassVar[tuple[str, ...]]
    uses_budget: ClassVar[bool]
    needs_unconditioned_nll: ClassVar[bool]
    role: ClassVar[str | None]

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult: ...


def row_tokens(table: pd.DataFrame) -> np.ndarray:
    """Each row's training tokens, what a token budget counts: `prompt_tokens + response_tokens` as the scorer
    counted them (SFT forwards both; the loss is on the response). Returns int64; refuses what
    `paser.selection.prioritize.sample_cost` refuses."""
    return sample_cost(table["prompt_tokens"].to_numpy(), table["response_tokens"].to_numpy(), "linear").astype(
        np.int64
    )


STRATEGIES: Registry[type] = Registry("selection strategy")


ROLES = ("baseline", "reference", "per_cluster")
UNCONDITIONED_COLUMN = "nll_pruned_unconditioned"


def register_strategy(name: str) -> Callable[[type], type]:
    """Class decorator registering a strategy dataclass under `name` (its fields are its options).

    The class declares `requires_columns` (default: `("id",)`), and may declare `uses_budget` (default True) and
    `role` (default None; see `Strategy`); `needs_unconditioned_nll` is derived from `requires_columns`. Refuses
    a name registered twice and a role that is unknown or taken.
    """

    def register(cls: type) -> type:
        role = getattr(cls, "role", None)
        if role is not None and (role not in ROLES or any(other.role == role for other in STRATEGIES.values())):
            raise ValueError(f"strategy {name!r}: role {role!r} is unknown ({', '.join(ROLES)}) or already taken")
        cls.name = name
        cls.requires_columns = tuple(getattr(cls, "requires_columns", ("id",)))
        cls.uses_budget = getattr(cls, "uses_budget", True)
        cls.role = role
        cls.needs_unconditioned_nll = UNCONDITIONED_COLUMN in cls.requires_columns
        return STRATEGIES.register(name, cls)

    return register


def strategy_class(name: str) -> type:
    """The class registered as `name` (its declarations, without building it); refuses an unknown name
    (`UnknownNameError` listing the known ones)."""
    return STRATEGIES.get(name)


def strategy_with_role(role: str) -> str | None:
    """The name of the registered strategy holding `role` (one of `ROLES`), or None."""
    check_name("strategy role", role, ROLES)
    return next((name for name, cls in STRATEGIES.items() if cls.role == role), None)


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy registered as `name` with `options`.

    Refuses an unknown name (listing the known ones) and unknown options (listing the accepted ones).
    """
    cls = strategy_class(name)
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
    `degradation_allocation` (False: budget ∝ cluster size); `ranking` ("ies", "cds" = IES off, "random", or
    "damage_density": the row's summed response JSD per training token, `cds · response / (prompt + response)`,
    which covers the most measured damage per token of a token budget; not the paper's);
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

    Under a `TokenBudget` the same walk runs in tokens: each cluster's share is of the budget's tokens (∝
    cluster CDS, water-filled over the clusters' tokens), and a cluster takes its ranked rows while the next
    one fits its share. What the shares leave unused (rows are whole) is split again like a shortfall; when no
    cluster's next row fits its share of what is left, the clusters, in walk order, take their next rows while
    they fit what is left of the whole budget, and the walk ends. Rejected rows are readmitted only when every
    cluster has offered all the rows it may, and only as far as they fit. A row larger than the whole budget
    is never offered. `ccg_max_offers_per_slot` bounds the tokens a cluster offers per token of its share.
    `budget` in `clusters` is then each cluster's first share in tokens, `selected_tokens` what it took, and
    `rows_reallocated` is `tokens_reallocated`.

    Concepts (see `paser.selection.consistency`): with `concept_workers` = 0 they are extracted in this process
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
    requires_columns: ClassVar[tuple[str, ...]] = BASE_COLUMNS
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

    RANKINGS: ClassVar[tuple[str, ...]] = ("ies", "cds", "random", "damage_density")

    def __post_init__(self) -> None:
        check_name("ranking", self.ranking, self.RANKINGS)
        check_name("cost kind", self.cost, COST_KINDS)
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

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        import pandas as pd

        table = _validated_table(inputs, budget, self.requires_columns, self.name)
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
        tokens = row_tokens(table) if isinstance(budget, TokenBudget) else None
        walk = _PaserWalk(ranked, walk_order, weights, budget, self.ccg_max_offers_per_slot, tokens)

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
                "exhausted": walk.stopped | (walk.cursor >= walk.sizes),
            }
        )
        stats: dict[str, Any] = {
            "strategy": self.name,
            "budget": budget if tokens is None else str(budget),
            "n_rows": len(table),
            "n_clusters": len(members),
            "manifold": self.manifold,
            "degradation_allocation": self.degradation_allocation,
            "ranking": self.ranking,
            "cost": self.cost,
            "allocation_rounds": walk.rounds,
            f"{walk.unit}_reallocated": walk.reallocated,
            "ccg": graph.stats() if graph is not None else None,
            "ccg_readmitted": int(walk.readmitted.sum()),
            "ccg_max_offers_per_slot": self.ccg_max_offers_per_slot,
            "concepts_extracted": extracted,
        }
        if tokens is not None:
            clusters["selected_tokens"] = [int(tokens[chosen].sum()) for chosen in walk.chosen]
            stats.update(_token_stats(tokens, walk.order, budget))
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
        columns = (table["cds"].to_numpy(), table["prompt_tokens"].to_numpy(), table["response_tokens"].to_numpy())
        if self.ranking == "ies":
            return efficiency_score(*columns, self.cost)
        if self.ranking == "cds":
            return table["cds"].to_numpy(dtype=np.float64)
        if self.ranking == "damage_density":
            return damage_density(*columns)
        return np.random.default_rng(seed).random(len(table))


class _PaserWalk:
    """The state of paser's walk over the ranked clusters (the rules are in `PaserStrategy`'s docstring).

    `ranked[k]`: cluster k's row positions, best first; `walk_order`: the clusters in walk order; `budget`:
    rows, or a `TokenBudget` with `costs` (each table row's tokens; rows larger than the whole budget are left
    out of `ranked`). Quotas, `used` and `reallocated` are in the budget's `unit`: a row costs 1 under a row
    budget.
    `offer_limit[k]`: how many of cluster k's rows may be offered (all of them, unless `max_offers_per_slot`
    bounds what it offers, in the budget's unit, by its quota at the time); `stopped[k]`: cluster k ended a
    round short of its quota with no row left to offer, so it takes no more. After `run`: `order` (the chosen
    rows in selection order), `chosen`/`rejected` per cluster, `cursor` (rows offered per cluster),
    `readmitted`, `rounds`, `reallocated`, `initial_quota`.
    """

    def __init__(
        self,
        ranked: list[np.ndarray],
        walk_order: list[int],
        weights: np.ndarray,
        budget: int | TokenBudget,
        max_offers_per_slot: float | None,
        costs: np.ndarray | None = None,
    ):
        by_tokens = isinstance(budget, TokenBudget)
        if by_tokens != (costs is not None):
            raise ValueError("a token budget needs each row's tokens (costs), a row budget none")
        self.budget = budget.tokens if by_tokens else budget
        if costs is not None:
            ranked = [r[costs[r] <= self.budget] for r in ranked]
        self.ranked, self.walk_order, self.weights = ranked, walk_order, weights
        self.unit = "tokens" if by_tokens else "rows"
        self.costs = costs
        self.max_offers_per_slot = max_offers_per_slot
        self.sizes = np.array([r.size for r in ranked], dtype=np.int64)
        # Each cluster's costs in rank order and their running total: where a cursor stands in the budget.
        self.row_costs = [np.ones(r.size, dtype=np.int64) if costs is None else costs[r] for r in ranked]
        self.reach = [np.cumsum(c) for c in self.row_costs]
        self.capacity = np.array([int(c.sum()) for c in self.row_costs], dtype=np.int64)
        self.initial_quota = allocate_budget(weights, self.capacity, self.budget)
        self.quota = self.initial_quota.copy()
        self.offer_limit = self._offer_limit()
        self.cursor = np.zeros(len(ranked), dtype=np.int64)
        self.used = np.zeros(len(ranked), dtype=np.int64)
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
        quota, cursor = self.quota, self.cursor
        while True:
            self.rounds += 1
            offered = int(cursor.sum())
            for position, k in enumerate(self.walk_order):
                self._position = position
                self._offer(k, accept)
            # A cluster short of its quota at the end of a round with nothing left to offer has run out of rows
            # (or offers): it keeps what it achieved, and the clusters that still have rows take over its
            # shortfall. Under a token budget a cluster also ends its round short when its next row does not
            # fit; it has rows left, so it is not stopped.
            achieved = self.used.copy()
            self.stopped |= (achieved < quota) & (cursor >= self.offer_limit)
            shortfall = self.budget - int(achieved.sum())
            capacity = np.where(self.stopped, 0, self._remaining())
            if shortfall == 0 or capacity.sum() == 0:
                break
            if self.costs is not None and cursor.sum() == offered:
                # No cluster's next row fits its share of what is left: let them fit the whole of it.
                self._spill(accept)
                break
            extra = allocate_budget(self.weights, capacity, shortfall)
            quota[:] = achieved + extra
            self.reallocated += int(extra.sum())
            self.offer_limit = np.maximum(self._offer_limit(), cursor)

        shortfall = self.budget - int(self.used.sum())
        if shortfall > 0 and np.all(self.stopped | (cursor >= self.offer_limit)):
            rejected_units = np.array([sum(self._cost(row) for row in r) for r in self.rejected], dtype=np.int64)
            shares = allocate_budget(self.weights, rejected_units, shortfall)
            for k in self.walk_order:
                self._readmit(k, int(shares[k]))
            for k in self.walk_order:  # what whole rows left of the shares (token budgets)
                self._readmit(k, self.budget - int(self.used.sum()))

    def upcoming_rows(self, acceptance: float, limit: int) -> Iterator[int]:
        """Up to `limit` rows the walk is expected to offer next in this round, the next one first: from the
        cluster now offering on, each cluster's next rows, as many as cover its missing quota / `acceptance`."""
        left = limit
        for k in self.walk_order[self._position :]:
            missing = int(self.quota[k]) - int(self.used[k])
            if missing <= 0:
                continue
            start = int(self.cursor[k])
            reached = int(self.reach[k][start - 1]) if start else 0
            # The first row at which the running cost reaches the missing units (at the acceptance rate so far).
            needed = int(np.searchsorted(self.reach[k], reached + missing / acceptance, side="left")) + 1
            stop = min(needed, int(self.offer_limit[k]), start + left)
            yield from (int(row) for row in self.ranked[k][start:stop])
            left -= stop - start
            if left <= 0:
                return

    def _offer(self, k: int, accept: Callable[[int], bool] | None) -> None:
        """Cluster k offers its next rows while they fit its quota and its offer limit."""
        chosen, cursor, used = self.chosen[k], self.cursor, self.used
        while cursor[k] < self.offer_limit[k]:
            cost = self.row_costs[k][cursor[k]]
            if used[k] + cost > self.quota[k]:
                break
            row = int(self.ranked[k][cursor[k]])
            # Asked before the cursor moves on, so that the rows planned next start with this one.
            if accept is None or accept(row):
                chosen.append(row)
                self.order.append(row)
                used[k] += cost
            else:
                self.rejected[k].append(row)
            cursor[k] += 1

    def _spill(self, accept: Callable[[int], bool] | None) -> None:
        """Each cluster in walk order offers its next rows while they fit what is left of the whole budget."""
        for position, k in enumerate(self.walk_order):
            self._position = position
            self.quota[k] = self.used[k] + self.budget - int(self.used.sum())
            self._offer(k, accept)

    def _readmit(self, k: int, room: int) -> None:
        """Cluster k takes back its rejected rows not yet readmitted, in rank order, while they fit `room`."""
        for row in self.rejected[k][self.readmitted[k] :]:
            cost = self._cost(row)
            if cost > room:
                return
            self.chosen[k].append(row)
            self.order.append(row)
            self.used[k] += cost
            self.readmitted[k] += 1
            room -= cost

    def _cost(self, row: int) -> int:
        return 1 if self.costs is None else int(self.costs[row])

    def _remaining(self) -> np.ndarray:
        """Each cluster's units not yet offered."""
        offered = [
            int(reach[cursor - 1]) if cursor else 0 for reach, cursor in zip(self.reach, self.cursor, strict=True)
        ]
        return self.capacity - np.array(offered, dtype=np.int64)

    def _offer_limit(self) -> np.ndarray:
        if self.max_offers_per_slot is None:
            return self.sizes.copy()
        bound = np.ceil(self.max_offers_per_slot * self.quota)
        return np.array(
            [np.searchsorted(reach, limit, side="right") for reach, limit in zip(self.reach, bound, strict=True)],
            dtype=np.int64,
        )


@register_strategy("random")
@dataclass
class RandomStrategy:
    """Uniform random rows without replacement, seeded by `inputs.seed`; ids in draw order. Under a token
    budget: a seeded random order of every row, taken until the next row would overflow the budget."""

    name: ClassVar[str]
    requires_columns: ClassVar[tuple[str, ...]] = ("id",)
    role: ClassVar[str | None] = "baseline"

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        table = _validated_table(inputs, budget, self.requires_columns, self.name)
        rng = np.random.default_rng(inputs.seed)
        ids = table["id"].to_numpy(dtype=str)
        stats: dict[str, Any] = {"strategy": self.name}
        if isinstance(budget, TokenBudget):
            tokens = row_tokens(table)
            rows = take_within_tokens(rng.permutation(len(table)), tokens, budget)
            stats.update(_token_stats(tokens, rows, budget))
        else:
            rows = rng.choice(len(table), size=budget, replace=False)
        return SelectionResult(ids=[str(i) for i in ids[rows]], clusters=None, stats=stats)


@register_strategy("full")
@dataclass
class FullStrategy:
    """Every row in corpus order: the no-selection reference. The budget is ignored (recorded in stats)."""

    name: ClassVar[str]
    requires_columns: ClassVar[tuple[str, ...]] = ("id",)
    uses_budget: ClassVar[bool] = False
    role: ClassVar[str | None] = "reference"

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        table = _validated_table(inputs, None, self.requires_columns, self.name)
        ignored = str(budget) if isinstance(budget, TokenBudget) else budget
        stats = {"strategy": self.name, "budget_ignored": ignored, "selected": len(table)}
        return SelectionResult(ids=[str(i) for i in table["id"]], clusters=None, stats=stats)


@dataclass
class _ColumnTopK:
    """The `budget` rows with the highest value in `column` (ties by id), no clusters, no CCG; under a token
    budget, the rows in that order until the next would overflow it."""

    name: ClassVar[str]
    column: ClassVar[str]

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        table = _validated_table(inputs, budget, self.requires_columns, self.name)
        return _top_k(self.name, table, table[self.column].to_numpy(dtype=np.float64), budget, self.column)


@register_strategy("cds_topk")
@dataclass
class CdsTopKStrategy(_ColumnTopK):
    """The `budget` rows with the highest CDS (ties by id), no clusters, no CCG."""

    column: ClassVar[str] = "cds"
    requires_columns: ClassVar[tuple[str, ...]] = ("id", "cds")


@register_strategy("loss")
@dataclass
class LossStrategy(_ColumnTopK):
    """The `budget` rows the pruned model finds hardest: highest mean response NLL (`nll_pruned`)."""

    column: ClassVar[str] = "nll_pruned"
    requires_columns: ClassVar[tuple[str, ...]] = ("id", "nll_pruned")


@register_strategy("longest")
@dataclass
class LongestStrategy(_ColumnTopK):
    """The rows with the longest responses (most `response_tokens`, ties by id), no clusters, no score: the
    cheap baseline of "Long Is More for Alignment" (Zhao et al., 2024), which found the 1,000 longest responses
    of a pool a strong instruction-tuning set. Compare it at equal tokens: at equal rows it trains on the most
    tokens of any strategy. Response lengths are the scorer's, after truncation to `formatting.max_length`, so
    rows cut at that length tie and are taken by id. Deterministic: the seed plays no part."""

    column: ClassVar[str] = "response_tokens"
    requires_columns: ClassVar[tuple[str, ...]] = ("id", "response_tokens")


@register_strategy("ifd")
@dataclass
class IfdStrategy:
    """Instruction-following difficulty (Li et al., "Cherry LLM"), highest first, under the pruned model.

    `IFD_i = nll_pruned_i / nll_pruned_unconditioned_i`: how much the prompt fails to help the model
    produce the response. Needs the `nll_pruned_unconditioned` column; refuses rows where it is <= 0 or not
    finite. Unlike Cherry LLM, rows with IFD > 1 are not filtered out (every strategy fills its budget).
    """

    name: ClassVar[str]
    requires_columns: ClassVar[tuple[str, ...]] = ("id", "nll_pruned", UNCONDITIONED_COLUMN)

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        table = _validated_table(inputs, budget, self.requires_columns, self.name)
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
    both k-means and the within-cluster draw. Ids come cluster by cluster (ascending label). Under a token
    budget the equal shares are of the tokens, filled as paser fills its shares (without the CCG).
    """

    name: ClassVar[str]
    requires_columns: ClassVar[tuple[str, ...]] = ("id", "cds")
    n_clusters: int | None = None

    def __post_init__(self) -> None:
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1 or None, got {self.n_clusters}")

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        table = _validated_table(inputs, budget, self.requires_columns, self.name)
        n_clusters = self.n_clusters if self.n_clusters is not None else _n_table_clusters(table)
        labels = _kmeans_labels(inputs, n_clusters)
        cluster_labels, members = _members_by_cluster(labels)
        sizes = np.array([m.size for m in members], dtype=np.int64)
        rng = np.random.default_rng(inputs.seed)
        drawn = [rng.permutation(m) for m in members]
        tokens = row_tokens(table) if isinstance(budget, TokenBudget) else None
        walk = _PaserWalk(drawn, list(range(len(members))), np.ones(len(members)), budget, None, tokens)
        walk.run(None)
        cds = table["cds"].to_numpy(dtype=np.float64)
        mean_cds = np.array([cds[m].mean() for m in members])
        order = [row for chosen in walk.chosen for row in chosen]
        stats: dict[str, Any] = {"strategy": self.name, "n_clusters": len(members)}
        return _walk_result(table, cluster_labels, sizes, mean_cds, walk, order, budget, stats)


@register_strategy("degradation_sampled")
@dataclass
class DegradationSampledStrategy:
    """Degradation-weighted sampling: a representative sample tilted towards the damage, not the top of a ranking.

    A variant of PASER kept beside it (`paser` stays the paper's method). Two changes, each one measured
    against random and paser in `studies/smollm2-wanda50-alpaca/`:

    - allocation ∝ cluster size × cluster mean CDS (`allocation="size_cds"`; PASER's is ∝ mean CDS alone,
      which is near-uniform over clusters when the CDS means are close, so small clusters are over-sampled
      and the subset's mix departs from the pool's), water-filled as paser's (`paser.selection.allocate`);
      `allocation="size"` is proportional (stratified) sampling;
    - inside each cluster, a seeded weighted draw without replacement with probability ∝ CDS^`power`
      (Efraimidis–Spirakis keys `u^(1/w)`), in place of the top of the IES ranking, which favours short
      responses (IES divides by the token cost). `power=0` draws uniformly inside the cluster.

    No CCG (it rejects rows for sharing concepts, which favours rare topics; `ccg` is not an option). Rows with
    CDS 0 can still be drawn: each weight is floored at 1e-12 of the largest. Under a token budget the shares are
    in tokens and a cluster takes its drawn rows while the next fits its share, as paser's walk does. Seeded by
    `inputs.seed`; ids come in walk order (clusters by descending mean CDS, each in draw order).
    """

    name: ClassVar[str]
    requires_columns: ClassVar[tuple[str, ...]] = ("id", "cluster", "cds")
    allocation: str = "size_cds"
    power: float = 1.0

    ALLOCATIONS: ClassVar[tuple[str, ...]] = ("size_cds", "size")

    def __post_init__(self) -> None:
        check_name("allocation", self.allocation, self.ALLOCATIONS)
        if not np.isfinite(self.power) or self.power < 0:
            raise ValueError(f"power must be a finite number >= 0, got {self.power}")

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        table = _validated_table(inputs, budget, self.requires_columns, self.name)
        cds = table["cds"].to_numpy(dtype=np.float64)
        if np.any(cds < 0):
            raise ValueError("column 'cds' must be >= 0 for degradation_sampled")
        cluster_labels, members = _members_by_cluster(_table_clusters(table))
        sizes = np.array([m.size for m in members], dtype=np.int64)
        mean_cds = np.array([cds[m].mean() for m in members])
        weights = sizes * mean_cds if self.allocation == "size_cds" else sizes.astype(np.float64)
        rng = np.random.default_rng(inputs.seed)
        drawn = [m[weighted_order(cds[m] ** self.power, rng)] for m in members]
        walk_order = sorted(range(len(members)), key=lambda k: (-mean_cds[k], cluster_labels[k]))
        tokens = row_tokens(table) if isinstance(budget, TokenBudget) else None
        walk = _PaserWalk(drawn, walk_order, weights, budget, None, tokens)
        walk.run(None)
        stats: dict[str, Any] = {
            "strategy": self.name,
            "n_clusters": len(members),
            "allocation": self.allocation,
            "power": self.power,
            f"{walk.unit}_reallocated": walk.reallocated,
        }
        return _walk_result(table, cluster_labels, sizes, mean_cds, walk, walk.order, budget, stats)


@register_strategy("single_cluster")
@dataclass
class SingleClusterStrategy:
    """A seeded uniform sample of one cluster's rows: `cluster` is the label in `table.cluster`.

    An instrument, not a selection method: trained on equal-size samples of each cluster in turn, it measures
    where recovery pays (the held-out gain per cluster, against the cluster's mean CDS; see the study in
    `studies/smollm2-wanda50-alpaca/`). Refuses a cluster that does not exist or holds fewer rows than a row
    budget; under a token budget it takes the drawn rows while the next fits.
    """

    name: ClassVar[str]
    requires_columns: ClassVar[tuple[str, ...]] = ("id", "cluster")
    role: ClassVar[str | None] = "per_cluster"
    cluster: int = 0

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        table = _validated_table(inputs, budget, self.requires_columns, self.name)
        labels = _table_clusters(table)
        members = np.flatnonzero(labels == self.cluster)
        if members.size == 0:
            raise ValueError(f"single_cluster: no cluster {self.cluster}; the clusters are {sorted(set(labels))}")
        drawn = np.random.default_rng(inputs.seed).permutation(members)
        stats: dict[str, Any] = {"strategy": self.name, "cluster": self.cluster, "cluster_size": int(members.size)}
        if isinstance(budget, TokenBudget):
            tokens = row_tokens(table)
            rows = take_within_tokens(drawn, tokens, budget)
            stats.update(_token_stats(tokens, rows, budget))
        elif budget > members.size:
            raise ValueError(f"single_cluster: cluster {self.cluster} holds {members.size} rows, fewer than {budget}")
        else:
            rows = drawn[:budget]
        ids = table["id"].to_numpy(dtype=str)
        return SelectionResult(ids=[str(i) for i in ids[rows]], clusters=None, stats=stats)


@register_strategy("length_matched")
@dataclass
class LengthMatchedStrategy:
    """A control for what a strategy picks beyond the lengths of its rows: runs `reference` (a registered
    strategy, with `reference_options`) on the same inputs and budget, then replaces each of its rows by a seeded
    random row of the same response length. If `length_matched` recovers as much as the reference, what helps is
    the length of the reference's rows, not what its score saw in them. An instrument of the study in
    `studies/smollm2-wanda50-alpaca/`; the reference may need no column `length_matched` does not declare (those
    of `paser`). Two variants, by `matching`:

    - "disjoint" (the default): drawn only among the rows the reference did not pick, with the reference's row
      count and its response tokens (what the loss is on). The reference's rows are matched in a seeded random
      order, each by a uniform draw among the unpicked rows of the response length that keeps the running total
      closest to the reference's (its own length while there are rows of it, so the match is exact where the
      pool allows). Under a token budget, where the drawn rows' prompts take the total over it, draws are
      swapped one at a time for shorter unpicked rows (a shorter prompt of the same response length while there
      is one, else the nearest length; the largest saving first), the response tokens kept within
      `response_tolerance` of the reference's, until they fit
      (`stats["swapped_to_fit_budget"]`); their prompt tokens then come out close to the reference's (PASER's
      prompts are shorter than the pool's). Refuses a reference that took more than half the rows (there are
      not as many others), draws that no such swap brings within the token budget (a reference holding most of
      the pool's short rows), and a match whose response tokens differ from the reference's by more than
      `response_tolerance` of them (ValueError).
    - "same_length" (issue 19's, kept to reproduce that study): uniform among all rows of the same response
      length, the reference's own included (a quarter of PASER's picks came back), and under a token budget
      the budget re-applied to the drawn rows, which then hold fewer rows and response tokens than the
      reference's when their prompts run longer.

    `stats` records the matching, the reference's rows and response tokens, the control's response tokens and
    `shared_with_reference` (rows both took: 0 for "disjoint").
    """

    name: ClassVar[str]
    requires_columns: ClassVar[tuple[str, ...]] = BASE_COLUMNS
    reference: str = "paser"
    reference_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    matching: str = "disjoint"
    response_tolerance: float = 0.01

    MATCHINGS: ClassVar[tuple[str, ...]] = ("disjoint", "same_length")

    def __post_init__(self) -> None:
        if self.reference == self.name:
            raise ValueError("length_matched: the reference must be another strategy")
        missing = set(strategy_class(self.reference).requires_columns) - set(self.requires_columns)
        if missing:
            raise ValueError(f"length_matched: reference {self.reference!r} needs {sorted(missing)}, not declared")
        check_name("length_matched matching", self.matching, self.MATCHINGS)
        if not 0 <= self.response_tolerance < 1:
            raise ValueError(f"length_matched: response_tolerance must be in [0, 1), got {self.response_tolerance}")

    def select(self, inputs: SelectionInputs, budget: int | TokenBudget) -> SelectionResult:
        import pandas as pd

        table = _validated_table(inputs, budget, self.requires_columns, self.name)
        reference = get_strategy(self.reference, **self.reference_options).select(inputs, budget)
        positions = pd.Index(table["id"].astype(str)).get_indexer(reference.ids)
        lengths = table["response_tokens"].to_numpy(dtype=np.int64)
        tokens = row_tokens(table)
        rng = np.random.default_rng(inputs.seed)
        swaps = 0
        if self.matching == "same_length":
            # Each length the reference took k times gets k rows drawn from the table's rows of that length (there
            # are at least k: the reference's own).
            drawn = {length: iter(rng.permutation(np.flatnonzero(lengths == length))) for length in lengths[positions]}
            order = np.asarray([next(drawn[length]) for length in lengths[positions]], dtype=np.int64)
            if isinstance(budget, TokenBudget):
                order = take_within_tokens(order, tokens, budget)
        else:
            limit = budget.tokens if isinstance(budget, TokenBudget) else None
            wanted = int(lengths[positions].sum())
            slack = self.response_tolerance * wanted
            order, swaps = _disjoint_length_match(positions, lengths, tokens, limit, slack, rng)
            got = int(lengths[order].sum())
            if abs(got - wanted) > self.response_tolerance * wanted:
                raise ValueError(
                    f"length_matched: the other rows hold {got} response tokens against the reference's {wanted}, "
                    f"more than response_tolerance ({self.response_tolerance:g}) apart"
                )
        stats: dict[str, Any] = {
            "strategy": self.name,
            "reference": self.reference,
            "matching": self.matching,
            "reference_rows": len(reference.ids),
            "reference_response_tokens": int(lengths[positions].sum()),
            "response_tokens": int(lengths[order].sum()),
            "shared_with_reference": int(np.isin(order, positions).sum()),
        }
        if isinstance(budget, TokenBudget):
            stats.update(_token_stats(tokens, order, budget))
            if self.matching == "disjoint":
                stats["swapped_to_fit_budget"] = swaps
        ids = table["id"].to_numpy(dtype=str)
        return SelectionResult(ids=[str(i) for i in ids[order]], clusters=None, stats=stats)


def _disjoint_length_match(
    reference: np.ndarray,
    lengths: np.ndarray,
    tokens: np.ndarray,
    limit: int | None,
    response_slack: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """`LengthMatchedStrategy`'s "disjoint" matching: for each position of `reference` (in its order), a row of
    the table it does not hold (see the strategy). `lengths`: response tokens per row; `tokens`: prompt +
    response; `limit`: the token budget, or None; `response_slack`: how far from the reference's response tokens
    a swap to fit the budget may take the total. Returns (the matched positions (int64), how many draws were
    swapped to fit the budget)."""
    available = np.ones(len(lengths), dtype=bool)
    available[reference] = False
    if available.sum() < len(reference):
        raise ValueError(
            f"length_matched: the reference took {len(reference)} of {len(lengths)} rows; matching them with other "
            "rows needs at least as many left"
        )
    matched = np.empty(len(reference), dtype=np.int64)
    drift = 0  # response tokens drawn so far minus the reference's
    for index in rng.permutation(len(reference)):
        row = reference[index]
        candidates = np.flatnonzero(available)
        # The response length that brings the running total closest to the reference's; of two, the nearer one.
        gap = np.abs(drift + lengths[candidates] - lengths[row])
        candidates = candidates[gap == gap.min()]
        offset = np.abs(lengths[candidates] - lengths[row])
        best = candidates[offset == offset.min()]
        choice = best[rng.integers(best.size)]
        available[choice] = False
        matched[index] = choice
        drift += int(lengths[choice] - lengths[row])
    swaps = 0
    # Over a token budget (the drawn prompts ran longer than the reference's): swap, one at a time, a draw for an
    # unused row of fewer tokens, of the same response length while there is one (else the nearest), the largest
    # saving first, keeping the response tokens within `response_slack` of the reference's, until the rows fit.
    while limit is not None and int(tokens[matched].sum()) > limit:
        spare = np.flatnonzero(available)
        savings = tokens[matched][:, None] - tokens[spare][None, :]
        shift = lengths[spare][None, :] - lengths[matched][:, None]
        allowed = (savings > 0) & (np.abs(drift + shift) <= response_slack)
        if not allowed.any():
            raise ValueError(
                f"length_matched: the rows the reference left hold no match of its response lengths within the "
                f"token budget ({int(tokens[matched].sum())} tokens after swapping draws for shorter rows, "
                f"budget {limit})"
            )
        draw, row = np.nonzero(allowed)
        best = np.lexsort((-savings[draw, row], np.abs(shift[draw, row])))[0]
        draw, replacement = draw[best], spare[row[best]]
        drift += int(lengths[replacement] - lengths[matched[draw]])
        available[matched[draw]] = True
        available[replacement] = False
        matched[draw] = replacement
        swaps += 1
    return matched, swaps


def _walk_result(
    table: pd.DataFrame,
    cluster_labels: np.ndarray,
    sizes: np.ndarray,
    mean_cds: np.ndarray,
    walk: _PaserWalk,
    order: Sequence[int],
    budget: int | TokenBudget,
    stats: dict[str, Any],
) -> SelectionResult:
    """The result of a walk without a CCG: ids in `order` (table positions), the common cluster columns (and
    each cluster's selected tokens under a token budget), `stats` plus the token counts of a token budget."""
    import pandas as pd

    clusters = pd.DataFrame(
        {
            "cluster": cluster_labels,
            "size": sizes,
            "mean_cds": mean_cds,
            "budget": walk.initial_quota,
            "selected": [len(chosen) for chosen in walk.chosen],
            "ccg_rejected": np.zeros(len(sizes), dtype=np.int64),
        }
    )
    if isinstance(budget, TokenBudget):
        tokens = walk.costs
        clusters["selected_tokens"] = [int(tokens[chosen].sum()) for chosen in walk.chosen]
        stats.update(_token_stats(tokens, order, budget))
    ids = table["id"].to_numpy(dtype=str)
    return SelectionResult(ids=[str(ids[row]) for row in order], clusters=clusters, stats=stats)


def weighted_order(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of `len(weights)` positions, drawn without replacement with probability ∝ weight
    (Efraimidis–Spirakis: sort by `u^(1/w)` descending, `u` uniform from `rng`). Weights are floored at 1e-12
    of the largest (every position keeps a chance); all-zero weights give a uniform order. Refuses negative or
    non-finite weights."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size and (not np.all(np.isfinite(weights)) or weights.min() < 0):
        raise ValueError("weights must be finite and >= 0")
    top = weights.max() if weights.size else 0.0
    weights = np.ones_like(weights) if top == 0 else np.maximum(weights, top * 1e-12)
    keys = np.log(rng.random(weights.size)) / weights
    return np.argsort(-keys, kind="stable")


def _top_k(
    name: str, table: pd.DataFrame, scores: np.ndarray, budget: int | TokenBudget, score_name: str
) -> SelectionResult:
    import pandas as pd

    ids = table["id"].to_numpy(dtype=str)
    ranked = rank_within_cluster(scores, ids)
    stats: dict[str, Any] = {"strategy": name}
    if isinstance(budget, TokenBudget):
        tokens = row_tokens(table)
        rows = take_within_tokens(ranked, tokens, budget)
        stats.update(_token_stats(tokens, rows, budget))
    else:
        rows = ranked[:budget]
    return SelectionResult(
        ids=[str(i) for i in ids[rows]],
        clusters=None,
        stats=stats,
        scores=pd.Series(scores, index=ids, name=score_name),
    )


def _token_stats(tokens: np.ndarray, rows: Sequence[int], budget: TokenBudget) -> dict[str, int]:
    """What a token-budget selection of `rows` (positions) used: the budget, the tokens taken and how many rows
    of the table are larger than the whole budget (never taken). `tokens` is `row_tokens` of the table."""
    return {
        "budget_tokens": budget.tokens,
        "selected_tokens": int(tokens[np.asarray(rows, dtype=np.int64)].sum()),
        "rows_over_budget": int((tokens > budget.tokens).sum()),
    }


def _validated_table(
    inputs: SelectionInputs, budget: int | TokenBudget | None, columns: tuple[str, ...], strategy: str
) -> pd.DataFrame:
    """The table, after checking the columns `strategy` needs (and, for a token budget, the token counts),
    unique ids and (unless None) the budget: a row count in [1, rows] or a `TokenBudget`."""
    table = inputs.table
    if isinstance(budget, TokenBudget):
        columns = (*columns, "prompt_tokens", "response_tokens")
    missing = [c for c in dict.fromkeys(columns) if c not in table.columns]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs column(s) {', '.join(missing)} in inputs.table")
    if len(table) == 0:
        raise ValueError("inputs.table has no rows to select from")
    if not table["id"].is_unique:
        duplicated = table["id"][table["id"].duplicated()].iloc[0]
        raise ValueError(f"ids in inputs.table must be unique; {duplicated!r} repeats")
    if isinstance(budget, TokenBudget):
        smallest = int(row_tokens(table).min())
        if smallest > budget.tokens:
            raise ValueError(f"token budget {budget} is smaller than every row (the smallest has {smallest} tokens)")
    elif budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= len(table)
    ):
        raise ValueError(
            f"budget must be a resolved row count in [1, {len(table)}] "
            f"(see selection.allocate.resolve_budget) or a TokenBudget, got {budget!r}"
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
    """k-means labels for the rows, from `paser.selection.cluster.kmeans_cluster` on `inputs.embeddings`."""
    if inputs.embeddings is None:
        raise ValueError("k-means clustering needs inputs.embeddings (N × d, aligned with the table)")
    if len(inputs.embeddings) != len(inputs.table):
        raise ValueError(
            f"inputs.embeddings has {len(inputs.embeddings)} rows but inputs.table has {len(inputs.table)}"
        )
    # Imported here: the clustering module pulls in scikit-learn, which most strategies never need.
    from paser.selection.cluster import kmeans_cluster

    return np.asarray(kmeans_cluster(inputs.embeddings, n_clusters, inputs.seed))


def _members_by_cluster(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted distinct labels and, for each, the row positions in corpus order."""
    cluster_labels, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    boundaries = np.cumsum(np.bincount(inverse, minlength=cluster_labels.size))[:-1]
    return cluster_labels, np.split(order, boundaries)
