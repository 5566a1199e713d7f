"""Cluster purity against a label (pipelines/analysis/purity.py) on planted confusions; the golden NMI and ARI are
worked out by hand from the confusion in each test's comment."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from paser.pipelines.analysis.purity import MAX_HEATMAP_LABELS, cluster_purity, draw_confusion

# Cluster 0: 8 a + 2 b; cluster 1: 5 b + 5 c; cluster 2: 5 a (25 rows).
PLANTED_CLUSTERS = [0] * 10 + [1] * 10 + [2] * 5
PLANTED_LABELS = ["a"] * 8 + ["b"] * 2 + ["b"] * 5 + ["c"] * 5 + ["a"] * 5


def test_confusion_counts_each_cluster_against_each_label():
    confusion = cluster_purity(PLANTED_CLUSTERS, PLANTED_LABELS).confusion
    assert confusion.index.tolist() == [0, 1, 2] and confusion.columns.tolist() == ["a", "b", "c"]
    assert confusion.to_numpy().tolist() == [[8, 2, 0], [0, 5, 5], [5, 0, 0]]


def test_purity_nmi_and_ari_of_a_planted_confusion():
    purity = cluster_purity(PLANTED_CLUSTERS, PLANTED_LABELS)
    assert purity.rows == 25
    assert purity.per_cluster["size"].tolist() == [10, 10, 5]
    assert purity.per_cluster["purity"].tolist() == pytest.approx([0.8, 0.5, 1.0])
    # (8 + 5 + 5) / 25
    assert purity.purity == pytest.approx(0.72)
    # I = 0.540940 nats, H(clusters) = 1.054920, H(labels) = 1.018360: I / mean(H)
    assert purity.nmi == pytest.approx(0.5218204, abs=1e-6)
    # pairs: within cells 59, within clusters 100, within labels 109, all 300; expected 100·109/300:
    # (59 − 109/3) / ((100 + 109)/2 − 109/3) = 136/409
    assert purity.ari == pytest.approx(136 / 409)


def test_majority_label_of_a_tie_is_the_first_in_label_order():
    purity = cluster_purity(PLANTED_CLUSTERS, PLANTED_LABELS)
    assert purity.per_cluster["majority_label"].tolist() == ["a", "b", "a"]


def test_a_clustering_that_is_the_labelling_renamed_scores_one():
    purity = cluster_purity([2, 2, 0, 0, 1, 1], ["x", "x", "y", "y", "z", "z"])
    assert (purity.purity, purity.nmi, purity.ari) == pytest.approx((1.0, 1.0, 1.0))


def test_inputs_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length: 3 clusters, 2 labels"):
        cluster_purity([0, 1, 1], ["a", "b"])


def test_a_missing_label_is_refused():
    with pytest.raises(ValueError, match="labels has 1 missing value"):
        cluster_purity([0, 1, 1], ["a", None, "b"])


def test_heatmap_sums_the_rarest_labels_into_other_beyond_the_maximum():
    labels = [f"label{index:02d}" for index in range(MAX_HEATMAP_LABELS + 5)]
    # label00 is the most frequent (3 rows), every other label has one row.
    purity = cluster_purity([0] * (len(labels) + 2), [labels[0], labels[0], *labels])
    axis = Figure().subplots()
    image = draw_confusion(axis, purity)
    names = [tick.get_text() for tick in axis.get_xticklabels()]
    assert len(names) == MAX_HEATMAP_LABELS and names[0] == "label00" and names[-1] == "other (6 labels)"
    shares = image.get_array()
    assert shares.sum() == pytest.approx(1.0) and shares[0, -1] == pytest.approx(6 / 37)
