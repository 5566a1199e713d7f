"""Concept consistency graph (CCG): keep the selected rows from teaching conflicting concept relations.

Each row is reduced to a handful of concepts (keywords). Concepts are nodes; two concepts that occur in
the same accepted row are joined by an edge. The paper's rule rejects a row that brings together two
concepts the graph already knows but has never seen together, on the view that a new relation between
established concepts is where a small recovery set risks contradicting itself.

The paper extracts concepts with rake-nltk, which needs an NLTK download (impossible offline); we use
YAKE, which ships its own stopwords. YAKE costs 5-10 ms a row in pure Python, so concepts can be extracted
ahead of the walk in worker processes (`PrefetchedConcepts`) and remembered per text across selections
(`ConceptCache`). YAKE and pyarrow are imported on use: the strategies import this module, and the `paser`
command imports them to list their names.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import itertools
import pickle
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

from paser.common.registry import Registry
from paser.selection.shards import ShardStore

Concepts = tuple[str, ...]


class ConceptExtractor:
    """Offline keyword extraction with YAKE: `extractor(text)` returns up to `top_n` concepts.

    Concepts are lowercased, stripped, de-duplicated and kept in YAKE's order (most relevant first); an
    empty or keyword-free text gives `()`. Results are cached per text (LRU of `cache_size` entries, 0 for
    none), so a second selection over the same corpus in one process does not pay YAKE again (~10 ms per
    row). Pickles as its settings (the cache stays behind), so it can be sent to worker processes.
    """

    def __init__(self, top_n: int = 5, max_ngram: int = 2, language: str = "en", cache_size: int = 200_000):
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        if max_ngram < 1:
            raise ValueError(f"max_ngram must be >= 1, got {max_ngram}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.top_n = top_n
        self.max_ngram = max_ngram
        self.language = language
        self.cache_size = cache_size
        import yake

        self._yake = yake.KeywordExtractor(lan=language, n=max_ngram, top=top_n)
        self._cached_extract = lru_cache(maxsize=cache_size)(self._extract)

    def __call__(self, text: str) -> Concepts:
        if not isinstance(text, str):
            raise TypeError(f"concept extraction needs a str, got {type(text).__name__}")
        return self._cached_extract(text)

    def settings(self) -> dict[str, Any]:
        """What determines the concepts of a text (the extractor, its version and options): a
        `ConceptCache` filled under other settings is refused."""
        return {
            "extractor": "yake",
            "yake_version": importlib.metadata.version("yake"),
            "top_n": self.top_n,
            "max_ngram": self.max_ngram,
            "language": self.language,
        }

    def uncached(self) -> ConceptExtractor:
        """The same extractor without a per-text cache (for workers, which see each text once)."""
        return ConceptExtractor(self.top_n, self.max_ngram, self.language, cache_size=0)

    def __getstate__(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("top_n", "max_ngram", "language", "cache_size")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def _extract(self, text: str) -> Concepts:
        if not text.strip():
            return ()
        concepts: dict[str, None] = {}
        for keyword, _score in self._yake.extract_keywords(text):
            concept = keyword.strip().lower()
            if concept:
                concepts.setdefault(concept)
        return tuple(concepts)[: self.top_n]


class ConceptCache:
    """Concepts per text, so that a budget sweep (or a rerun) extracts each row's concepts once.

    Keyed by a 16-byte BLAKE2b digest of the text rather than by row id: ids default to row positions,
    which name other rows once the corpus changes, while a text's concepts stay its own (the same text
    under two ids is found once, an edited row is extracted again). Two different texts collide with
    probability about n² / 2¹²⁹ over n texts.

    In memory, and in `folder` when one is given: a shard folder (`paser.selection.shards.ShardStore`) whose
    `meta.json` holds the extractor's settings and whose Parquet shards (digest, concepts) are added by
    `flush()`, `flush_rows` new texts at a time as `put` fills it. `bind(settings)` ties the cache to one
    extractor: the first call opens the folder (refusing one filled under other settings, naming the
    changed keys) and reads its shards; a later call with other settings is refused.
    """

    def __init__(self, folder: str | Path | None = None, *, flush_rows: int = 20_000):
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows}")
        self.folder = Path(folder) if folder is not None else None
        self.flush_rows = flush_rows
        self.settings: dict[str, Any] | None = None
        self._store: ShardStore | None = None
        self._entries: dict[bytes, Concepts] = {}
        self._unflushed: list[bytes] = []
        self._next_shard = 0
        self._interned: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, settings: dict[str, Any]) -> None:
        """Tie the cache to the extractor described by `settings` (see the class docstring)."""
        if self.settings is not None:
            if settings != self.settings:
                raise ValueError(
                    f"this concept cache holds concepts extracted with {self.settings}, not {settings}; "
                    "use one cache per extractor setting"
                )
            return
        if self.folder is not None:
            fingerprint = {"contents": "concepts per text digest", **settings}
            self._store = ShardStore(self.folder, fingerprint, suffix=".parquet", what="text concepts")
            self._read_shards()
        self.settings = dict(settings)

    def get(self, text: str) -> Concepts | None:
        """The remembered concepts of `text`, or None."""
        return self._entries.get(_text_digest(text))

    def put(self, text: str, concepts: Iterable[str]) -> None:
        """Remember the concepts of `text`; flushes to the folder every `flush_rows` new texts."""
        if self.settings is None:
            raise RuntimeError("bind the concept cache to an extractor's settings before filling it")
        digest = _text_digest(text)
        if digest in self._entries:
            return
        self._entries[digest] = tuple(self._interned.setdefault(c, c) for c in concepts)
        if self._store is not None:
            self._unflushed.append(digest)
            if len(self._unflushed) >= self.flush_rows:
                self.flush()

    def flush(self) -> None:
        """Write the texts added since the last flush as one shard of the folder (nothing without one)."""
        if self._store is None or not self._unflushed:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        digests = self._unflushed
        table = pa.table(
            {
                "text_digest": pa.array(digests, pa.binary(_DIGEST_BYTES)),
                "concepts": pa.array([list(self._entries[d]) for d in digests], pa.list_(pa.string())),
            }
        )
        keys = [digest.hex() for digest in digests]
        self._store.write(self._next_shard, keys, lambda staging: pq.write_table(table, staging))
        self._next_shard += 1
        self._unflushed = []

    def _read_shards(self) -> None:
        import pyarrow.parquet as pq

        store = self._store
        indices = sorted({int(path.name[len("shard-") :].split(".")[0]) for path in store.folder.glob("shard-*")})
        self._next_shard = indices[-1] + 1 if indices else 0
        for index in indices:
            if not store.marker_path(index).exists():
                continue  # a shard whose writer died before its marker: not trusted, overwritten later
            table = pq.read_table(store.data_path(index))
            digests = table.column("text_digest").to_pylist()
            store.is_done(index, [digest.hex() for digest in digests])  # refuses a marker for other rows
            for digest, concepts in zip(digests, table.column("concepts").to_pylist(), strict=True):
                self._entries[digest] = tuple(self._interned.setdefault(c, c) for c in concepts)


_DIGEST_BYTES = 16


def _text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_BYTES).digest()


class SerialConcepts:
    """`concepts(row_id)`: the concepts of a row's text, extracted in this process when asked (through
    `cache` when given), so only rows actually asked for are extracted. A context manager, like
    `PrefetchedConcepts`; leaving it flushes the cache."""

    def __init__(
        self,
        extractor: Callable[[str], Iterable[str]],
        text_of: Callable[[str], str],
        cache: ConceptCache | None = None,
    ):
        self.extractor, self.text_of, self.cache = extractor, text_of, cache
        self.extracted = 0

    def __enter__(self) -> SerialConcepts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.cache is not None:
            self.cache.flush()

    def __call__(self, row_id: str) -> Concepts:
        text = self.text_of(row_id)
        if self.cache is not None:
            concepts = self.cache.get(text)
            if concepts is not None:
                return concepts
        concepts = tuple(self.extractor(text))
        self.extracted += 1
        if self.cache is not None:
            self.cache.put(text, concepts)
        return concepts


class PrefetchedConcepts:
    """`concepts(row_id)`: the same concepts as `SerialConcepts`, extracted ahead in `workers` processes.

    `plan()` yields the row ids expected to be asked for next, the next one first (it is called again as
    the consumer moves on, and may change). The first `window` rows of the plan are kept extracted or being
    extracted, in tasks of `batch_rows` texts; a row asked for before it was planned is scheduled then,
    with the plan's next rows. Extraction is a pure function of the text, so the concepts are those of the
    serial path, only sooner; rows that were planned but never asked for are extracted for nothing (they
    still go to `cache`, where a later selection finds them). Memory: the texts and concepts of about
    `window` rows. The extractor is sent to the workers, so it must pickle (a `ConceptExtractor` or a
    module-level function); an extraction that failed in a worker is raised (RuntimeError naming the row
    and the error) when its row is asked for, as the serial path would.

    A context manager: entering starts the pool (forked workers share the parent's memory, so the parent's
    objects are frozen out of the garbage collector's reach while they start; a collection in a child
    would otherwise copy every page it touches); leaving stops it, cancelling what was not started, and
    flushes the cache.
    """

    def __init__(
        self,
        extractor: Callable[[str], Iterable[str]],
        text_of: Callable[[str], str],
        plan: Callable[[], Iterable[str]],
        *,
        workers: int,
        batch_rows: int = 32,
        window: int = 1024,
        cache: ConceptCache | None = None,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        if window < batch_rows:
            raise ValueError(f"window must be >= batch_rows ({batch_rows}), got {window}")
        worker_extractor = extractor.uncached() if isinstance(extractor, ConceptExtractor) else extractor
        try:
            pickle.dumps(worker_extractor)
        except Exception as error:
            raise ValueError(
                f"concept extraction in worker processes needs an extractor that pickles (a ConceptExtractor or "
                f"a module-level function); {extractor!r} does not ({error}); extract in this process instead "
                "(paser option concept_workers=0)"
            ) from error
        self.text_of, self.plan, self.cache = text_of, plan, cache
        self.workers, self.batch_rows, self.window = workers, batch_rows, window
        self.extracted = 0
        self._worker_extractor = worker_extractor
        self._pool: ProcessPoolExecutor | None = None
        self._ready: dict[str, Concepts | _Failure] = {}
        self._in_flight: dict[str, Future] = {}
        self._batches: dict[Future, tuple[list[str], list[str]]] = {}
        self._until_refill = 0

    def __enter__(self) -> PrefetchedConcepts:
        pool = ProcessPoolExecutor(self.workers, initializer=_start_worker, initargs=(self._worker_extractor,))
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            pool.submit(_extract_batch, []).result()  # starts the workers (all of them, when they fork)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            if freeze:
                gc.unfreeze()
        self._pool = pool
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._ready.clear()
        self._in_flight.clear()
        self._batches.clear()
        if self.cache is not None:
            self.cache.flush()

    def __call__(self, row_id: str) -> Concepts:
        if self._pool is None:
            raise RuntimeError("PrefetchedConcepts is used outside its `with` block (no worker pool)")
        self._until_refill -= 1
        if self._until_refill <= 0 or (row_id not in self._ready and row_id not in self._in_flight):
            self._refill()
            if row_id not in self._ready and row_id not in self._in_flight:
                self._submit([row_id], [self.text_of(row_id)])  # the plan did not list it first
        if row_id in self._in_flight:
            self._harvest(self._in_flight[row_id])
        concepts = self._ready.pop(row_id)
        if isinstance(concepts, _Failure):
            raise RuntimeError(f"concept extraction failed for row {row_id!r}: {concepts.message}")
        return concepts

    def _refill(self) -> None:
        """Keep the first `window` rows of the plan extracted or in flight; forget ready rows off the plan."""
        self._until_refill = self.batch_rows
        for future in [f for f in self._batches if f.done()]:
            self._harvest(future)
        planned: set[str] = set()
        new_ids: list[str] = []
        new_texts: list[str] = []
        for row_id in itertools.islice(self.plan(), self.window):
            planned.add(row_id)
            if row_id in self._ready or row_id in self._in_flight:
                continue
            text = self.text_of(row_id)
            known = self.cache.get(text) if self.cache is not None else None
            if known is not None:
                self._ready[row_id] = known
            else:
                new_ids.append(row_id)
                new_texts.append(text)
        for row_id in [r for r in self._ready if r not in planned]:
            del self._ready[row_id]
        for start in range(0, len(new_ids), self.batch_rows):
            self._submit(new_ids[start : start + self.batch_rows], new_texts[start : start + self.batch_rows])

    def _submit(self, ids: list[str], texts: list[str]) -> None:
        future = self._pool.submit(_extract_batch, texts)
        self._batches[future] = (ids, texts)
        for row_id in ids:
            self._in_flight[row_id] = future

    def _harvest(self, future: Future) -> None:
        ids, texts = self._batches.pop(future)
        results = future.result()
        self.extracted += len(ids)
        for row_id, text, concepts in zip(ids, texts, results, strict=True):
            del self._in_flight[row_id]
            self._ready[row_id] = concepts
            if self.cache is not None and not isinstance(concepts, _Failure):
                self.cache.put(text, concepts)


class _Failure:
    """What a worker returns for a text its extractor raised on: the error, as text."""

    def __init__(self, message: str):
        self.message = message


_worker_extractor: Callable[[str], Iterable[str]] | None = None


def _start_worker(extractor: Callable[[str], Iterable[str]]) -> None:
    global _worker_extractor
    _worker_extractor = extractor


def _extract_batch(texts: list[str]) -> list[Concepts | _Failure]:
    concepts: list[Concepts | _Failure] = []
    for text in texts:
        try:
            concepts.append(tuple(_worker_extractor(text)))
        except Exception as error:  # reported when (and if) the walk asks for this row
            concepts.append(_Failure(f"{type(error).__name__}: {error}"))
    return concepts


def _paper_rule_is_consistent(graph: ConceptConsistencyGraph, concepts: tuple[str, ...]) -> bool:
    """Paper rule: inconsistent iff two of the row's concepts are both in the graph but share no edge."""
    known = [c for c in concepts if c in graph.neighbours]
    return all(b in graph.neighbours[a] for a, b in itertools.combinations(known, 2))


CCG_RULES: Registry[Callable[[ConceptConsistencyGraph, tuple[str, ...]], bool]] = Registry("CCG rule")
CCG_RULES.register("paper", _paper_rule_is_consistent)


class ConceptConsistencyGraph:
    """The CCG: concepts as nodes, co-occurrence in an accepted row as edges.

    `check(concepts)` says whether a row is consistent under `rule` (no side effect); `add(concepts)` puts
    its concepts and all their pairs into the graph; `offer(concepts)` does both for a consistent row and
    counts `offered`, `accepted` and `rejected`. A row with fewer than two concepts is always consistent.
    Refuses an unknown rule, listing the known ones.
    """

    def __init__(self, rule: str = "paper"):
        self._is_consistent = CCG_RULES.get(rule)
        self.rule = rule
        self.neighbours: dict[str, set[str]] = {}
        self.offered = 0
        self.accepted = 0
        self.rejected = 0

    @property
    def n_concepts(self) -> int:
        """Number of nodes (distinct concepts of accepted rows)."""
        return len(self.neighbours)

    @property
    def n_edges(self) -> int:
        """Number of undirected edges (distinct co-occurring concept pairs)."""
        return sum(len(adjacent) for adjacent in self.neighbours.values()) // 2

    def check(self, concepts: Iterable[str]) -> bool:
        """True if a row with these concepts is consistent with the graph under `rule`."""
        return self._is_consistent(self, _unique(concepts))

    def add(self, concepts: Iterable[str]) -> None:
        """Add the concepts as nodes and every pair of them as an edge."""
        unique = _unique(concepts)
        for concept in unique:
            self.neighbours.setdefault(concept, set())
        for a, b in itertools.combinations(unique, 2):
            self.neighbours[a].add(b)
            self.neighbours[b].add(a)

    def offer(self, concepts: Iterable[str]) -> bool:
        """Check the row and, if consistent, add it; returns whether it was accepted. Counts both outcomes."""
        unique = _unique(concepts)
        self.offered += 1
        if not self._is_consistent(self, unique):
            self.rejected += 1
            return False
        self.add(unique)
        self.accepted += 1
        return True

    def stats(self) -> dict[str, int | float | str]:
        """Counts so far: rule, offered, accepted, rejected, rejection_rate (0 if none), concepts, edges."""
        return {
            "rule": self.rule,
            "offered": self.offered,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejection_rate": self.rejected / self.offered if self.offered else 0.0,
            "concepts": self.n_concepts,
            "edges": self.n_edges,
        }


def _unique(concepts: Iterable[str]) -> tuple[str, ...]:
    # A concept repeated within one row must not count as a pair with itself.
    return tuple(dict.fromkeys(concepts))
