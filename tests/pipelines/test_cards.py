"""The dataset card of a selection (pipelines/cards.py), without models."""

import json

from paser.pipelines.cards import (
    card_header,
    cluster_table_markdown,
    selection_table,
    size_category,
    source_license,
)


def test_size_category_uses_the_hubs_buckets():
    assert [size_category(rows) for rows in (0, 999, 1_000, 250_000)] == ["n<1K", "n<1K", "1K<n<10K", "100K<n<1M"]


def test_license_is_copied_from_the_source_folders_card(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\npretty_name: x\n---\n# rows\n")
    (tmp_path / "rows.jsonl").write_text("{}\n")
    assert source_license(str(tmp_path / "rows.jsonl")) == "cc-by-nc-4.0"


def test_license_is_copied_from_dataset_info(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"license": "apache-2.0"}))
    assert source_license(str(tmp_path)) == "apache-2.0"


def test_license_is_unknown_for_a_hub_name_or_an_unlabelled_file(tmp_path):
    (tmp_path / "rows.jsonl").write_text("{}\n")
    assert source_license("tatsu-lab/alpaca") == "unknown"
    assert source_license(str(tmp_path / "rows.jsonl")) == "unknown"


def test_card_header_is_none_without_a_yaml_block():
    assert card_header("# just markdown\n") is None
    assert card_header("---\nlicense: mit\n---\nbody") == {"license": "mit"}


def test_cluster_table_lists_clusters_in_order_with_a_dash_for_no_budget():
    table = cluster_table_markdown(
        [
            {"cluster": 1, "size": 4, "mean_cds": 0.25, "selected": 2},
            {"cluster": 0, "size": 3, "mean_cds": 0.5, "budget": 1, "selected": 1},
        ]
    )
    assert table.splitlines()[2:] == ["| 0 | 3 | 0.5000 | 1 | 1 |", "| 1 | 4 | 0.2500 | - | 2 |"]


def test_a_field_whose_values_mix_types_is_kept_as_json_text_and_a_field_of_some_rows_as_none():
    table, as_json = selection_table([{"source_id": 7, "id": "0"}, {"id": "1", "source_id": "a/b", "extra": [1]}])
    assert as_json == ("source_id",)
    assert table.column_names == ["source_id", "id", "extra"]
    assert table.to_pylist() == [
        {"source_id": "7", "id": "0", "extra": None},
        {"source_id": '"a/b"', "id": "1", "extra": [1]},
    ]
