"""pipelines/analysis/cds_spread.py: the spread of CDS over clusters and categories, on hand-made values and on the
fake run of tests/pipelines/fake_run.py (its shared/ is a `paser select` folder with one clustering per seed)."""

from __future__ import annotations

import pandas as pd
import pytest

from paser.pipelines.analysis.cds_spread import cds_spread, folder_spread, main
from tests.pipelines.fake_run import build_fake_run


def by_id(values) -> pd.Series:
    return pd.Series(values, index=[f"row{index}" for index in range(len(values))])


def test_spread_is_the_distance_between_the_highest_and_lowest_group_means():
    spread = cds_spread(by_id([0.1, 0.1, 0.3, 0.3]), by_id(["a", "a", "b", "b"]), "cluster")
    assert spread.table["group"].tolist() == ["b", "a"]  # most degraded first
    assert spread.table["mean_cds"].tolist() == pytest.approx([0.3, 0.1])
    assert spread.spread == pytest.approx(0.2) and spread.relative_spread == pytest.approx(1.0)
    assert spread.between_share == pytest.approx(1.0)  # no variance within the groups


def test_groups_with_the_pools_mean_have_no_spread():
    spread = cds_spread(by_id([0.1, 0.3, 0.3, 0.1]), by_id(["a", "a", "b", "b"]), "category")
    assert spread.spread == pytest.approx(0.0) and spread.between_share == pytest.approx(0.0)
    # sample sd within each group: |0.3 - 0.1| / sqrt(2)
    assert spread.table["sd_cds"].tolist() == pytest.approx([0.1414214] * 2)


def test_between_share_is_eta_squared():
    # means 0.15 and 0.4 around 0.275: between 4 x 0.125^2 = 0.0625; within 2 x 2 x 0.05^2 = 0.01
    spread = cds_spread(by_id([0.1, 0.2, 0.35, 0.45]), by_id(["a", "a", "b", "b"]), "cluster")
    assert spread.between_share == pytest.approx(0.0625 / 0.0725)


def test_one_group_or_a_row_without_cds_is_refused():
    with pytest.raises(ValueError, match="at least two clusters"):
        cds_spread(by_id([0.1, 0.2]), by_id(["a", "a"]), "cluster")
    with pytest.raises(ValueError, match="no CDS"):
        cds_spread(by_id([0.1]), by_id(["a", "b"]), "cluster")


def test_a_run_folders_clusters_and_categories_give_two_spreads(tmp_path):
    shared = build_fake_run(tmp_path / "run", labelled=True) / "shared"
    clusters, categories = folder_spread(shared, seed=0)
    clustered = pd.read_parquet(shared / "clusters-s0.parquet")
    scores = pd.read_parquet(shared / "scores.parquet").set_index("id").loc[clustered["id"]]
    assert clusters.grouping == "cluster" and clusters.table["rows"].sum() == len(clustered)
    assert clusters.table["tokens"].sum() == (scores["prompt_tokens"] + scores["response_tokens"]).sum()
    assert categories.grouping == "category" and categories.table["rows"].sum() <= len(clustered)
    means = clusters.table["mean_cds"]
    assert clusters.spread == pytest.approx(means.max() - means.min())


def test_an_unlabelled_pool_gives_the_cluster_spread_only(tmp_path):
    shared = build_fake_run(tmp_path / "run") / "shared"
    assert [spread.grouping for spread in folder_spread(shared, seed=1)] == ["cluster"]


def test_a_folder_without_a_clustering_is_refused(tmp_path):
    shared = build_fake_run(tmp_path / "run") / "shared"
    with pytest.raises(FileNotFoundError, match="clusters.parquet"):
        folder_spread(shared)


def test_the_command_prints_the_tables_and_the_pools_token_budgets(tmp_path, capsys):
    shared = build_fake_run(tmp_path / "run", labelled=True) / "shared"
    assert main([str(shared), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "## CDS by cluster" in out and "## CDS by category" in out
    assert "token budgets 3%:" in out and "spread of the cluster means:" in out
