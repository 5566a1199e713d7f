import pickle

import pytest

from paser.selection.consistency import (
    ConceptCache,
    ConceptConsistencyGraph,
    ConceptExtractor,
    PrefetchedConcepts,
    SerialConcepts,
)


def test_paper_rule_golden_sequence():
    graph = ConceptConsistencyGraph()
    offers = [
        ("python", "list"),  # empty graph: accepted
        ("python", "dictionary"),  # only "python" known: accepted
        ("list", "dictionary"),  # both known, never together: rejected
        ("python", "list", "sort"),  # python-list is an edge, sort is new: accepted
        ("sort", "dictionary", "loop"),  # sort and dictionary known, no edge: rejected
        ("loop", "dictionary"),  # loop unknown (the rejected row added nothing): accepted
        ("list", "sort", "python"),  # all three pairwise connected: accepted
        ("list",),  # a single concept cannot conflict: accepted
        (),  # no concepts: accepted
        ("loop", "python"),  # both known, never together: rejected
    ]
    outcomes = [graph.offer(concepts) for concepts in offers]
    assert outcomes == [True, True, False, True, False, True, True, True, True, False]
    assert (graph.offered, graph.accepted, graph.rejected) == (10, 7, 3)


def test_check_has_no_side_effect():
    graph = ConceptConsistencyGraph()
    assert graph.check(("a", "b"))
    assert graph.n_concepts == 0 and graph.offered == 0


def test_add_connects_every_pair_of_concepts():
    graph = ConceptConsistencyGraph()
    graph.add(("a", "b", "c"))
    assert (graph.n_concepts, graph.n_edges) == (3, 3)
    assert graph.check(("c", "a"))


def test_a_repeated_concept_is_not_paired_with_itself():
    graph = ConceptConsistencyGraph()
    graph.add(("a", "a"))
    assert graph.neighbours == {"a": set()}


def test_rejected_rows_leave_the_graph_unchanged():
    graph = ConceptConsistencyGraph()
    graph.add(("a", "x"))
    graph.add(("b", "y"))
    assert not graph.offer(("a", "b", "new"))
    assert "new" not in graph.neighbours and graph.n_edges == 2


def test_stats_report_the_rejection_rate():
    graph = ConceptConsistencyGraph()
    for concepts in [("a", "b"), ("c", "d"), ("a", "c"), ("a", "b")]:
        graph.offer(concepts)
    stats = graph.stats()
    assert stats["offered"] == 4 and stats["rejected"] == 1 and stats["rejection_rate"] == 0.25
    assert stats["rule"] == "paper" and stats["concepts"] == 4 and stats["edges"] == 2


def test_unknown_rule_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match="known: paper"):
        ConceptConsistencyGraph(rule="strict")


def test_extractor_returns_lowercase_unique_concepts_up_to_top_n():
    extractor = ConceptExtractor(top_n=3)
    concepts = extractor("Python lists can be sorted in Python with the sorted function. Sorting lists is fast.")
    assert 1 <= len(concepts) <= 3
    assert all(c == c.lower() and c == c.strip() for c in concepts)
    assert len(set(concepts)) == len(concepts)


def test_extractor_limits_concepts_to_max_ngram_words():
    extractor = ConceptExtractor(top_n=10, max_ngram=1)
    concepts = extractor("Photosynthesis converts light energy into chemical energy in green plant leaves.")
    assert concepts and all(" " not in c for c in concepts)


def test_extractor_gives_no_concepts_for_blank_text():
    assert ConceptExtractor()("   \n") == ()


def test_extractor_is_deterministic_and_cached():
    extractor = ConceptExtractor()
    text = "Give three tips for staying healthy: eat a balanced diet, exercise and sleep."
    first = extractor(text)
    assert extractor(text) is first


def test_extractor_refuses_non_text():
    with pytest.raises(TypeError, match="str"):
        ConceptExtractor()(None)


def split_on_commas(text: str) -> tuple[str, ...]:
    """Module-level (so it pickles into worker processes): the text is its comma-separated concept list."""
    if text == "boom":
        raise ValueError("cannot read boom")
    return tuple(c for c in text.split(",") if c)


TEXTS = {f"r{i}": f"c{i % 7},c{i % 5},c{i % 3}" for i in range(40)}


def test_extractor_pickles_as_its_settings():
    extractor = ConceptExtractor(top_n=3, max_ngram=1)
    text = "Photosynthesis converts light energy into chemical energy in green plant leaves."
    copy = pickle.loads(pickle.dumps(extractor))
    assert copy(text) == extractor(text)
    assert copy.settings() == extractor.settings()
    assert extractor.settings()["top_n"] == 3 and extractor.settings()["extractor"] == "yake"


def test_cache_finds_a_text_under_any_id_and_misses_an_edited_one():
    cache = ConceptCache()
    cache.bind({"extractor": "split"})
    assert cache.get("a,b") is None
    cache.put("a,b", ["a", "b"])
    cache.put("a,b", ["ignored"])  # already known
    assert cache.get("a,b") == ("a", "b") and len(cache) == 1
    assert cache.get("a,b,c") is None


def test_cache_must_be_bound_before_it_is_filled():
    with pytest.raises(RuntimeError, match="bind"):
        ConceptCache().put("a", ["a"])


def test_cache_bound_to_one_extractor_refuses_another():
    cache = ConceptCache()
    cache.bind({"extractor": "split"})
    cache.bind({"extractor": "split"})
    with pytest.raises(ValueError, match="one cache per extractor setting"):
        cache.bind({"extractor": "yake"})


def test_cache_folder_is_written_every_flush_rows_and_read_back(tmp_path):
    cache = ConceptCache(tmp_path / "concepts", flush_rows=2)
    cache.bind({"extractor": "split"})
    for row_id in ["r1", "r2", "r3"]:
        cache.put(TEXTS[row_id], split_on_commas(TEXTS[row_id]))
    assert len(list((tmp_path / "concepts").glob("shard-*.done"))) == 1  # r1, r2; r3 waits for a flush
    cache.flush()
    reopened = ConceptCache(tmp_path / "concepts")
    reopened.bind({"extractor": "split"})
    assert len(reopened) == 3 and reopened.get(TEXTS["r3"]) == split_on_commas(TEXTS["r3"])
    reopened.put(TEXTS["r4"], split_on_commas(TEXTS["r4"]))
    reopened.flush()
    assert len(list((tmp_path / "concepts").glob("shard-*.done"))) == 3


def test_cache_folder_filled_with_other_settings_is_refused(tmp_path):
    ConceptCache(tmp_path).bind({"extractor": "split"})
    with pytest.raises(RuntimeError, match="changed: extractor"):
        ConceptCache(tmp_path).bind({"extractor": "yake"})


def test_prefetched_concepts_equal_the_serial_ones_whatever_the_plan():
    ids = list(TEXTS)
    plans = [lambda: iter(ids), lambda: iter(ids[::-1]), lambda: iter(())]  # right, wrong, none
    serial = SerialConcepts(split_on_commas, TEXTS.__getitem__)
    expected = [serial(row_id) for row_id in ids]
    for plan in plans:
        with PrefetchedConcepts(split_on_commas, TEXTS.__getitem__, plan, workers=2, batch_rows=3, window=7) as source:
            assert [source(row_id) for row_id in ids] == expected
        assert source.extracted >= len(ids)


def test_prefetched_concepts_read_and_fill_the_cache():
    cache = ConceptCache()
    cache.bind({"extractor": "split"})
    for row_id in ["r0", "r1"]:
        cache.put(TEXTS[row_id], ("from", "cache"))
    ids = ["r0", "r1", "r2", "r3"]
    with PrefetchedConcepts(split_on_commas, TEXTS.__getitem__, lambda: iter(ids), workers=1, cache=cache) as source:
        assert [source(row_id) for row_id in ids] == [("from", "cache")] * 2 + [("c2", "c2", "c2"), ("c3", "c3", "c0")]
    assert source.extracted == 2 and len(cache) == 4


def test_prefetched_concepts_raise_a_workers_failure_when_its_row_is_asked_for():
    texts = {"r0": "a,b", "r1": "boom", "r2": "c"}
    with PrefetchedConcepts(split_on_commas, texts.__getitem__, lambda: iter(texts), workers=1) as source:
        assert source("r0") == ("a", "b")  # extracted in the same task as r1
        with pytest.raises(RuntimeError, match="row 'r1': ValueError: cannot read boom"):
            source("r1")
        assert source("r2") == ("c",)


def test_prefetched_concepts_refuse_an_extractor_that_does_not_pickle():
    with pytest.raises(ValueError, match="concept_workers=0"):
        PrefetchedConcepts(lambda text: (text,), str, lambda: iter(()), workers=1)


def test_serial_concepts_extract_only_rows_asked_for_and_use_the_cache():
    cache = ConceptCache()
    cache.bind({"extractor": "split"})
    cache.put(TEXTS["r0"], ("from", "cache"))
    with SerialConcepts(split_on_commas, TEXTS.__getitem__, cache) as source:
        assert source("r0") == ("from", "cache") and source("r5") == ("c5", "c0", "c2")
    assert source.extracted == 1 and len(cache) == 2
