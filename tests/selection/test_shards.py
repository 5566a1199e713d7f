"""Tests for selection.shards: shard bounds, completion markers and the fingerprint check."""

from __future__ import annotations

import json

import pytest

from paser.selection.shards import ShardStore, shard_bounds


def write_text(text):
    return lambda path: path.write_text(text)


def test_shard_bounds_cover_every_row_once():
    assert shard_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_bounds(0, 4) == []
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        shard_bounds(3, 0)


def test_a_shard_is_done_only_once_its_marker_matches_its_ids(tmp_path):
    store = ShardStore(tmp_path, {"inputs": 1}, suffix=".txt", what="things")
    assert not store.is_done(0, ["a", "b"])
    store.write(0, ["a", "b"], write_text("data"))
    assert store.is_done(0, ["a", "b"])
    assert json.loads(store.marker_path(0).read_text())["rows"] == 2
    with pytest.raises(RuntimeError, match="does not describe the rows this run puts in shard 0"):
        store.is_done(0, ["a", "c"])
    store.data_path(0).unlink()
    with pytest.raises(RuntimeError, match="its data file .* does not"):
        store.is_done(0, ["a", "b"])


def test_a_failed_write_leaves_neither_data_nor_marker(tmp_path):
    store = ShardStore(tmp_path, {"inputs": 1}, suffix=".txt", what="things")

    def crash(path):
        path.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.write(0, ["a"], crash)
    assert not store.data_path(0).exists() and not store.marker_path(0).exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_folder_of_other_inputs_is_refused_or_overwritten(tmp_path):
    store = ShardStore(tmp_path, {"inputs": 1, "model": "m"}, suffix=".txt", what="things")
    store.write(0, ["a"], write_text("data"))
    with pytest.raises(RuntimeError, match=r"holds things of different inputs \(changed: inputs\)"):
        ShardStore(tmp_path, {"inputs": 2, "model": "m"}, suffix=".txt", what="things")
    fresh = ShardStore(tmp_path, {"inputs": 2, "model": "m"}, suffix=".txt", what="things", overwrite=True)
    assert not fresh.data_path(0).exists() and not fresh.is_done(0, ["a"])


def test_shard_files_without_meta_are_refused(tmp_path):
    (tmp_path / "shard-00000.txt").write_text("stray")
    with pytest.raises(RuntimeError, match="no meta.json"):
        ShardStore(tmp_path, {"inputs": 1}, suffix=".txt", what="things")
