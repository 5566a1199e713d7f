import pytest

from selection.consistency import ConceptConsistencyGraph, ConceptExtractor


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
