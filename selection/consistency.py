"""Concept consistency graph (CCG): keep the selected rows from teaching conflicting concept relations.

Each row is reduced to a handful of concepts (keywords). Concepts are nodes; two concepts that occur in
the same accepted row are joined by an edge. The paper's rule rejects a row that brings together two
concepts the graph already knows but has never seen together, on the view that a new relation between
established concepts is where a small recovery set risks contradicting itself.

The paper extracts concepts with rake-nltk, which needs an NLTK download (impossible offline); we use
YAKE, which ships its own stopwords.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from functools import lru_cache

import yake


class ConceptExtractor:
    """Offline keyword extraction with YAKE: `extractor(text)` returns up to `top_n` concepts.

    Concepts are lowercased, stripped, de-duplicated and kept in YAKE's order (most relevant first); an
    empty or keyword-free text gives `()`. Results are cached per text (LRU of `cache_size` entries), so a
    second selection over the same corpus in one process does not pay YAKE again (~10 ms per row).
    """

    def __init__(self, top_n: int = 5, max_ngram: int = 2, language: str = "en", cache_size: int = 200_000):
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        if max_ngram < 1:
            raise ValueError(f"max_ngram must be >= 1, got {max_ngram}")
        self.top_n = top_n
        self.max_ngram = max_ngram
        self.language = language
        self._yake = yake.KeywordExtractor(lan=language, n=max_ngram, top=top_n)
        self._cached_extract = lru_cache(maxsize=cache_size)(self._extract)

    def __call__(self, text: str) -> tuple[str, ...]:
        if not isinstance(text, str):
            raise TypeError(f"concept extraction needs a str, got {type(text).__name__}")
        return self._cached_extract(text)

    def _extract(self, text: str) -> tuple[str, ...]:
        if not text.strip():
            return ()
        concepts: dict[str, None] = {}
        for keyword, _score in self._yake.extract_keywords(text):
            concept = keyword.strip().lower()
            if concept:
                concepts.setdefault(concept)
        return tuple(concepts)[: self.top_n]


def _paper_rule_is_consistent(graph: ConceptConsistencyGraph, concepts: tuple[str, ...]) -> bool:
    """Paper rule: inconsistent iff two of the row's concepts are both in the graph but share no edge."""
    known = [c for c in concepts if c in graph.neighbours]
    return all(b in graph.neighbours[a] for a, b in itertools.combinations(known, 2))


CCG_RULES: dict[str, Callable[[ConceptConsistencyGraph, tuple[str, ...]], bool]] = {
    "paper": _paper_rule_is_consistent,
}


class ConceptConsistencyGraph:
    """The CCG: concepts as nodes, co-occurrence in an accepted row as edges.

    `check(concepts)` says whether a row is consistent under `rule` (no side effect); `add(concepts)` puts
    its concepts and all their pairs into the graph; `offer(concepts)` does both for a consistent row and
    counts `offered`, `accepted` and `rejected`. A row with fewer than two concepts is always consistent.
    Refuses an unknown rule, listing the known ones.
    """

    def __init__(self, rule: str = "paper"):
        if rule not in CCG_RULES:
            raise ValueError(f"unknown CCG rule {rule!r}; known: {', '.join(sorted(CCG_RULES))}")
        self.rule = rule
        self._is_consistent = CCG_RULES[rule]
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
