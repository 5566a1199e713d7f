"""Rejected answers for DPO recovery: the pruned model's own greedy answer to each selected prompt.

DPO recovery pairs chosen = the corpus response with rejected = what the pruned model says itself. Prompts
arrive as token ids (exactly the prompt tokens the scorer built, `EncodedSample.input_ids[:prompt_length]`),
so nothing is re-tokenised: rows are length-sorted, left-padded into batches and decoded greedily
(`paser.recovery.greedy`: argmax of the model's logits, stopping at EOS or `max_new_tokens`).

Answers are cached as JSON Lines: a header line recording the caller's fingerprint (model identity, paser
version, ...) and the generation settings, then one line per answer `{"id", "prompt_sha", "answer",
"finished"}`, appended and flushed batch by batch so a crash keeps the finished batches. A rerun with the same
header reuses every cached answer whose id and prompt ids match and generates only the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paser.common.console import progress_bar
from paser.common.io import write_atomic
from paser.recovery.greedy import eos_token_ids, generate_batch, greedy_decoding

CACHE_FORMAT = "paser.rejections"
CACHE_FORMAT_VERSION = 1
_ANSWER_FIELDS = {"id": str, "prompt_sha": str, "answer": str, "finished": bool}


def prompt_sha(prompt_ids: Sequence[int]) -> str:
    """The sha256 hex digest of prompt token ids, written as comma-separated decimals (the cache's key)."""
    return hashlib.sha256(",".join(str(token) for token in prompt_ids).encode()).hexdigest()


def _current_cache(
    cache_path: Path, header: dict[str, Any], shas: dict[str, str], stats: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The cached entries still valid for this call (same header, same prompt ids), by sample id; records in
    `stats` why entries were dropped, and rewrites the file when any were (appending is safe only after a complete,
    current file)."""
    cached: dict[str, dict[str, Any]] = {}
    if cache_path.exists():
        cached, stats["cache_invalidated"], stats["cache_truncated_lines"] = _read_cache(cache_path, header)
    stale = {
        sample_id for sample_id in shas if sample_id in cached and cached[sample_id]["prompt_sha"] != shas[sample_id]
    }
    stats["cache_stale_prompts"] = len(stale)
    cached = {sample_id: entry for sample_id, entry in cached.items() if sample_id not in stale}
    if not cache_path.exists() or stats["cache_invalidated"] or stats["cache_truncated_lines"] or stale:
        _write_cache(cache_path, header, list(cached.values()))
    return cached


def _generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[tuple[str, list[int]]],
    to_generate: list[int],
    shas: dict[str, str],
    eos_ids: list[int],
    max_new_tokens: int,
    batch_size: int,
    cache_path: Path | None,
    show_progress: bool,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Greedy answers to the prompts at positions `to_generate`, in batches, each batch appended to the cache
    (one flushed write: a crash loses at most the batch being written); returns (entries by id, new tokens)."""
    generated: dict[str, dict[str, Any]] = {}
    tokens_generated = 0
    progress = progress_bar(total=len(to_generate), desc="greedy answers", show=show_progress)
    with greedy_decoding(model, eos_ids, tokenizer.pad_token_id), contextlib.ExitStack() as stack:
        cache_file = stack.enter_context(cache_path.open("a", encoding="utf-8")) if cache_path is not None else None
        stack.callback(progress.close)
        for start in range(0, len(to_generate), batch_size):
            batch = to_generate[start : start + batch_size]
            batch_prompts = [prompts[index][1] for index in batch]
            results = generate_batch(model, batch_prompts, tokenizer.pad_token_id, eos_ids, max_new_tokens)
            texts = tokenizer.batch_decode([tokens for tokens, _ in results], skip_special_tokens=True)
            lines = []
            for index, (tokens, finished), text in zip(batch, results, texts, strict=True):
                sample_id = prompts[index][0]
                tokens_generated += len(tokens) + int(finished)
                entry = {"id": sample_id, "prompt_sha": shas[sample_id], "answer": text, "finished": finished}
                generated[sample_id] = entry
                lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
            if cache_file is not None:
                cache_file.writelines(lines)
                cache_file.flush()
            progress.update(len(batch))
    return generated, tokens_generated


def _check_arguments(
    prompts: Sequence[tuple[str, list[int]]],
    vocab_size: int,
    tokenizer: Any,
    max_new_tokens: int,
    batch_size: int,
    cache_path: Path | None,
    fingerprint: dict | None,
) -> None:
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad_token_id; batched generation left-pads with it")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if cache_path is not None and fingerprint is None:
        raise ValueError(
            "cache_path needs a fingerprint (model identity, paser version) to know when answers are stale"
        )
    seen: set[str] = set()
    for sample_id, prompt_ids in prompts:
        if sample_id in seen:
            raise ValueError(f"duplicate sample id {sample_id!r} in prompts")
        seen.add(sample_id)
        if len(prompt_ids) == 0:
            raise ValueError(f"sample {sample_id!r}: empty prompt id list, nothing to answer")
        if min(prompt_ids) < 0 or max(prompt_ids) >= vocab_size:
            raise ValueError(f"sample {sample_id!r}: prompt token ids outside the model's vocabulary [0, {vocab_size})")


def _header(fingerprint: dict, max_new_tokens: int, eos_ids: list[int]) -> dict[str, Any]:
    """The cache's first line; answers are reusable only under an identical header."""
    try:
        # A JSON round trip normalises tuples to lists, so the comparison with a header read back is exact.
        normalised = json.loads(json.dumps(fingerprint))
    except TypeError as error:
        raise ValueError(f"fingerprint is not JSON-serialisable: {error}") from error
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_FORMAT_VERSION,
        "fingerprint": normalised,
        "generation": {"max_new_tokens": max_new_tokens, "eos_token_ids": eos_ids},
    }


def _header_difference(recorded: Any, expected: dict[str, Any]) -> str | None:
    """Why a recorded header does not match the expected one (None when it does)."""
    if not isinstance(recorded, dict) or recorded.get("format") != CACHE_FORMAT:
        return "the first line is not a paser rejections cache header"
    if recorded.get("version") != CACHE_FORMAT_VERSION:
        return f"cache format version {recorded.get('version')} != {CACHE_FORMAT_VERSION}"
    changes = []
    for section in ("fingerprint", "generation"):
        old, new = recorded.get(section), expected[section]
        if not isinstance(old, dict):
            changes.append(section)
            continue
        changes += [f"{section}.{key}" for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    return f"changed: {', '.join(changes)}" if changes else None


def _read_cache(path: Path, header: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str | None, int]:
    """Read a cache: `(entries by id, reason it was invalidated or None, truncated lines dropped)`.

    Only the last line may be cut short (a crash while appending: no newline, or not JSON); it is dropped
    and counted. Any other malformed line means the file is not what this module wrote: ValueError.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    # After a complete final line, split leaves an empty string; anything else there is a cut-short line.
    last = lines.pop()
    truncated = 1 if last else 0
    if not lines:
        return {}, "the cache has no complete header line", truncated
    try:
        recorded = json.loads(lines[0])
    except json.JSONDecodeError:
        recorded = None
    reason = _header_difference(recorded, header)
    if reason is not None:
        return {}, reason, truncated
    entries: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not truncated:
                truncated = 1
                continue
            raise ValueError(f"{path}:{number}: not JSON (only the last line may be cut short by a crash)") from None
        if not isinstance(entry, dict) or any(
            not isinstance(entry.get(field), kind) for field, kind in _ANSWER_FIELDS.items()
        ):
            raise ValueError(f"{path}:{number}: not an answer line with fields {', '.join(_ANSWER_FIELDS)}")
        entries[entry["id"]] = entry
    return entries, None, truncated


def _write_cache(path: Path, header: dict[str, Any], entries: Sequence[dict[str, Any]]) -> None:
    """Replace the cache atomically with `header` and `entries`."""

    def write(staging: Path) -> None:
        with staging.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(header) + "\n")
            handle.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)

    write_atomic(path, write)


def greedy_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[tuple[str, list[int]]],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    cache_path: Path | None = None,
    fingerprint: dict | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, str], dict]:
    """The model's greedy answer to each prompt, for DPO's rejected side.

    `prompts` are `(sample id, prompt token ids)`. Returns `(answers, stats)`: answers maps each id, in the
    caller's order, to the decoded text of the generated tokens (`skip_special_tokens=True`, without the prompt
    and without the EOS); stats holds `rows`, `generated` and `from_cache` (rows), `seconds` (wall time of the
    call), `tokens_generated` (new tokens of this call, EOS included), `hit_max_new_tokens` (answers, cached
    ones included, that reached `max_new_tokens` without EOS), `cache_invalidated` (why an existing cache was
    discarded, or None), `cache_truncated_lines` (a cut-short last line dropped and its answer regenerated) and
    `cache_stale_prompts` (cached ids whose prompt ids changed, regenerated).

    Greedy means the argmax of the model's logits: the model's own generation config (sampling, repetition
    penalty, ...) is set aside for the call, keeping only its EOS ids, to which the tokenizer's EOS is added.
    The model runs in eval mode under `torch.inference_mode()` and is returned to its previous mode.

    With `cache_path`, answers go to a JSON Lines cache (see the module docstring); `fingerprint` (required
    then, JSON-serialisable) identifies the model and settings, and any change to it or to `max_new_tokens`
    discards the old cache. Cached answers for ids not asked for this time are kept.

    Refuses (ValueError): an empty prompt id list or ids outside the vocabulary (naming the sample), duplicate
    sample ids, a tokenizer without pad token id, no EOS id anywhere, `max_new_tokens` or `batch_size` < 1,
    `cache_path` without `fingerprint`, and a cache with a malformed line other than the last.
    """
    started = time.perf_counter()
    _check_arguments(
        prompts,
        model.get_input_embeddings().num_embeddings,
        tokenizer,
        max_new_tokens,
        batch_size,
        cache_path,
        fingerprint,
    )
    eos_ids = eos_token_ids(model, tokenizer)
    shas = {sample_id: prompt_sha(prompt_ids) for sample_id, prompt_ids in prompts}
    stats: dict[str, Any] = {"cache_invalidated": None, "cache_truncated_lines": 0, "cache_stale_prompts": 0}
    cached: dict[str, dict[str, Any]] = {}
    if cache_path is not None:
        cache_path = Path(cache_path)
        cached = _current_cache(cache_path, _header(fingerprint, max_new_tokens, eos_ids), shas, stats)
    to_generate = sorted(
        (index for index, (sample_id, _) in enumerate(prompts) if sample_id not in cached),
        key=lambda index: -len(prompts[index][1]),
    )
    generated, tokens_generated = _generate_answers(
        model, tokenizer, prompts, to_generate, shas, eos_ids, max_new_tokens, batch_size, cache_path, show_progress
    )
    entries = [generated.get(sample_id) or cached[sample_id] for sample_id, _ in prompts]
    stats.update(
        rows=len(prompts),
        generated=len(generated),
        from_cache=len(prompts) - len(generated),
        seconds=round(time.perf_counter() - started, 3),
        tokens_generated=tokens_generated,
        hit_max_new_tokens=sum(not entry["finished"] for entry in entries),
    )
    return {entry["id"]: entry["answer"] for entry in entries}, stats
