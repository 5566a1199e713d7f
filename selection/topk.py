"""Top-k degradation scoring: CDS when the original and the pruned model cannot share a device.

Exact scoring (`paser.selection.degradation.score_degradation`) runs both models side by side. Here each model runs
alone, in two passes over the same shards, batches and chunks:

1. `cache_original_topk` runs only the original model and stores, per response position, its k most likely
   token ids with their log-probabilities, the log of the probability mass outside them (the tail), the
   target token's log-probability (so `nll_original` stays exact) and, optionally, `tail_samples` token ids
   drawn from the original's tail distribution with their log-probabilities.
2. `score_from_topk` runs only the pruned model, reads that cache and estimates `JSD(p_o,t || p_p,t)` per
   position with one of two estimators (`ESTIMATORS`):

   - "bucket": JSD between the two distributions coarse-grained to k + 1 buckets (the original's top-k tokens
     and one "rest" bucket holding each model's remaining mass). Merging outcomes never increases a
     divergence (data-processing inequality), so this is a **lower bound** of the exact JSD, exact when
     k = vocab size and tight when the original's tail mass is small.
   - "sampled_tail": the top-k terms exactly, plus an unbiased importance-sampled estimate of the tail's
     terms from the cached tail samples (see `estimate_jsd`), clipped to the interval the exact JSD is known
     to lie in: [bucket lower bound, top-k terms + ln2/2 · (tail mass of p_o + tail mass of p_p)]. Clipping
     to an interval that contains the exact value never moves the estimate away from it. On SmolLM2-135M
     (bench/topk_error.py) it is an order of magnitude closer to the exact CDS than "bucket" at the same k
     for 16 more stored (id, log-prob) pairs per token; it is the default.

Both estimators give exactly 0 for identical models. `score_degradation_topk` chains the two passes and
releases the original model before loading the pruned one, so only one model is ever in memory.

Cache folder (a `ShardStore`, `meta.json` + per shard `shard-0000i.npz` and its `.done` marker). Each shard
file is an uncompressed NumPy `.npz` (load with `allow_pickle=False`); its positions are the response
positions of its rows, row by row in input order and, within a row, in token order:

    ids                   str      (rows,)             the shard's sample ids
    row_offsets           int64    (rows + 1,)         positions of row i: row_offsets[i] : row_offsets[i + 1]
    topk_ids              int32    (positions, k)      the original's k most likely token ids, most likely first
    topk_logprobs         float32  (positions, k)      their log-probabilities (logits − logsumexp: normalised)
    rest_logprob          float32  (positions,)        log of the original's mass outside the top k (−inf if none)
    target_logprob        float32  (positions,)        log-probability of the actual next token
    tail_sample_ids       int32    (positions, s)      s ids drawn i.i.d. from the original's tail distribution
    tail_sample_logprobs  float32  (positions, s)      their log-probabilities under the original (−inf if no tail)

That is 8·k + 8 + 8·s bytes per response token (k = 64, s = 16: 648 bytes).
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from paser.common.console import progress_bar
from paser.common.registry import check_name
from paser.selection.config import DegradationConfig
from paser.selection.degradation import (
    LN2,
    UNCONDITIONED_COLUMN,
    _content_hash,
    _ModelParts,
    _padded,
    _Rows,
    _score_rows,
    _to_device,
    _validate,
    bos_token_id_for,
    concat_scores,
    jensen_shannon,
    length_batches,
    load_score_shard,
    model_signature,
    open_score_shards,
    prefix_to_share,
    prepare_bodies,
    refuse_token_jsd,
    scoring_fingerprint,
    shard_rows,
    write_score_shard,
)
from paser.selection.formatting import EncodedSample
from paser.selection.shards import ShardStore

TOPK_FORMAT_VERSION = 1
CACHE_CONTENTS = "original model top-k log-probs"
ESTIMATORS = ("sampled_tail", "bucket")


@dataclass
class OriginalTopk:
    """The original model's cached view of a set of response positions, one row per position (see the module
    docstring for the meaning, shape and dtype of each field)."""

    topk_ids: Tensor
    topk_logprobs: Tensor
    rest_logprob: Tensor
    target_logprob: Tensor
    tail_sample_ids: Tensor
    tail_sample_logprobs: Tensor

    def select(self, positions: Tensor) -> OriginalTopk:
        """The entries of `positions` (an index tensor on the same device)."""
        return OriginalTopk(*(getattr(self, item.name)[positions] for item in fields(self)))

    def to(self, device: torch.device) -> OriginalTopk:
        """A copy on `device`."""
        return OriginalTopk(*(_to_device(getattr(self, item.name), device) for item in fields(self)))


_FIELDS = tuple(item.name for item in fields(OriginalTopk))


def summarize_original(
    logprobs: Tensor, targets: Tensor, k: int, tail_samples: int, generator: torch.Generator
) -> OriginalTopk:
    """What the cache keeps of the original's log-probabilities `logprobs` (positions × vocab, float32) at
    positions whose next tokens are `targets`: an `OriginalTopk` on the same device.

    The tail samples are drawn with replacement from the original's distribution restricted to the tokens
    outside its top k, with `generator` (on the same device). A position without tail mass (k = vocab size,
    or every tail probability underflowing to 0) gets placeholder samples with log-probability −inf, which no
    estimator reads.
    """
    topk_logprobs, topk_ids = logprobs.topk(k, dim=-1)
    tail = logprobs.scatter(1, topk_ids, -math.inf)
    rest_logprob = tail.logsumexp(dim=-1)
    if tail_samples:
        has_tail = rest_logprob > -math.inf
        weights = tail.sub_(rest_logprob[:, None]).exp_()
        # Rows without a tail get a valid placeholder distribution (multinomial refuses all-zero rows).
        weights = torch.where(has_tail[:, None], weights, 1.0)
        sample_ids = torch.multinomial(weights, tail_samples, replacement=True, generator=generator)
        sample_logprobs = torch.where(has_tail[:, None], logprobs.gather(1, sample_ids), -math.inf)
    else:
        sample_ids = topk_ids.new_empty(len(logprobs), 0)
        sample_logprobs = logprobs.new_empty(len(logprobs), 0)
    return OriginalTopk(
        topk_ids.int(),
        topk_logprobs,
        rest_logprob,
        logprobs.gather(1, targets[:, None])[:, 0],
        sample_ids.int(),
        sample_logprobs,
    )


def estimate_jsd(original: OriginalTopk, pruned_logprobs: Tensor, estimator: str) -> Tensor:
    """Per position, the estimated `JSD(p_o || p_p)` in nats (float64) from the original's cached top-k view
    and the pruned model's full log-probabilities (positions × vocab, float32), on the pruned model's device.

    "bucket" is the JSD over the k + 1 buckets (top-k tokens, rest): a lower bound of the exact JSD.
    "sampled_tail" writes the exact JSD as the top-k tokens' terms plus the tail's, and the tail's as
    `Σ_tail f(p_i, q_i) = ln2/2 · (q_rest − p_rest) + p_rest · E_{i ~ p_tail}[κ(q_i / p_i)]`, where
    `f(p, q) = ½ [p ln(2p / (p + q)) + q ln(2q / (p + q))]` and `κ(r) = ½ [ln 4 − ln(1 + r) − r ln(1 + 1/r)]`
    (so that `f(p, q) − ln2/2 · (q − p) = p κ(q/p)`); the expectation is the mean over the cached samples,
    an unbiased estimate. κ lies in (−∞, ln 2] and falls only logarithmically, so its variance is small; κ(1)
    = 0, so identical models give exactly 0. The estimate is clipped to [lower bound, top-k terms + ln2/2 ·
    (p_rest + q_rest)], an interval that contains the exact JSD (each term `f(p, q) ≤ ln2/2 · (p + q)`).
    """
    _check_estimator(estimator)
    topk_ids = original.topk_ids.long()
    pruned_topk = pruned_logprobs.gather(1, topk_ids)
    pruned_rest_logprob = pruned_logprobs.scatter(1, topk_ids, -math.inf).logsumexp(dim=-1)
    topk_terms = jensen_shannon(original.topk_logprobs, pruned_topk).double()
    rest_term = jensen_shannon(original.rest_logprob[:, None], pruned_rest_logprob[:, None]).double()
    lower = topk_terms + rest_term
    if estimator == "bucket":
        return lower
    if original.tail_sample_ids.shape[1] == 0:
        raise ValueError("estimator 'sampled_tail' needs tail samples; the cache holds none (tail_samples=0)")
    original_rest, pruned_rest = original.rest_logprob.double().exp(), pruned_rest_logprob.double().exp()
    sample_kappa = _kappa(original.tail_sample_logprobs, pruned_logprobs.gather(1, original.tail_sample_ids.long()))
    tail = 0.5 * LN2 * (pruned_rest - original_rest) + original_rest * sample_kappa.mean(dim=-1)
    upper = topk_terms + 0.5 * LN2 * (original_rest + pruned_rest)
    return torch.minimum(torch.maximum(topk_terms + tail, lower), upper)


def _kappa(original_logprobs: Tensor, pruned_logprobs: Tensor) -> Tensor:
    """κ(q/p) per entry (float64), 0 where the two log-probabilities are equal or p is 0 (a placeholder sample,
    whose weight p_rest is 0 too)."""
    p, q = original_logprobs.double(), pruned_logprobs.double()
    placeholder = p == -math.inf
    log_ratio = q - torch.where(placeholder, q, p)
    ratio = log_ratio.exp()
    # r ln(1 + 1/r) → 0 as r → 0 (the pruned model gives the token probability 0); xlog1py keeps that limit.
    kappa = 0.5 * (2 * LN2 - torch.nn.functional.softplus(log_ratio) - torch.special.xlog1py(ratio, 1 / ratio))
    return torch.where((p == q) | placeholder, 0.0, kappa)


def _check_estimator(estimator: str) -> None:
    check_name("top-k estimator", estimator, ESTIMATORS)


class _Chunk(NamedTuple):
    """A chunk of response positions of one shard, on the model's device."""

    rows: Tensor  # shard row of each position
    positions: Tensor  # index of each position in the shard's row-ordered response positions
    targets: Tensor  # the token each position predicts
    logprobs: Tensor  # the model's float32 log-probabilities there (positions × vocab)


def _response_chunks(
    parts: _ModelParts, rows: _Rows, config: DegradationConfig, on_batch: Callable[[int], object] | None = None
) -> Iterator[_Chunk]:
    """One model's log-probabilities at every response position of `rows`, in the batches and chunks exact
    scoring uses (so the values are bitwise those `score_degradation` computes); `on_batch(rows)` after each
    batch."""
    lengths = [len(ids) for ids in rows.input_ids]
    prompt_lengths = torch.tensor(rows.prompt_lengths)
    counts = torch.tensor(lengths) - prompt_lengths
    row_starts = torch.cumsum(counts, 0) - counts
    prefix_length = prefix_to_share(rows, config)
    prefix_cache = parts.prefix_cache(rows.input_ids[0][:prefix_length]) if prefix_length else None
    for indices in length_batches(lengths, config):
        input_ids, row_of_position, positions, targets, _ = _padded(rows, indices)
        position_rows = torch.tensor(indices)[row_of_position]
        flat_positions = row_starts[position_rows] + positions - (prompt_lengths[position_rows] - 1)
        position_rows, flat_positions, targets = (
            _to_device(values, parts.device) for values in (position_rows, flat_positions, targets)
        )
        hidden = parts.hidden_states(input_ids[:, prefix_length:], prefix_cache)
        hidden = hidden[_to_device(row_of_position, parts.device), _to_device(positions - prefix_length, parts.device)]
        for start in range(0, len(targets), config.position_chunk):
            chunk = slice(start, start + config.position_chunk)
            yield _Chunk(position_rows[chunk], flat_positions[chunk], targets[chunk], parts.log_probs(hidden[chunk]))
        if on_batch is not None:
            on_batch(len(indices))


def _rows_of(encoded: Sequence[EncodedSample]) -> _Rows:
    return _Rows([sample.input_ids for sample in encoded], [sample.prompt_length for sample in encoded])


def _cache_shard(
    original: _ModelParts,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    k: int,
    tail_samples: int,
    seed: int,
    on_batch: Callable[[int], object] | None = None,
) -> dict[str, np.ndarray]:
    """The cache file's arrays (see the module docstring) for one shard's rows; tail samples drawn with a
    generator seeded with `seed`, so a recomputed shard is bitwise the same."""
    counts = [sample.response_length for sample in encoded]
    generator = torch.Generator(device=original.device).manual_seed(seed)
    cached: dict[str, Tensor] = {}
    for chunk in _response_chunks(original, _rows_of(encoded), config, on_batch):
        summary = summarize_original(chunk.logprobs, chunk.targets, k, tail_samples, generator)
        for name in _FIELDS:
            values = getattr(summary, name)
            if name not in cached:
                cached[name] = values.new_empty(sum(counts), *values.shape[1:])
            cached[name][chunk.positions] = values
    return {
        "ids": np.array([sample.id for sample in encoded], dtype=str),
        "row_offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        **{name: values.cpu().numpy() for name, values in cached.items()},
    }


def _write_cache_shard(store: ShardStore, index: int, arrays: dict[str, np.ndarray]) -> None:
    """Write cache shard `index`, then its completion marker; a crash in between leaves no marker."""

    def save(path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    store.write(index, arrays["ids"].tolist(), save)


def _load_cache_shard(store: ShardStore, index: int, encoded: Sequence[EncodedSample], k: int) -> OriginalTopk:
    """Cache shard `index` as CPU tensors, checked against the rows this run puts there."""
    path = store.data_path(index)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    missing = sorted({"ids", "row_offsets", *_FIELDS} - arrays.keys())
    if missing:
        raise RuntimeError(f"{path} lacks the arrays {missing}")
    if arrays["ids"].tolist() != [sample.id for sample in encoded]:
        raise RuntimeError(f"{path} holds other ids than its marker {store.marker_path(index)} says")
    counts = np.diff(arrays["row_offsets"])
    expected = np.array([sample.response_length for sample in encoded])
    if not np.array_equal(counts, expected):
        row = int(np.flatnonzero(counts != expected)[0]) if len(counts) == len(expected) else 0
        raise RuntimeError(f"{path}: response positions of row {encoded[row].id!r} do not match its encoded tokens")
    if arrays["topk_ids"].shape != (int(counts.sum()), k):
        raise RuntimeError(f"{path}: topk_ids has shape {arrays['topk_ids'].shape}, expected ({counts.sum()}, {k})")
    return OriginalTopk(*(torch.from_numpy(arrays[name]) for name in _FIELDS))


def topk_cache_fingerprint(
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    k: int,
    tail_samples: int,
    vocab_size: int,
    original_weights_sha256: str,
) -> dict[str, object]:
    """What a top-k cache folder depends on: the encoded rows, the numeric config (less `unconditioned_nll`,
    which only the pruned pass reads), k, the tail sample count and the original model's weights."""
    numerics = config.numerics()
    del numerics["unconditioned_nll"]
    return {
        "format": TOPK_FORMAT_VERSION,
        "contents": CACHE_CONTENTS,
        "topk": k,
        "tail_samples": tail_samples,
        "vocab_size": vocab_size,
        "rows": len(encoded),
        "encoded_sha256": _content_hash(encoded),
        "config": numerics,
        "original_weights_sha256": original_weights_sha256,
    }


def _unfinished_shards(store: ShardStore, encoded: Sequence[EncodedSample], config: DegradationConfig) -> list[int]:
    """Indices of the shards of `encoded` that `store` has no completion marker for."""
    shards = shard_rows(encoded, config)
    return [index for index, rows in enumerate(shards) if not store.is_done(index, [sample.id for sample in rows])]


def _run_shards(
    parts: _ModelParts,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    pending: list[int],
    description: str,
    work: Callable[[int, Callable[[int], object]], None],
) -> None:
    """`work(index, on_batch)` for each pending shard, under a progress bar over all rows, with the model in eval
    and inference mode (its training mode restored afterwards) and its logits checked to be head(body)."""
    shards = shard_rows(encoded, config)
    progress = progress_bar(
        total=len(encoded),
        initial=len(encoded) - sum(len(shards[index]) for index in pending),
        desc=description,
        show=config.show_progress,
    )
    training = parts.model.training
    parts.model.eval()
    try:
        with torch.inference_mode():
            if pending:
                parts.check_decomposition(min(encoded, key=lambda sample: sample.length).input_ids)
            for index in pending:
                work(index, progress.update)
    finally:
        progress.close()
        parts.model.train(training)


def cache_original_topk(
    original: nn.Module,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    folder: Path,
    *,
    k: int = 64,
    tail_samples: int = 16,
    overwrite: bool = False,
) -> ShardStore:
    """Phase 1 of top-k scoring: run only the original model and cache what `score_from_topk` needs.

    Writes, in the shards of `score_degradation` (`shard_rows`), one `.npz` per shard (format in the module
    docstring) with a completion marker; a rerun over the same inputs (encoded rows, numeric config, k,
    tail_samples, original weights) skips finished shards and recomputes the rest bitwise identically.
    Returns the cache's `ShardStore`. Refused: k outside [1, vocab size]; tail_samples < 0; a folder written
    for other inputs (unless `overwrite` discards it); what `score_degradation` refuses of a model or rows.
    """
    parts = _ModelParts(original, "original")
    check_topk_settings(k, tail_samples, parts.vocab_size)
    _validate(encoded, parts.vocab_size)
    prepare_bodies([parts], config)
    fingerprint = topk_cache_fingerprint(encoded, config, k, tail_samples, parts.vocab_size, model_signature(parts))
    store = ShardStore(Path(folder), fingerprint, suffix=".npz", what=CACHE_CONTENTS, overwrite=overwrite)
    shards = shard_rows(encoded, config)

    def cache_shard(index: int, on_batch: Callable[[int], object]) -> None:
        arrays = _cache_shard(parts, shards[index], config, k, tail_samples, index, on_batch)
        _write_cache_shard(store, index, arrays)

    _run_shards(
        parts, encoded, config, _unfinished_shards(store, encoded, config), "top-k cache (original)", cache_shard
    )
    return store


def check_topk_settings(k: int, tail_samples: int, vocab_size: int) -> None:
    """Refuse (ValueError) k outside [1, vocab size] and a negative tail sample count."""
    if not 1 <= k <= vocab_size:
        raise ValueError(f"k must be in [1, {vocab_size}] (the vocab size), got {k}")
    if tail_samples < 0:
        raise ValueError(f"tail_samples must be >= 0, got {tail_samples}")


def check_topk_request(estimator: str, tail_samples: int) -> None:
    """Refuse (ValueError), before any model is loaded, an unknown estimator and "sampled_tail" without tail
    samples."""
    _check_estimator(estimator)
    if estimator == "sampled_tail" and tail_samples == 0:
        raise ValueError("estimator 'sampled_tail' needs tail_samples > 0; use estimator='bucket' for none")


def check_pruned_against_cache(
    estimator: str, cache_fingerprint: dict[str, Any], vocab_size: int, folder: Path
) -> None:
    """Refuse (ValueError) "sampled_tail" on a cache without tail samples, and a pruned model whose vocab size
    differs from the cached original's."""
    if estimator == "sampled_tail" and cache_fingerprint["tail_samples"] == 0:
        raise ValueError(
            f"estimator 'sampled_tail' needs tail samples, but the cache in {folder} holds none (tail_samples=0); "
            "use estimator='bucket' or rebuild the cache with tail_samples > 0"
        )
    if vocab_size != cache_fingerprint["vocab_size"]:
        raise ValueError(
            f"the models' vocab sizes differ: original {cache_fingerprint['vocab_size']} (cached) "
            f"vs pruned {vocab_size}"
        )


def topk_score_fingerprint(
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    bos_token_id: int | None,
    cache_fingerprint: dict[str, Any],
    pruned_weights_sha256: str,
    estimator: str,
) -> dict[str, object]:
    """What a top-k score shard folder depends on: exact scoring's fingerprint plus k, tail_samples and the
    estimator, so top-k and exact scores never share a folder."""
    fingerprint = scoring_fingerprint(
        encoded, config, bos_token_id, cache_fingerprint["original_weights_sha256"], pruned_weights_sha256
    )
    fingerprint.update(
        topk=cache_fingerprint["topk"], tail_samples=cache_fingerprint["tail_samples"], estimator=estimator
    )
    return fingerprint


def open_topk_cache(folder: Path, encoded: Sequence[EncodedSample], config: DegradationConfig) -> ShardStore:
    """The finished top-k cache in `folder` for these encoded rows and config, read-only.

    k, tail_samples, vocab size and the original's weights come from the folder's `meta.json`. Refused
    (FileNotFoundError) a folder without one; (RuntimeError) a folder that is not a top-k cache, was written
    for other rows or another numeric config (naming the changed keys), or has unfinished shards (rerun
    `cache_original_topk`, which resumes).
    """
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} holds no top-k cache ({meta_path} is missing); run cache_original_topk")
    recorded = json.loads(meta_path.read_text())
    if recorded.get("contents") != CACHE_CONTENTS:
        raise RuntimeError(f"{folder} is not a top-k cache of an original model (its meta.json: {recorded})")
    # What the original pass recorded comes from meta.json; any other difference is refused by the store.
    recorded_keys = ("topk", "tail_samples", "vocab_size", "original_weights_sha256")
    expected = topk_cache_fingerprint(encoded, config, *(recorded.get(key) for key in recorded_keys))
    store = ShardStore(folder, expected, suffix=".npz", what=CACHE_CONTENTS)
    unfinished = _unfinished_shards(store, encoded, config)
    if unfinished:
        raise RuntimeError(
            f"the top-k cache in {folder} is unfinished (shards {unfinished[:10]} missing); "
            "rerun cache_original_topk with the same inputs, which resumes"
        )
    return store


def _score_shard_from_topk(
    pruned: _ModelParts,
    cache: ShardStore,
    index: int,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    estimator: str,
    bos_token_id: int | None,
    on_batch: Callable[[int], object] | None = None,
) -> pd.DataFrame:
    """Scores of one shard's rows (the columns of `score_degradation`), from the cache and the pruned model."""
    original = _load_cache_shard(cache, index, encoded, cache.fingerprint["topk"]).to(pruned.device)
    count = len(encoded)
    names = ("cds", "nll_original", "nll_pruned")
    sums = {name: torch.zeros(count, dtype=torch.float64, device=pruned.device) for name in names}
    # Per-token values summed in exact scoring's order, so the NLLs are bitwise those of `score_degradation`.
    for chunk in _response_chunks(pruned, _rows_of(encoded), config, on_batch):
        cached = original.select(chunk.positions)
        sums["cds"].index_add_(0, chunk.rows, estimate_jsd(cached, chunk.logprobs, estimator))
        sums["nll_original"].index_add_(0, chunk.rows, cached.target_logprob.double().neg_())
        target_logprobs = chunk.logprobs.gather(1, chunk.targets[:, None])[:, 0]
        sums["nll_pruned"].index_add_(0, chunk.rows, target_logprobs.double().neg_())
    response_tokens = np.array([sample.response_length for sample in encoded], dtype=np.int64)
    means = {name: total.cpu().numpy() / response_tokens for name, total in sums.items()}
    frame = pd.DataFrame(
        {
            "id": [sample.id for sample in encoded],
            "cds": means["cds"],
            "prompt_tokens": np.array([sample.prompt_length for sample in encoded], dtype=np.int64),
            "response_tokens": response_tokens,
            "nll_original": means["nll_original"],
            "nll_pruned": means["nll_pruned"],
        }
    )
    if bos_token_id is not None:
        alone = _Rows(
            [[bos_token_id] + sample.input_ids[sample.prompt_length :] for sample in encoded], [1] * len(encoded)
        )
        frame[UNCONDITIONED_COLUMN] = _score_rows(None, pruned, alone, config)["nll_pruned"]
    frame["truncated"] = np.array([sample.truncated for sample in encoded], dtype=bool)
    return frame


def score_from_topk(
    pruned: nn.Module,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    folder: Path,
    shard_dir: Path | None = None,
    *,
    estimator: str = "sampled_tail",
    overwrite: bool = False,
) -> pd.DataFrame:
    """Phase 2 of top-k scoring: run only the pruned model and score each sample against the original's
    cached top-k view in `folder` (written by `cache_original_topk` for the same rows and config).

    Returns the table of `score_degradation` (same columns, dtypes and order), where `cds` is the mean over
    response tokens of the `estimator`'s per-position JSD (see `estimate_jsd`; "bucket" is a lower bound of
    the exact CDS), and `nll_original` (from the cached target log-probabilities), `nll_pruned` and
    `nll_pruned_unconditioned` (with `config.unconditioned_nll`) are bitwise those of `score_degradation`.
    With `shard_dir`, results go to score shards whose fingerprint adds k, tail_samples and the estimator to
    exact scoring's, so top-k and exact scores never share a folder; a rerun loads finished shards. Refused:
    an unknown estimator; "sampled_tail" on a cache without tail samples; a missing, foreign or unfinished
    cache (see `open_topk_cache`); a pruned model whose vocab size differs from the original's; a score shard
    folder of other inputs (unless `overwrite`); what `score_degradation` refuses of a model or rows.
    """
    _check_estimator(estimator)
    refuse_token_jsd(config, "top-k scoring (an estimate of the JSD)")
    parts = _ModelParts(pruned, "pruned")
    cache = open_topk_cache(Path(folder), encoded, config)
    check_pruned_against_cache(estimator, cache.fingerprint, parts.vocab_size, Path(folder))
    _validate(encoded, parts.vocab_size)
    prepare_bodies([parts], config)
    bos_token_id = bos_token_id_for(pruned) if config.unconditioned_nll else None
    shards = shard_rows(encoded, config)
    frames: list[pd.DataFrame | None] = [None] * len(shards)
    store = None
    if shard_dir is not None:
        fingerprint = topk_score_fingerprint(
            encoded, config, bos_token_id, cache.fingerprint, model_signature(parts), estimator
        )
        store = open_score_shards(Path(shard_dir), fingerprint, overwrite=overwrite)
        frames = [load_score_shard(store, index, [s.id for s in rows]) for index, rows in enumerate(shards)]

    def score_shard(index: int, on_batch: Callable[[int], object]) -> None:
        frame = _score_shard_from_topk(parts, cache, index, shards[index], config, estimator, bos_token_id, on_batch)
        if store is not None:
            write_score_shard(store, index, frame)
        frames[index] = frame

    pending = [index for index, frame in enumerate(frames) if frame is None]
    _run_shards(parts, encoded, config, pending, "top-k scores (pruned)", score_shard)
    return concat_scores(frames, config)


def score_degradation_topk(
    load_original: Callable[[], nn.Module],
    load_pruned: Callable[[], nn.Module],
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    folder: Path,
    *,
    k: int = 64,
    tail_samples: int = 16,
    estimator: str = "sampled_tail",
    shard_dir: Path | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Top-k scoring with one model in memory at a time: load the original, cache its top-k view in `folder`
    (`cache_original_topk`), release it, then load the pruned model and score (`score_from_topk`).

    The loaders are called once each, in that order; memory is only freed if nothing else holds the
    original model (the loader must return a model no one else keeps). `overwrite` applies to both the cache
    and the score shard folder. Returns the table of `score_from_topk`; refuses what the two phases refuse,
    an unknown estimator and "sampled_tail" with tail_samples=0 before any model is loaded.
    """
    check_topk_request(estimator, tail_samples)
    refuse_token_jsd(config, "top-k scoring (an estimate of the JSD)")
    original = load_original()
    cache_original_topk(original, encoded, config, folder, k=k, tail_samples=tail_samples, overwrite=overwrite)
    del original
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return score_from_topk(load_pruned(), encoded, config, folder, shard_dir, estimator=estimator, overwrite=overwrite)
