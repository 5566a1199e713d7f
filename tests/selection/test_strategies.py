import dataclasses
import sys
import types

import numpy as np
import pandas as pd
import pytest

from paser.selection.allocate import TokenBudget
from paser.selection.consistency import ConceptCache
from paser.selection.strategies import STRATEGIES, SelectionInputs, get_strategy


def split_concepts(text: str) -> tuple[str, ...]:
    """Test extractor: the concept text is the comma-separated concept list itself."""
    return tuple(c for c in text.split(",") if c)


def make_table(clusters, cds, prompt_tokens=None, response_tokens=None, ids=None) -> pd.DataFrame:
    n = len(clusters)
    return pd.DataFrame(
        {
            "id": ids if ids is not None else [f"r{i:03d}" for i in range(n)],
            "cluster": np.asarray(clusters, dtype=np.int64),
            "cds": np.asarray(cds, dtype=np.float64),
            "prompt_tokens": prompt_tokens if prompt_tokens is not None else np.full(n, 10),
            "response_tokens": response_tokens if response_tokens is not None else np.full(n, 20),
            "nll_original": np.linspace(1.0, 2.0, n),
            "nll_pruned": np.linspace(3.0, 1.5, n),
        }
    )


def concept_inputs(table: pd.DataFrame, concepts: dict[str, str], seed: int = 0) -> SelectionInputs:
    return SelectionInputs(table=table, concept_text=lambda row_id: concepts[row_id], seed=seed)


@pytest.fixture
def random_inputs() -> SelectionInputs:
    rng = np.random.default_rng(7)
    n = 240
    table = make_table(
        clusters=rng.integers(0, 5, size=n),
        cds=rng.random(n) * 0.69,
        prompt_tokens=rng.integers(5, 200, size=n),
        response_tokens=rng.integers(1, 300, size=n),
    )
    table["nll_pruned_unconditioned"] = table["nll_pruned"] + rng.random(n)
    # A small vocabulary makes the CCG reject a fair share of rows.
    vocabulary = [f"c{j}" for j in range(25)]
    concepts = {row_id: ",".join(rng.choice(vocabulary, size=3, replace=False)) for row_id in table["id"]}
    embeddings = rng.normal(size=(n, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return SelectionInputs(table=table, embeddings=embeddings, concept_text=concepts.__getitem__, seed=3)


@pytest.fixture
def fake_kmeans(monkeypatch):
    """Replace selection.cluster.kmeans_cluster by round-robin labels; records its calls."""
    calls = []

    def kmeans_cluster(embeddings, n_clusters, seed=0):
        calls.append((len(embeddings), n_clusters, seed))
        return np.arange(len(embeddings)) % n_clusters

    monkeypatch.setitem(sys.modules, "paser.selection.cluster", types.SimpleNamespace(kmeans_cluster=kmeans_cluster))
    return calls


# Every registered strategy that fills a budget (`full` ignores it), and those that draw at random: a strategy
# registered later is covered by the contract tests by being registered.
# single_cluster draws from one cluster only, so it cannot fill every budget of the pool (tested on its own).
BUDGETED = sorted(set(STRATEGIES) - {"full", "single_cluster"})
SEEDED = ["paser", "random", "kmeans_diverse", "degradation_sampled"]


def build(name: str):
    return get_strategy(name, concept_extractor=split_concepts) if name == "paser" else get_strategy(name)


def skip_a_disjoint_control_of_more_than_half(name: str, rows: int, table: pd.DataFrame) -> None:
    """length_matched draws among the rows its reference left, so it cannot match more than half of them (its
    refusal is tested on its own)."""
    if name == "length_matched" and rows > len(table) // 2:
        pytest.skip("length_matched needs as many rows left as its reference took")


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("budget", [1, 37, 240])
def test_every_strategy_returns_exactly_budget_unique_ids(name, budget, random_inputs, fake_kmeans):
    skip_a_disjoint_control_of_more_than_half(name, budget, random_inputs.table)
    result = build(name).select(random_inputs, budget)
    assert len(result.ids) == budget and len(set(result.ids)) == budget
    assert set(result.ids) <= set(random_inputs.table["id"])


@pytest.mark.parametrize("name", SEEDED)
def test_same_seed_gives_identical_ids(name, random_inputs, fake_kmeans):
    assert build(name).select(random_inputs, 50).ids == build(name).select(random_inputs, 50).ids


def test_full_returns_every_row_in_corpus_order_and_records_the_ignored_budget(random_inputs):
    result = get_strategy("full").select(random_inputs, 10)
    assert result.ids == random_inputs.table["id"].tolist()
    assert result.stats["budget_ignored"] == 10 and result.stats["selected"] == 240


def test_random_depends_on_the_seed(random_inputs):
    other = SelectionInputs(table=random_inputs.table, seed=random_inputs.seed + 1)
    strategy = get_strategy("random")
    assert strategy.select(random_inputs, 50).ids != strategy.select(other, 50).ids


def test_cds_topk_takes_the_highest_cds_with_ties_by_id():
    table = make_table([0] * 5, [0.1, 0.5, 0.3, 0.5, 0.2], ids=["e", "d", "c", "b", "a"])
    assert get_strategy("cds_topk").select(SelectionInputs(table), 3).ids == ["b", "d", "c"]


def test_loss_takes_the_highest_pruned_nll():
    table = make_table([0] * 4, [0.1] * 4)
    table["nll_pruned"] = [2.0, 4.0, 1.0, 3.0]
    assert get_strategy("loss").select(SelectionInputs(table), 2).ids == ["r001", "r003"]


def test_ifd_ranks_by_conditioned_over_unconditioned_nll():
    table = make_table([0] * 3, [0.1] * 3)
    table["nll_pruned"] = [2.0, 1.0, 3.0]
    table["nll_pruned_unconditioned"] = [4.0, 1.0, 4.0]  # IFD 0.5, 1.0, 0.75
    result = get_strategy("ifd").select(SelectionInputs(table), 2)
    assert result.ids == ["r001", "r002"]
    assert result.scores.tolist() == [0.5, 1.0, 0.75]


def test_ifd_without_the_unconditioned_nll_column_names_it():
    table = make_table([0] * 3, [0.1] * 3)
    with pytest.raises(ValueError, match="nll_pruned_unconditioned"):
        get_strategy("ifd").select(SelectionInputs(table), 2)


def test_ifd_refuses_non_positive_unconditioned_nll():
    table = make_table([0] * 2, [0.1] * 2)
    table["nll_pruned_unconditioned"] = [1.0, 0.0]
    with pytest.raises(ValueError, match="r001"):
        get_strategy("ifd").select(SelectionInputs(table), 1)


def test_kmeans_diverse_gives_each_cluster_an_equal_water_filled_share(monkeypatch):
    labels = np.array([0] * 2 + [1] * 10 + [2] * 10)
    monkeypatch.setitem(
        sys.modules, "paser.selection.cluster", types.SimpleNamespace(kmeans_cluster=lambda e, k, seed=0: labels)
    )
    table = make_table(labels, [0.1] * 22)
    inputs = SelectionInputs(table, embeddings=np.zeros((22, 4), dtype=np.float32))
    result = get_strategy("kmeans_diverse").select(inputs, 12)
    # Equal shares of 4; cluster 0 holds 2, so clusters 1 and 2 take 5 each.
    assert result.clusters["selected"].tolist() == [2, 5, 5]
    chosen_labels = labels[[int(i[1:]) for i in result.ids]]
    assert np.bincount(chosen_labels).tolist() == [2, 5, 5]


def test_kmeans_diverse_uses_the_table_cluster_count_unless_given(random_inputs, fake_kmeans):
    get_strategy("kmeans_diverse").select(random_inputs, 10)
    get_strategy("kmeans_diverse", n_clusters=3).select(random_inputs, 10)
    assert fake_kmeans == [(240, 5, 3), (240, 3, 3)]


def test_unknown_strategy_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError) as error:
        get_strategy("best")
    assert str(error.value) == f"unknown selection strategy 'best'; known: {', '.join(STRATEGIES.names())}"
    with pytest.raises(ValueError, match=r"did you mean paser\?$"):
        get_strategy("pasre")
    assert {"paser", "random", "full", "cds_topk", "loss", "ifd", "kmeans_diverse", "degradation_sampled"} <= set(
        STRATEGIES
    )


def test_unknown_option_is_refused_listing_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown option.*ccg_rule.*accepted: manifold"):
        get_strategy("paser", ccg_rule="strict")
    with pytest.raises(ValueError, match="accepted: none"):
        get_strategy("random", seed=3)


def test_unknown_paser_ranking_is_refused():
    with pytest.raises(ValueError, match="ies, cds, random"):
        get_strategy("paser", ranking="loss")


def test_budget_outside_the_table_is_refused(random_inputs):
    with pytest.raises(ValueError, match=r"\[1, 240\]"):
        get_strategy("cds_topk").select(random_inputs, 241)
    with pytest.raises(ValueError, match=r"\[1, 240\]"):
        get_strategy("random").select(random_inputs, 0)


def test_duplicate_ids_are_refused():
    table = make_table([0, 0], [0.1, 0.2], ids=["a", "a"])
    with pytest.raises(ValueError, match="unique"):
        get_strategy("cds_topk").select(SelectionInputs(table), 1)


def test_paser_with_ccg_needs_concept_text():
    table = make_table([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="concept_text"):
        get_strategy("paser", concept_extractor=split_concepts).select(SelectionInputs(table), 1)


def test_paser_allocates_by_cluster_cds_and_takes_the_best_ies_in_each_cluster():
    # Cluster 0: mean CDS 0.6, cluster 1: 0.2 -> budget 4 splits 3 : 1.
    table = make_table([0, 0, 0, 0, 1, 1, 1, 1], [0.5, 0.7, 0.6, 0.6, 0.1, 0.3, 0.2, 0.2])
    result = get_strategy("paser", ccg=False).select(SelectionInputs(table), 4)
    assert result.ids == ["r001", "r002", "r003", "r005"]
    assert result.clusters["budget"].tolist() == [3, 1]
    assert result.clusters["selected"].tolist() == [3, 1]


def test_paser_refills_a_ccg_rejected_slot_from_the_same_cluster():
    table = make_table([0] * 4 + [1] * 4, [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    concepts = {
        "r000": "x,p",
        "r001": "y,q",
        "r002": "x,y",  # x and y are both known and never co-occurred: rejected
        "r003": "z",
        "r004": "m",
        "r005": "n",
        "r006": "o",
        "r007": "s",
    }
    # Mean CDS 0.75 vs 0.25: budget 4 -> 3 : 1.
    result = get_strategy("paser", concept_extractor=split_concepts).select(concept_inputs(table, concepts), 4)
    assert result.ids == ["r000", "r001", "r003", "r004"]
    assert result.clusters["selected"].tolist() == [3, 1]
    assert result.clusters["ccg_rejected"].tolist() == [1, 0]
    assert result.stats["ccg"]["rejected"] == 1 and result.stats["ccg_readmitted"] == 0


def test_paser_hands_a_ccg_exhausted_clusters_shortfall_to_the_others():
    table = make_table([0] * 3 + [1] * 6, [0.9, 0.8, 0.7] + [0.3] * 6)
    concepts = {"r000": "x,p", "r001": "y,q", "r002": "x,y"} | {f"r{i:03d}": f"u{i}" for i in range(3, 9)}
    # Mean CDS 0.8 vs 0.3: budget 5 -> 40/11 = 3.64 and 15/11 = 1.36 -> [4, 1] by largest remainder... but
    # cluster 0 holds 3, so water-filling gives [3, 2]; the CCG then rejects r002, so cluster 0 achieves 2
    # and its missing row goes to cluster 1, which gives 3.
    result = get_strategy("paser", concept_extractor=split_concepts).select(concept_inputs(table, concepts), 5)
    assert result.clusters["budget"].tolist() == [3, 2]
    assert result.clusters["selected"].tolist() == [2, 3]
    assert result.clusters["exhausted"].tolist() == [True, False]
    assert result.stats["rows_reallocated"] == 1 and result.stats["allocation_rounds"] == 2
    assert result.ids == ["r000", "r001", "r003", "r004", "r005"]


def test_paser_readmits_ccg_rejected_rows_in_rank_order_when_the_budget_cannot_be_met():
    table = make_table([0] * 6, [0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    concepts = {"r000": "a,b", "r001": "c,d"} | {f"r{i:03d}": "a,c" for i in range(2, 6)}
    result = get_strategy("paser", concept_extractor=split_concepts).select(concept_inputs(table, concepts), 5)
    assert result.ids == ["r000", "r001", "r002", "r003", "r004"]
    assert result.stats["ccg"]["rejected"] == 4
    assert result.stats["ccg_readmitted"] == 3
    assert result.clusters["ccg_readmitted"].tolist() == [3]


def test_paser_without_ccg_keeps_rows_the_ccg_would_reject():
    table = make_table([0] * 6, [0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    concepts = {"r000": "a,b", "r001": "c,d"} | {f"r{i:03d}": "a,c" for i in range(2, 6)}
    result = get_strategy("paser", ccg=False).select(concept_inputs(table, concepts), 3)
    assert result.ids == ["r000", "r001", "r002"]
    assert result.stats["ccg"] is None and result.clusters["ccg_rejected"].tolist() == [0]


def test_paser_without_degradation_allocation_splits_by_cluster_size():
    # Cluster 0: 2 rows, mean CDS 0.6; cluster 1: 6 rows, mean CDS 0.1.
    table = make_table([0, 0] + [1] * 6, [0.6, 0.6] + [0.1] * 6)
    by_cds = get_strategy("paser", ccg=False).select(SelectionInputs(table), 4)
    by_size = get_strategy("paser", ccg=False, degradation_allocation=False).select(SelectionInputs(table), 4)
    # By CDS: 4 * 6/7 = 3.43 > 2 rows, so cluster 0 gives 2 and cluster 1 the other 2; by size: 1 : 3.
    assert by_cds.clusters["budget"].tolist() == [2, 2]
    assert by_size.clusters["budget"].tolist() == [1, 3]


def test_paser_ies_ranking_prefers_short_rows_that_cds_ranking_would_pass_over():
    # r000 is slightly more degraded but 100x longer: IES 0.50/ln(1e8) = 0.027 < 0.45/ln(1e4) = 0.049.
    table = make_table([0, 0], [0.50, 0.45], prompt_tokens=[5_000, 50], response_tokens=[5_000, 50])
    ies = get_strategy("paser", ccg=False).select(SelectionInputs(table), 1)
    cds = get_strategy("paser", ccg=False, ranking="cds").select(SelectionInputs(table), 1)
    assert ies.ids == ["r001"] and cds.ids == ["r000"]
    assert ies.scores.name == "ies" and cds.scores.name == "cds"


def test_paser_damage_density_ranking_prefers_the_rows_whose_loss_tokens_carry_the_damage():
    # r000: short, prompt-heavy, high mean JSD (IES 0.40/ln(60^2) = 0.049; density 0.40 * 10/60 = 0.067);
    # r001: long answer to a short prompt, lower mean JSD (IES 0.30/ln(200^2) = 0.028; density 0.30 * 190/200 = 0.285).
    table = make_table([0, 0], [0.40, 0.30], prompt_tokens=[50, 10], response_tokens=[10, 190])
    ies = get_strategy("paser", ccg=False).select(SelectionInputs(table), 1)
    density = get_strategy("paser", ccg=False, ranking="damage_density").select(SelectionInputs(table), 1)
    assert ies.ids == ["r000"] and density.ids == ["r001"]
    assert density.scores.name == "damage_density"
    np.testing.assert_allclose(density.scores.to_numpy(), [0.40 * 10 / 60, 0.30 * 190 / 200])


def test_paser_random_ranking_depends_on_the_seed(random_inputs):
    strategy = get_strategy("paser", ccg=False, ranking="random")
    other = SelectionInputs(table=random_inputs.table, seed=random_inputs.seed + 1)
    assert strategy.select(random_inputs, 30).ids != strategy.select(other, 30).ids


def test_paser_linear_cost_keeps_the_order_and_doubles_the_scores(random_inputs):
    squared = get_strategy("paser", ccg=False).select(random_inputs, 30)
    linear = get_strategy("paser", ccg=False, cost="linear").select(random_inputs, 30)
    assert linear.ids == squared.ids
    np.testing.assert_allclose(linear.scores.to_numpy(), 2 * squared.scores.to_numpy())


def test_paser_without_manifold_clusters_with_kmeans_on_the_embeddings(random_inputs, fake_kmeans):
    result = get_strategy("paser", ccg=False, manifold=False).select(random_inputs, 30)
    assert fake_kmeans == [(240, 5, 3)]
    # Round-robin fake labels give clusters of 48 rows, unlike the table's clusters.
    assert result.clusters["size"].tolist() == [48] * 5
    assert result.clusters["size"].tolist() != random_inputs.table["cluster"].value_counts().sort_index().tolist()


def test_paser_without_manifold_needs_embeddings():
    table = make_table([0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="embeddings"):
        get_strategy("paser", ccg=False, manifold=False).select(SelectionInputs(table), 1)


def test_paser_zero_cds_clusters_are_used_only_once_the_others_are_exhausted():
    table = make_table([0, 0, 1, 1, 1], [0.4, 0.2, 0.0, 0.0, 0.0])
    result = get_strategy("paser", ccg=False).select(SelectionInputs(table), 3)
    assert result.clusters["budget"].tolist() == [2, 1]
    assert result.ids[:2] == ["r000", "r001"]


def test_paser_extracts_concepts_only_for_offered_rows(random_inputs):
    offered = []

    def recording_extractor(text):
        offered.append(text)
        return split_concepts(text)

    inputs = SelectionInputs(random_inputs.table, concept_text=lambda row_id: f"only-{row_id}")
    strategy = get_strategy("paser", concept_extractor=recording_extractor, concept_workers=0)
    result = strategy.select(inputs, 20)
    # Every row has its own concept, so nothing is rejected and exactly the budget is offered.
    assert len(offered) == result.stats["ccg"]["offered"] == 20


def test_paser_with_yake_concepts_selects_exactly_the_budget():
    texts = {
        "r000": "Explain how photosynthesis turns light energy into chemical energy in plants.",
        "r001": "Write a Python function that sorts a list of integers in place.",
        "r002": "Summarise the causes of the French Revolution in three sentences.",
        "r003": "Translate the sentence 'good morning' into Spanish and French.",
        "r004": "List three healthy breakfast ideas that contain plenty of protein.",
    }
    table = make_table([0, 0, 1, 1, 1], [0.3, 0.2, 0.1, 0.15, 0.05])
    result = get_strategy("paser").select(concept_inputs(table, texts), 3)
    assert len(result.ids) == 3 and result.stats["ccg"]["offered"] >= 3


def test_kmeans_diverse_with_real_kmeans_draws_equally_from_separated_blobs():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8, dtype=np.float32)
    blob = np.repeat(np.arange(3), 20)
    embeddings = centres[blob] + 0.01 * rng.normal(size=(60, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    table = make_table(blob, np.full(60, 0.1))
    result = get_strategy("kmeans_diverse").select(SelectionInputs(table, embeddings=embeddings), 9)
    chosen_blobs = blob[[int(i[1:]) for i in result.ids]]
    assert np.bincount(chosen_blobs).tolist() == [3, 3, 3]


class CountingSplitConcepts:
    """Test extractor with settings (so it can use a concept cache), counting the texts it extracts."""

    def __init__(self):
        self.calls = 0

    def __call__(self, text: str) -> tuple[str, ...]:
        self.calls += 1
        return split_concepts(text)

    def settings(self) -> dict[str, str]:
        return {"extractor": "split_concepts"}


def without_extraction_count(stats: dict) -> dict:
    return {key: value for key, value in stats.items() if key != "concepts_extracted"}


@pytest.mark.parametrize(("workers", "batch_rows", "prefetch_rows"), [(1, 1, 1), (2, 3, 5), (2, 32, 1024)])
def test_paser_extracting_in_worker_processes_selects_exactly_what_the_serial_walk_selects(
    workers, batch_rows, prefetch_rows, random_inputs
):
    serial = get_strategy("paser", concept_extractor=split_concepts, concept_workers=0).select(random_inputs, 30)
    pooled = get_strategy(
        "paser",
        concept_extractor=split_concepts,
        concept_workers=workers,
        concept_batch_rows=batch_rows,
        concept_prefetch_rows=prefetch_rows,
    ).select(random_inputs, 30)
    # The fixture's small vocabulary makes the CCG reject most rows: a second allocation round, readmissions.
    assert serial.stats["allocation_rounds"] == 2 and serial.stats["ccg_readmitted"] > 0
    assert pooled.ids == serial.ids
    assert pooled.clusters.equals(serial.clusters)
    assert without_extraction_count(pooled.stats) == without_extraction_count(serial.stats)
    assert pooled.stats["concepts_extracted"] >= serial.stats["concepts_extracted"] == serial.stats["ccg"]["offered"]


def test_paser_with_yake_in_worker_processes_selects_exactly_what_the_serial_walk_selects():
    rng = np.random.default_rng(5)
    words = ["protein", "galaxy", "recipe", "contract", "python", "melody", "climate", "invoice", "enzyme"]
    texts = {
        f"r{i:03d}": " ".join(f"The {a} explains the {b}." for a, b in rng.choice(words, size=(3, 2)))
        for i in range(60)
    }
    table = make_table(rng.integers(0, 3, size=60), rng.random(60) * 0.6)
    serial = get_strategy("paser", concept_workers=0).select(concept_inputs(table, texts), 20)
    pooled = get_strategy("paser", concept_workers=2, concept_batch_rows=4).select(concept_inputs(table, texts), 20)
    assert serial.stats["ccg"]["rejected"] > 0
    assert pooled.ids == serial.ids and pooled.stats["ccg"] == serial.stats["ccg"]


def test_paser_concept_cache_lets_a_budget_sweep_extract_each_row_once(tmp_path, random_inputs):
    def select(budget: int, cache: ConceptCache | None, extractor: CountingSplitConcepts):
        # Every row has its own concept, so nothing is rejected: the rows offered are the rows chosen.
        inputs = SelectionInputs(random_inputs.table, concept_text=lambda row_id: row_id, concept_cache=cache)
        return get_strategy("paser", concept_extractor=extractor, concept_workers=0).select(inputs, budget)

    first = select(40, ConceptCache(tmp_path / "concepts"), CountingSplitConcepts())
    extractor = CountingSplitConcepts()
    second = select(90, ConceptCache(tmp_path / "concepts"), extractor)  # as a new process would
    assert second.ids == select(90, None, CountingSplitConcepts()).ids
    assert extractor.calls == second.stats["concepts_extracted"] == len(set(second.ids) - set(first.ids)) > 0


def test_paser_concept_cache_needs_an_extractor_with_settings(random_inputs):
    inputs = SelectionInputs(random_inputs.table, concept_text=random_inputs.concept_text, concept_cache=ConceptCache())
    with pytest.raises(ValueError, match="settings"):
        get_strategy("paser", concept_extractor=split_concepts).select(inputs, 5)


def test_paser_max_offers_per_slot_stops_a_rejecting_cluster_and_hands_its_shortfall_on():
    table = make_table([0] * 6 + [1] * 6, [0.6] * 6 + [0.2] * 6)
    concepts = {"r000": "a,b", "r001": "c,d"} | {f"r{i:03d}": "a,c" for i in range(2, 6)}
    concepts |= {f"r{i:03d}": f"u{i}" for i in range(6, 12)}
    inputs = concept_inputs(table, concepts)
    # Mean CDS 0.6 vs 0.2: budget 4 -> quotas 3 : 1. Cluster 0 accepts r000, r001 and rejects the rest.
    bounded = get_strategy("paser", concept_extractor=split_concepts, ccg_max_offers_per_slot=1).select(inputs, 4)
    unbounded = get_strategy("paser", concept_extractor=split_concepts).select(inputs, 4)
    assert bounded.ids == unbounded.ids == ["r000", "r001", "r006", "r007"]
    # Bounded: cluster 0 offers 1 x its quota of 3 rows, then cluster 1 takes the missing row.
    assert bounded.stats["ccg"]["offered"] == 3 + 2 and unbounded.stats["ccg"]["offered"] == 6 + 2
    assert bounded.clusters["exhausted"].tolist() == [True, False]
    assert bounded.clusters["ccg_rejected"].tolist() == [1, 0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concept_workers": -1}, "concept_workers"),
        ({"concept_batch_rows": 64, "concept_prefetch_rows": 32}, "concept_batch_rows <= concept_prefetch_rows"),
        ({"ccg_max_offers_per_slot": 0.5}, "ccg_max_offers_per_slot"),
    ],
)
def test_paser_refuses_malformed_concept_options(options, message):
    with pytest.raises(ValueError, match=message):
        get_strategy("paser", concept_extractor=split_concepts, **options)


def build_serial(name: str):
    """`build`, with paser's concepts extracted in this process."""
    return get_strategy(name, concept_extractor=split_concepts, concept_workers=0) if name == "paser" else build(name)


def tokens_of(table: pd.DataFrame, ids) -> int:
    chosen = table.set_index("id").loc[list(ids)]
    return int((chosen["prompt_tokens"] + chosen["response_tokens"]).sum())


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("tokens", [30, 1_000, 3_599, 7_200, 100_000])
def test_every_strategy_fills_a_token_budget_as_far_as_whole_rows_allow(name, tokens, random_inputs, fake_kmeans):
    # Every row costs 10 + 20 = 30 tokens, so the budget buys exactly min(tokens // 30, 240) rows.
    table = random_inputs.table.assign(prompt_tokens=10, response_tokens=20)
    skip_a_disjoint_control_of_more_than_half(name, min(tokens // 30, 240), table)
    inputs = dataclasses.replace(random_inputs, table=table)
    result = build_serial(name).select(inputs, TokenBudget(tokens))
    assert len(set(result.ids)) == len(result.ids) == min(tokens // 30, 240)
    assert result.stats["selected_tokens"] == tokens_of(table, result.ids) <= tokens
    assert result.stats["budget_tokens"] == tokens and result.stats["rows_over_budget"] == 0


@pytest.mark.parametrize("name", BUDGETED)
def test_every_strategy_stays_within_a_token_budget_over_rows_of_any_length(name, random_inputs, fake_kmeans):
    result = build_serial(name).select(random_inputs, TokenBudget(5_000))
    assert result.stats["selected_tokens"] == tokens_of(random_inputs.table, result.ids) <= 5_000
    # Rows run to 500 tokens: the walk stops with less than one row's worth left.
    assert result.stats["selected_tokens"] > 5_000 - 500


def test_a_token_budget_stops_at_the_first_row_that_would_overflow_it():
    table = make_table([0] * 5, [0.5, 0.4, 0.3, 0.2, 0.1], prompt_tokens=[10] * 5, response_tokens=[20, 40, 50, 1, 1])
    result = get_strategy("cds_topk").select(SelectionInputs(table), TokenBudget(100))
    # 30 + 50 = 80; r002 (60 tokens) would make 140, so the walk ends although r003 and r004 (11 each) fit.
    assert result.ids == ["r000", "r001"]
    assert result.stats == {"strategy": "cds_topk", "budget_tokens": 100, "selected_tokens": 80, "rows_over_budget": 0}


@pytest.mark.parametrize("name", ["paser", "cds_topk"])
def test_a_row_larger_than_the_whole_token_budget_is_skipped_not_a_stop(name):
    # r000 comes first by CDS and by IES but has 1,010 tokens; the rest cost 30 each.
    table = make_table([0] * 4, [0.69, 0.3, 0.2, 0.1], prompt_tokens=[10] * 4, response_tokens=[1_000, 20, 20, 20])
    result = build_serial(name).select(concept_inputs(table, dict.fromkeys(table["id"], "")), TokenBudget(100))
    assert result.ids == ["r001", "r002", "r003"]
    assert result.stats["rows_over_budget"] == 1 and result.stats["selected_tokens"] == 90


def test_a_token_budget_smaller_than_every_row_is_refused():
    table = make_table([0] * 3, [0.1] * 3)
    with pytest.raises(ValueError, match="smaller than every row .*30 tokens"):
        get_strategy("random").select(SelectionInputs(table), TokenBudget(29))


def test_random_under_a_token_budget_follows_a_seeded_order(random_inputs):
    strategy = get_strategy("random")
    other = dataclasses.replace(random_inputs, seed=random_inputs.seed + 1)
    first = strategy.select(random_inputs, TokenBudget(4_000)).ids
    assert strategy.select(random_inputs, TokenBudget(4_000)).ids == first
    assert strategy.select(other, TokenBudget(4_000)).ids != first
    # A larger budget walks further along the same order.
    assert strategy.select(random_inputs, TokenBudget(8_000)).ids[: len(first)] == first


def test_full_ignores_a_token_budget_and_records_it(random_inputs):
    result = get_strategy("full").select(random_inputs, TokenBudget(500))
    assert result.ids == random_inputs.table["id"].tolist() and result.stats["budget_ignored"] == "500t"


def planted_token_table() -> pd.DataFrame:
    """Three clusters of mean CDS 0.3, 0.2 and 0.1 holding 370, 170 and 130 tokens; IES order inside each is
    a0, a1, a2 / b0, b1 / c0, c1 (the higher CDS, or at equal CDS the shorter row, first)."""
    ids = ["a0", "a1", "a2", "b0", "b1", "c0", "c1"]
    tokens = np.array([120, 100, 150, 90, 80, 60, 70])
    return make_table(
        [0, 0, 0, 1, 1, 2, 2],
        [0.4, 0.3, 0.2, 0.25, 0.15, 0.1, 0.1],
        prompt_tokens=np.full(7, 20),
        response_tokens=tokens - 20,
        ids=ids,
    )


def test_paser_allocates_a_token_budget_over_clusters_in_proportion_to_cds():
    result = get_strategy("paser", ccg=False).select(SelectionInputs(planted_token_table()), TokenBudget(601))
    # Shares of 601 tokens ∝ 0.3 : 0.2 : 0.1 are 300.5, 200.3, 100.2; cluster 1 holds only 170, and the other
    # 431 go to clusters 0 and 2 in proportion 3 : 1 (323.25 and 107.75, the leftover token to the larger
    # remainder).
    assert result.clusters["budget"].tolist() == [323, 170, 108]
    # Round 1 in IES order: a0 + a1 = 220 (a2 would overflow 323), b0 + b1 = 170, c0 = 60 (c1 would overflow
    # 108). The 151 left are split again (113 and 38) and fit no next row; then, in walk order, the clusters
    # take their next rows within what is left of the budget: a2 (150), and c1 (70) no longer fits.
    assert result.ids == ["a0", "a1", "b0", "b1", "c0", "a2"]
    assert result.clusters["selected"].tolist() == [3, 2, 1]
    assert result.clusters["selected_tokens"].tolist() == [370, 170, 60]
    assert result.stats["budget"] == "601t" and result.stats["selected_tokens"] == 600
    assert result.stats["allocation_rounds"] == 2 and result.stats["tokens_reallocated"] == 151


# a2's concepts y and z are both in the graph by its turn (from a0 and a1) but never together: rejected.
PLANTED_CONCEPTS = {"a0": "x,y", "a1": "x,z", "a2": "y,z", "b0": "x,y", "b1": "x,y", "c0": "x,y", "c1": "x,y"}


def test_paser_readmits_a_rejected_row_under_a_token_budget_once_every_row_was_offered():
    inputs = concept_inputs(planted_token_table(), PLANTED_CONCEPTS)
    result = build_serial("paser").select(inputs, TokenBudget(10_000))
    assert result.ids == ["a0", "a1", "b0", "b1", "c0", "c1", "a2"]
    assert result.stats["ccg"]["rejected"] == 1 and result.stats["ccg_readmitted"] == 1


def test_paser_readmits_a_rejected_row_under_a_token_budget_only_where_it_fits():
    inputs = concept_inputs(planted_token_table(), PLANTED_CONCEPTS)
    result = build_serial("paser").select(inputs, TokenBudget(601))
    # As in the planted allocation, but a2 is rejected when offered at the end, so c1 fits what is left (151);
    # then 81 tokens are left, too few to readmit a2 (150).
    assert result.ids == ["a0", "a1", "b0", "b1", "c0", "c1"]
    assert result.stats["ccg"]["rejected"] == 1 and result.stats["ccg_readmitted"] == 0
    assert result.stats["selected_tokens"] == 520


def test_degradation_sampled_allocates_by_size_times_mean_cds():
    # Cluster 0: 10 rows at CDS 0.1 (weight 1.0); cluster 1: 30 rows at CDS 0.1 (3.0); cluster 2: 10 at 0.4 (4.0).
    labels = [0] * 10 + [1] * 30 + [2] * 10
    table = make_table(labels, [0.1] * 40 + [0.4] * 10)
    result = get_strategy("degradation_sampled").select(SelectionInputs(table, seed=1), 16)
    assert result.clusters["budget"].tolist() == [2, 6, 8]
    assert result.clusters["selected"].tolist() == [2, 6, 8]
    proportional = get_strategy("degradation_sampled", allocation="size").select(SelectionInputs(table, seed=1), 10)
    assert proportional.clusters["selected"].tolist() == [2, 6, 2]


def test_degradation_sampled_draws_high_cds_rows_more_often_but_not_only_the_top():
    # One cluster; rows 0-9 at CDS 0.5, rows 10-99 at CDS 0.05: half the weight is in the first ten rows.
    table = make_table([0] * 100, [0.5] * 10 + [0.05] * 90)
    counts = np.zeros(100)
    for seed in range(200):
        ids = get_strategy("degradation_sampled").select(SelectionInputs(table, seed=seed), 10).ids
        counts[[int(i[1:]) for i in ids]] += 1
    high, low = counts[:10].mean() / 200, counts[10:].mean() / 200
    assert 0.4 < high < 0.8 and 0.02 < low < 0.07  # inclusion ∝ weight, bent by drawing without replacement
    uniform = get_strategy("degradation_sampled", power=0.0)
    counts[:] = 0
    for seed in range(200):
        counts[[int(i[1:]) for i in uniform.select(SelectionInputs(table, seed=seed), 10).ids]] += 1
    assert abs(counts[:10].mean() / 200 - 0.1) < 0.05


def test_degradation_sampled_depends_on_the_seed_and_refuses_bad_options(random_inputs):
    strategy = get_strategy("degradation_sampled")
    other = dataclasses.replace(random_inputs, seed=random_inputs.seed + 1)
    assert strategy.select(random_inputs, 50).ids != strategy.select(other, 50).ids
    with pytest.raises(ValueError, match="allocation"):
        get_strategy("degradation_sampled", allocation="cds")
    with pytest.raises(ValueError, match="power"):
        get_strategy("degradation_sampled", power=-1)


def test_strategies_declare_what_the_pipelines_read_instead_of_their_names():
    from paser.selection.strategies import strategy_class, strategy_with_role

    assert strategy_class("ifd").needs_unconditioned_nll and not strategy_class("paser").needs_unconditioned_nll
    assert not strategy_class("full").uses_budget and all(
        cls.uses_budget for name, cls in STRATEGIES.items() if name != "full"
    )
    assert (strategy_with_role("baseline"), strategy_with_role("reference")) == ("random", "full")
    with pytest.raises(ValueError, match="known: "):
        strategy_class("best")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_refuses_a_table_without_a_column_it_declares(name, random_inputs, fake_kmeans):
    strategy = build(name)
    for column in strategy.requires_columns:
        table = random_inputs.table.drop(columns=[column])
        with pytest.raises(ValueError, match=column):
            strategy.select(dataclasses.replace(random_inputs, table=table), 10)


@pytest.fixture
def strategies_as_they_were():
    """What a test registers is gone afterwards."""
    before = STRATEGIES.snapshot()
    yield
    STRATEGIES.restore(before)


def test_registering_a_strategy_derives_its_declarations_and_guards_the_roles(strategies_as_they_were):
    from paser.selection.strategies import register_strategy

    @register_strategy("needs_unconditioned")
    @dataclasses.dataclass
    class NeedsUnconditioned:
        requires_columns = ("id", "nll_pruned_unconditioned")

    assert NeedsUnconditioned.needs_unconditioned_nll and NeedsUnconditioned.uses_budget
    assert NeedsUnconditioned.role is None
    with pytest.raises(ValueError, match="already taken"):

        @register_strategy("second_baseline")
        @dataclasses.dataclass
        class SecondBaseline:
            role = "baseline"

    with pytest.raises(ValueError, match="selection strategy 'paser' is already registered"):
        register_strategy("paser")(NeedsUnconditioned)


def test_single_cluster_draws_a_seeded_sample_of_one_cluster_only():
    labels = [0] * 10 + [1] * 30 + [2] * 10
    table = make_table(labels, [0.1] * 50)
    result = get_strategy("single_cluster", cluster=1).select(SelectionInputs(table, seed=3), 12)
    chosen = [int(i[1:]) for i in result.ids]
    assert len(set(chosen)) == 12 and all(labels[row] == 1 for row in chosen)
    again = get_strategy("single_cluster", cluster=1).select(SelectionInputs(table, seed=3), 12)
    other = get_strategy("single_cluster", cluster=1).select(SelectionInputs(table, seed=4), 12)
    assert again.ids == result.ids != other.ids
    tokens = get_strategy("single_cluster", cluster=2).select(SelectionInputs(table), TokenBudget(100))
    assert len(tokens.ids) == 3 and tokens.stats["selected_tokens"] == 90  # 30 tokens a row
    with pytest.raises(ValueError, match="no cluster 7"):
        get_strategy("single_cluster", cluster=7).select(SelectionInputs(table), 5)
    with pytest.raises(ValueError, match="holds 10 rows, fewer than 11"):
        get_strategy("single_cluster", cluster=0).select(SelectionInputs(table), 11)


def lengths_table(rows_per_length: int = 6) -> pd.DataFrame:
    """Response lengths 10, 20, ..., 100, each on `rows_per_length` rows; prompts of 5 to 14 tokens; CDS rising
    with the row number, so cds_topk takes the last rows."""
    n = 10 * rows_per_length
    return make_table(
        [0] * n,
        np.linspace(0.0, 0.6, n),
        prompt_tokens=5 + np.arange(n) % 10,
        response_tokens=10 * (1 + np.arange(n) % 10),
    )


def test_length_matched_draws_only_rows_the_reference_left_with_its_rows_and_response_tokens():
    table = lengths_table()
    inputs = SelectionInputs(table, seed=2)
    reference = get_strategy("cds_topk").select(inputs, 20)
    result = get_strategy("length_matched", reference="cds_topk").select(inputs, 20)
    lengths = table.set_index("id")["response_tokens"]
    assert not set(result.ids) & set(reference.ids) and len(set(result.ids)) == 20
    # Every length had rows left, so the match is exact row by row, and so in total.
    assert sorted(lengths[result.ids]) == sorted(lengths[reference.ids])
    assert result.stats["response_tokens"] == result.stats["reference_response_tokens"] == lengths[reference.ids].sum()
    assert (result.stats["matching"], result.stats["shared_with_reference"]) == ("disjoint", 0)
    cds = table.set_index("id")["cds"]
    assert cds[result.ids].mean() < cds[reference.ids].mean()


def test_length_matched_keeps_the_response_tokens_within_its_tolerance_where_lengths_run_out(random_inputs):
    # 240 rows over 299 response lengths: most lengths have no other row, so neighbours stand in, drawn to keep
    # the running total on the reference's.
    reference = get_strategy("cds_topk").select(random_inputs, 60)
    result = get_strategy("length_matched", reference="cds_topk").select(random_inputs, 60)
    assert len(result.ids) == 60 and not set(result.ids) & set(reference.ids)
    wanted, got = result.stats["reference_response_tokens"], result.stats["response_tokens"]
    assert abs(got - wanted) <= 0.01 * wanted
    with pytest.raises(ValueError, match="response_tolerance"):
        get_strategy("length_matched", reference="random", response_tolerance=0.0).select(
            dataclasses.replace(random_inputs, table=lengths_table(1)), 5
        )


def test_length_matched_matches_rows_and_response_tokens_within_a_token_budget():
    # Every response length on six rows; the reference (cds_topk: the last ten rows, one of each length, 5-token
    # prompts) spends the budget to the token, and of the other rows of each length three have 5-token prompts,
    # two 35: drawn rows of long prompts must be swapped for short-prompt rows of the same response length.
    n = 60
    prompts = np.where(np.isin(np.arange(n) // 10, [1, 3]), 35, 5)
    table = make_table(
        [0] * n, np.linspace(0.0, 0.6, n), prompt_tokens=prompts, response_tokens=10 * (1 + np.arange(n) % 10)
    )
    inputs = SelectionInputs(table, seed=1)
    reference = get_strategy("cds_topk").select(inputs, TokenBudget(600))
    budget = TokenBudget(tokens_of(table, reference.ids))
    result = get_strategy("length_matched", reference="cds_topk").select(inputs, budget)
    assert len(result.ids) == len(reference.ids) and not set(result.ids) & set(reference.ids)
    assert result.stats["response_tokens"] == result.stats["reference_response_tokens"]
    assert result.stats["selected_tokens"] == tokens_of(table, result.ids) <= budget.tokens
    assert result.stats["swapped_to_fit_budget"] > 0
    assert sorted(table.set_index("id").loc[result.ids, "response_tokens"]) == list(range(10, 101, 10))


def test_length_matched_refuses_a_reference_of_more_than_half_the_rows_or_an_unfillable_budget():
    table = lengths_table(1)
    with pytest.raises(ValueError, match="took 6 of 10 rows"):
        get_strategy("length_matched", reference="random").select(SelectionInputs(table), 6)
    # The reference takes the one 15-token row; every other row costs 60, over the budget of 20.
    cheap = make_table([0] * 4, [0.1] * 4, prompt_tokens=[5, 50, 50, 50], response_tokens=[10, 10, 10, 10])
    with pytest.raises(ValueError, match="no match of its response lengths within the token budget"):
        get_strategy("length_matched", reference="cds_topk").select(SelectionInputs(cheap), TokenBudget(20))


def test_length_matched_same_length_is_issue_19s_control(random_inputs):
    table = random_inputs.table
    reference = get_strategy("cds_topk").select(random_inputs, 30)
    same_length = get_strategy("length_matched", reference="cds_topk", matching="same_length")
    result = same_length.select(random_inputs, 30)
    lengths = table.set_index("id")["response_tokens"]
    assert len(result.ids) == len(set(result.ids)) == 30
    # Every response length of the reference's rows is matched exactly, the reference's own rows among the draws.
    assert sorted(lengths[result.ids]) == sorted(lengths[reference.ids])
    assert result.stats["reference"] == "cds_topk" and 0 < result.stats["shared_with_reference"] < 30
    again = same_length.select(random_inputs, 30)
    other = same_length.select(dataclasses.replace(random_inputs, seed=4), 30)
    assert again.ids == result.ids != other.ids


def test_length_matched_same_length_re_applies_a_token_budget():
    # Response lengths 20 and 50; prompts of 10 tokens: a row is 30 or 60 tokens.
    table = make_table([0] * 6, [0.1] * 6, response_tokens=np.array([20, 20, 20, 20, 50, 50]))
    inputs = SelectionInputs(table, seed=0)
    same_length = get_strategy("length_matched", reference="random", matching="same_length")
    tokens = same_length.select(inputs, TokenBudget(95))
    assert tokens.stats["selected_tokens"] <= 95 and tokens.stats["budget_tokens"] == 95
    assert tokens.stats["reference_rows"] >= len(tokens.ids) >= 1


def test_length_matched_depends_on_the_seed(random_inputs):
    strategy = get_strategy("length_matched", reference="cds_topk")
    assert strategy.select(random_inputs, 30).ids == strategy.select(random_inputs, 30).ids
    assert strategy.select(random_inputs, 30).ids != strategy.select(dataclasses.replace(random_inputs, seed=4), 30).ids


def test_longest_takes_the_longest_responses_within_a_token_budget_whatever_the_seed():
    table = make_table([0] * 5, [0.1] * 5, prompt_tokens=[10] * 5, response_tokens=[40, 90, 10, 90, 60])
    assert get_strategy("longest").select(SelectionInputs(table), 3).ids == ["r001", "r003", "r004"]  # ties by id
    # 100 + 100 = 200 tokens; r004 (70) would take it over 250, so the walk ends there.
    result = get_strategy("longest").select(SelectionInputs(table, seed=5), TokenBudget(250))
    assert result.ids == ["r001", "r003"] and result.stats["selected_tokens"] == 200 <= 250
    assert get_strategy("longest").select(SelectionInputs(table, seed=9), TokenBudget(250)).ids == result.ids


def test_length_matched_refuses_itself_or_a_reference_needing_undeclared_columns():
    with pytest.raises(ValueError, match="another strategy"):
        get_strategy("length_matched", reference="length_matched")
    with pytest.raises(ValueError, match="needs"):
        get_strategy("length_matched", reference="ifd")
    with pytest.raises(ValueError, match="unknown length_matched matching 'exact'; known: disjoint, same_length"):
        get_strategy("length_matched", matching="exact")
    with pytest.raises(ValueError, match="response_tolerance"):
        get_strategy("length_matched", response_tolerance=1.5)
