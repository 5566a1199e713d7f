"""Capability degradation scores (CDS): how far the pruned model's next-token distributions drift from the
original's on each sample's response.

For sample i, both models are teacher-forced on `prompt + response`; at every response token position t the
Jensen–Shannon divergence `JSD(p_o,t || p_p,t)` is taken over the full vocabulary (natural log, so in
[0, ln 2]), and `cds_i` is its mean over the response tokens. The paper's code (PASER, arXiv 2502.12594)
sums over instruction tokens; we average over the response tokens, the ones recovery training updates, so that
long samples are not favoured. Per sample we also keep the prompt and response token counts and the mean
response NLL under both models. Only scalars are stored; no N × vocab tensor is ever kept.

Cost: each model runs its body once per sample (length-sorted batches under a token budget; a token prefix
shared by a whole shard, such as a chat template's system prompt, runs once and its key/value cache is
reused), and the output head + float32 log-softmax is applied only at the positions that predict response
tokens, in chunks, so memory stays bounded by `position_chunk × vocab` whatever the batch. Results are
written in shards with completion markers; a rerun over the same inputs loads finished shards instead of
recomputing them.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from paser.common.console import progress_bar
from paser.selection.config import DegradationConfig
from paser.selection.formatting import EncodedSample
from paser.selection.shards import ShardStore, shard_bounds
from paser.selection.token_jsd import token_jsd_path, write_token_jsd

LN2 = math.log(2.0)
SHARD_FORMAT_VERSION = 1
COLUMNS = ("id", "cds", "prompt_tokens", "response_tokens", "nll_original", "nll_pruned", "truncated")
UNCONDITIONED_COLUMN = "nll_pruned_unconditioned"
# The per-token JSD of each row while a shard is in memory (`DegradationConfig.keep_token_jsd`); never stored in
# the scores table.
TOKEN_JSD_COLUMN = "token_jsd"


def jensen_shannon(logprobs_a: Tensor, logprobs_b: Tensor) -> Tensor:
    """Per-position Jensen–Shannon divergence between two distributions given as log-probabilities.

    Inputs have shape (..., vocab); returns float32 of shape (...), in nats, within [0, ln 2]. Vocabulary
    entries where the two log-probabilities are equal contribute exactly 0 (as they do mathematically), so
    identical inputs give exactly 0.0. Entries with probability 0 (log-probability -inf) are handled. No
    step reads a value back to the host, so on a GPU it queues without synchronising.
    """
    if logprobs_a.shape != logprobs_b.shape:
        raise ValueError(f"shapes differ: {tuple(logprobs_a.shape)} vs {tuple(logprobs_b.shape)}")
    return _jensen_shannon_terms(logprobs_a.float(), logprobs_b.float()).clamp_min_(0.0)


_FLOOR = torch.finfo(torch.float32).min


def _jensen_shannon_terms(a: Tensor, b: Tensor) -> Tensor:
    # In-place steps: this runs on chunk × vocab tensors and is memory-bound, so temporaries are kept few.
    log_mixture = torch.logaddexp(a, b).sub_(LN2)
    # A zero-probability entry (a = −inf) gives 0 · (−inf); the finite floor on (a − m) makes its term the
    # exact 0 it is, and leaves every finite difference unchanged (none is below the float32 minimum).
    terms = a.exp().mul_((a - log_mixture).clamp_min_(_FLOOR))
    terms.add_(b.exp().mul_((b - log_mixture).clamp_min_(_FLOOR)))
    # An entry with a == b has term p·(a − m) with m == a exactly in real arithmetic; rounding in logaddexp
    # would leave ~1e-8 per entry, so it is set to 0 explicitly (identical models then score exactly 0).
    terms = torch.where(a == b, 0.0, terms)
    return terms.sum(dim=-1).mul_(0.5)


def chunk_scores(logits_original: Tensor, logits_pruned: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per position (float32): JSD between the two models' next-token distributions, and the NLL of `targets`
    under the original and under the pruned model, from the output heads' logits (shape (positions, vocab),
    on one device)."""
    logprobs_original = torch.log_softmax(logits_original.float(), dim=-1)
    logprobs_pruned = torch.log_softmax(logits_pruned.float(), dim=-1)
    nll_original = logprobs_original.gather(1, targets[:, None])[:, 0].neg()
    nll_pruned = logprobs_pruned.gather(1, targets[:, None])[:, 0].neg()
    return jensen_shannon(logprobs_original, logprobs_pruned), nll_original, nll_pruned


_compiled_chunk_scores: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]] | None = None


def compiled_chunk_scores() -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """`chunk_scores` through `torch.compile` (dynamic in the number of positions, so a batch's shorter last
    chunk does not recompile), built once per process."""
    global _compiled_chunk_scores
    if _compiled_chunk_scores is None:
        _compiled_chunk_scores = torch.compile(chunk_scores, dynamic=True, fullgraph=True)
    return _compiled_chunk_scores


def use_compiled_jsd(config: DegradationConfig, device: torch.device) -> bool:
    """Whether scoring on `device` (the original model's) takes the compiled chunk path."""
    return config.compile_jsd == "on" or (config.compile_jsd == "auto" and device.type == "cuda")


class _ModelParts:
    """A causal LM split into its body (token ids → last hidden states) and output head (hidden → logits)."""

    def __init__(self, model: nn.Module, role: str) -> None:
        get_decoder = getattr(model, "get_decoder", None)
        body = get_decoder() if callable(get_decoder) else None
        if body is None:
            body = getattr(model, "model", None)
        get_head = getattr(model, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        if head is None:
            head = getattr(model, "lm_head", None)
        if not isinstance(body, nn.Module) or not isinstance(head, nn.Module):
            raise TypeError(
                f"{role} model {type(model).__name__} is not a causal LM with a decoder body "
                "(`.model` / `get_decoder()`) and an output head (`lm_head` / `get_output_embeddings()`)"
            )
        self.model, self.body, self.head, self.role = model, body, head, role
        weight = getattr(head, "weight", None)
        if weight is None:
            raise TypeError(f"{role} model's output head {type(head).__name__} has no weight; cannot read vocab size")
        self.vocab_size = int(weight.shape[0])
        # The body's name for its key/value cache argument: `cache` (transformers >= 5.24; `past_key_values` is
        # deprecated there and removed in 5.40) or `past_key_values` (earlier versions). Read once, not per batch.
        parameters = inspect.signature(body.forward).parameters
        self.cache_keyword = "cache" if "cache" in parameters else "past_key_values"
        self.device = weight.device

    def compile_body(self) -> None:
        """`torch.compile` the decoder body in place (dynamic shapes; compiled at its first call), once."""
        if getattr(self.body, "_compiled_call_impl", None) is None:
            self.body.compile(dynamic=True)

    def prefix_cache(self, prefix_ids: list[int]) -> Any:
        """The key/value cache of the body after `prefix_ids` (one row)."""
        output = self.body(input_ids=torch.tensor([prefix_ids], device=self.device), use_cache=True)
        cache = getattr(output, "cache", None)
        return cache if cache is not None else output.past_key_values

    def hidden_states(self, input_ids: Tensor, prefix_cache: Any = None) -> Tensor:
        """Last hidden states of right-padded `input_ids`; with `prefix_cache`, they continue that prefix.

        No attention mask is passed: under causal attention a real position never sees the padding after
        it, so the states the scorer reads are those of the unpadded rows, and SDPA can take its causal
        (flash) kernel instead of materialising a mask.
        """
        input_ids = _to_device(input_ids, self.device)
        if prefix_cache is None:
            output = self.body(input_ids=input_ids, use_cache=False)
        else:
            # The forward appends to the cache, so each batch gets its own copy, repeated over its rows.
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(input_ids))
            output = self.body(input_ids=input_ids, use_cache=True, **{self.cache_keyword: cache})
        return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def log_probs(self, hidden: Tensor) -> Tensor:
        return torch.log_softmax(self.head(hidden).float(), dim=-1)

    def check_decomposition(self, input_ids: list[int]) -> None:
        """Refuse a model whose logits are not head(body(x)) (e.g. soft-capped or scaled logits)."""
        ids = torch.tensor([input_ids], device=self.device)
        expected = torch.log_softmax(self.model(input_ids=ids, use_cache=False).logits[0, -1].float(), dim=-1)
        ours = self.log_probs(self.hidden_states(ids)[0, -1])
        # In bf16/fp16 the head over one position and over the whole row round differently (observed up to
        # 0.03 nats on SmolLM2 in bf16); a real transform (soft-capping, logit scaling) moves log-probs by far more.
        tolerance = 1e-3 if self.model.dtype == torch.float32 else 16 * torch.finfo(torch.bfloat16).eps
        if not torch.allclose(ours, expected, atol=tolerance, rtol=0):
            raise TypeError(
                f"{self.role} model {type(self.model).__name__}: output head applied to the decoder's last "
                "hidden state does not reproduce the model's logits (max log-prob difference "
                f"{(ours - expected).abs().max().item():.3g}); this architecture transforms logits after the "
                "head and is not supported"
            )

    def weight_signature(self) -> list[object]:
        """Cheap identity of the weights (no copy): per tensor its shape, dtype, sum and absolute sum."""
        signature: list[object] = [type(self.model).__name__]
        for name, tensor in self.model.state_dict().items():
            total = torch.sum(tensor, dtype=torch.float64).item() if tensor.is_floating_point() else 0.0
            magnitude = torch.sum(tensor.abs(), dtype=torch.float64).item() if tensor.is_floating_point() else 0.0
            # 10 significant digits: stable across thread counts, still tells a 50% from a 51% pruned model.
            signature.append([name, list(tensor.shape), str(tensor.dtype), f"{total:.10g}", f"{magnitude:.10g}"])
        return signature


@dataclass
class _Rows:
    """Sequences to teacher-force and, per sequence, where its scored (response) span starts."""

    input_ids: list[list[int]]
    prompt_lengths: list[int]


def length_batches(lengths: Sequence[int], config: DegradationConfig) -> Iterator[list[int]]:
    """Row indices grouped longest first under the token budget (rows × longest length ≤ tokens_per_batch),
    each row at most `max_padding` shorter than its batch's longest."""
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    batch: list[int] = []
    for index in order:
        padded_length = lengths[batch[0]] if batch else lengths[index]
        if batch and (
            len(batch) >= config.max_batch_rows
            or (len(batch) + 1) * padded_length > config.tokens_per_batch
            or lengths[index] < (1.0 - config.max_padding) * padded_length
        ):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _padded(rows: _Rows, indices: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Right-padded ids and mask, plus the flattened (row, position, target) of every scored position.

    Position t predicts token t + 1, so a row with prompt length P and length L is scored at positions
    P − 1 … L − 2 against targets at P … L − 1.
    """
    sequences = [rows.input_ids[index] for index in indices]
    lengths = torch.tensor([len(sequence) for sequence in sequences])
    prompt_lengths = torch.tensor([rows.prompt_lengths[index] for index in indices])
    width = int(lengths.max())
    # Pad value 0 is a valid id for every vocabulary; padded positions are masked and never scored.
    input_ids = torch.tensor([sequence + [0] * (width - len(sequence)) for sequence in sequences])
    counts = lengths - prompt_lengths
    row_of_position = torch.repeat_interleave(torch.arange(len(indices)), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    positions = prompt_lengths[row_of_position] - 1 + offsets
    targets = input_ids[row_of_position, positions + 1]
    return input_ids, row_of_position, positions, targets, counts


def prefix_to_share(rows: _Rows, config: DegradationConfig) -> int:
    """Length of the prefix whose key/value cache a shard's batches reuse: the rows' common prefix when
    `share_prompt_prefix` is on and it is at least `min_shared_prefix` tokens long, else 0 (a cache copy per
    batch and an explicit attention mask cost more than a few shared tokens save)."""
    if not config.share_prompt_prefix:
        return 0
    length = _shared_prefix_length(rows)
    return length if length >= config.min_shared_prefix else 0


def _shared_prefix_length(rows: _Rows) -> int:
    """Length of the token prefix common to all rows, short of every row's first scored position."""
    first = rows.input_ids[0]
    limit = min(rows.prompt_lengths) - 1
    for sequence in rows.input_ids[1:]:
        shared = 0
        while shared < limit and sequence[shared] == first[shared]:
            shared += 1
        limit = shared
    return limit


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy a CPU tensor to `device`; to a GPU through pinned memory, so the host does not wait for the copy."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _score_rows(
    original: _ModelParts | None,
    pruned: _ModelParts,
    rows: _Rows,
    config: DegradationConfig,
    on_batch: Callable[[int], object] | None = None,
    keep_tokens: bool = False,
) -> dict[str, Any]:
    """Per row, in the order of `rows`: mean JSD ("cds") and mean response NLL under each model, float64 nats;
    with `keep_tokens` also "token_jsd": per row, the JSD at each response token (float16 numpy array, in token
    order; `paser.selection.token_jsd`).

    With `original` None only "nll_pruned" is computed (the unconditioned pass). `on_batch(rows)` is called
    after each batch (progress reporting). Sums (and kept tokens) accumulate on the models' devices and come back
    to the host once, at the end, so a GPU is never made to wait for the host between batches.
    """
    count = len(rows.input_ids)
    prefix_length = prefix_to_share(rows, config)
    score_chunk = (
        compiled_chunk_scores() if original is not None and use_compiled_jsd(config, original.device) else chunk_scores
    )
    models = [pruned] if original is None else [original, pruned]
    # JSD sums live where the original model's log-probs are; each NLL sum on its own model's device.
    sum_devices = {"cds": models[0].device, **{f"nll_{parts.role}": parts.device for parts in models}}
    sums = {name: torch.zeros(count, dtype=torch.float64, device=device) for name, device in sum_devices.items()}
    token_counts = torch.zeros(count, dtype=torch.float64)
    # Per batch: (row indices, response token counts, the batch's per-token JSD in row-major order).
    kept_batches: list[tuple[list[int], Tensor, Tensor]] = []
    prefix_caches = [
        parts.prefix_cache(rows.input_ids[0][:prefix_length]) if prefix_length else None for parts in models
    ]
    for indices in length_batches([len(ids) for ids in rows.input_ids], config):
        input_ids, row_of_position, positions, targets, counts = _padded(rows, indices)
        batch_rows = torch.tensor(indices)
        token_counts[batch_rows] = counts.double()
        # Row of the shard for every scored position, and its target token, on each device once per batch.
        position_rows = batch_rows[row_of_position]
        on_device = {
            device: (_to_device(position_rows, device), _to_device(targets, device))
            for device in {parts.device for parts in models}
        }
        # Only the hidden states that predict response tokens go on to the output head.
        batch_divergences: list[Tensor] = []
        suffix_positions = positions - prefix_length
        hidden = [
            parts.hidden_states(input_ids[:, prefix_length:], cache)[
                _to_device(row_of_position, parts.device), _to_device(suffix_positions, parts.device)
            ]
            for parts, cache in zip(models, prefix_caches, strict=True)
        ]
        for start in range(0, len(targets), config.position_chunk):
            chunk = slice(start, start + config.position_chunk)
            if original is not None:
                # Both heads' logits meet on the original model's device; JSD and both NLLs in one call.
                rows_here, targets_here = (values[chunk] for values in on_device[original.device])
                divergence, nll_original, nll_pruned = score_chunk(
                    original.head(hidden[0][chunk]), pruned.head(hidden[1][chunk]).to(original.device), targets_here
                )
                sums["cds"].index_add_(0, rows_here, divergence.double())
                if keep_tokens:
                    batch_divergences.append(divergence.to(torch.float16))
                sums["nll_original"].index_add_(0, rows_here, nll_original.double())
                sums["nll_pruned"].index_add_(
                    0, on_device[pruned.device][0][chunk], nll_pruned.double().to(pruned.device)
                )
                continue
            logprobs = [parts.log_probs(states[chunk]) for parts, states in zip(models, hidden, strict=True)]
            for parts, chunk_logprobs in zip(models, logprobs, strict=True):
                chunk_rows, chunk_targets = (values[chunk] for values in on_device[parts.device])
                target_logprobs = chunk_logprobs.gather(1, chunk_targets[:, None])[:, 0]
                sums[f"nll_{parts.role}"].index_add_(0, chunk_rows, target_logprobs.double().neg_())
        if batch_divergences:
            kept_batches.append((indices, counts, torch.cat(batch_divergences)))
        if on_batch is not None:
            on_batch(len(indices))
    result: dict[str, Any] = {name: (total.cpu() / token_counts).numpy() for name, total in sums.items()}
    if original is None:
        del result["cds"]
    elif keep_tokens:
        token_jsd: list[np.ndarray] = [np.zeros(0, dtype=np.float16)] * count
        for indices, counts, divergences in kept_batches:
            for index, values in zip(indices, divergences.cpu().split(counts.tolist()), strict=True):
                token_jsd[index] = values.numpy()
        result["token_jsd"] = token_jsd
    return result


def _score_shard(
    original: _ModelParts,
    pruned: _ModelParts,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    bos_token_id: int | None,
    on_batch: Callable[[int], object] | None = None,
) -> pd.DataFrame:
    """Scores of one shard's rows, in their input order; `on_batch(rows)` reports progress per batch."""
    rows = _Rows([sample.input_ids for sample in encoded], [sample.prompt_length for sample in encoded])
    scores = _score_rows(original, pruned, rows, config, on_batch, keep_tokens=config.keep_token_jsd)
    frame = pd.DataFrame(
        {
            "id": [sample.id for sample in encoded],
            "cds": scores["cds"],
            "prompt_tokens": np.array([sample.prompt_length for sample in encoded], dtype=np.int64),
            "response_tokens": np.array([sample.response_length for sample in encoded], dtype=np.int64),
            "nll_original": scores["nll_original"],
            "nll_pruned": scores["nll_pruned"],
        }
    )
    if bos_token_id is not None:
        alone = _Rows(
            [[bos_token_id] + sample.input_ids[sample.prompt_length :] for sample in encoded],
            [1] * len(encoded),
        )
        frame[UNCONDITIONED_COLUMN] = _score_rows(None, pruned, alone, config)["nll_pruned"]
    frame["truncated"] = np.array([sample.truncated for sample in encoded], dtype=bool)
    if config.keep_token_jsd:
        # Written to its own file by `_write_shard`, never into the scores table (`score_degradation` drops it).
        frame[TOKEN_JSD_COLUMN] = scores["token_jsd"]
    return frame


def _content_hash(encoded: Sequence[EncodedSample]) -> str:
    digest = hashlib.sha256()
    for sample in encoded:
        digest.update(sample.id.encode())
        digest.update(b"\0")
        digest.update(array("q", [sample.prompt_length, int(sample.truncated), *sample.input_ids]).tobytes())
    return digest.hexdigest()


def scoring_fingerprint(
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    bos_token_id: int | None,
    original_weights_sha256: str,
    pruned_weights_sha256: str,
) -> dict[str, object]:
    """What a score shard folder's results depend on: the encoded rows, the numeric config, and the weights."""
    return {
        "format": SHARD_FORMAT_VERSION,
        "rows": len(encoded),
        "encoded_sha256": _content_hash(encoded),
        "config": config.numerics(),
        "bos_token_id": bos_token_id,
        "original_weights_sha256": original_weights_sha256,
        "pruned_weights_sha256": pruned_weights_sha256,
    }


def open_score_shards(shard_dir: Path, fingerprint: dict[str, object], *, overwrite: bool = False) -> ShardStore:
    """The score shard folder `shard_dir` for the inputs `fingerprint` describes (see `ShardStore`)."""
    return ShardStore(shard_dir, fingerprint, suffix=".parquet", what="degradation scores", overwrite=overwrite)


def shard_rows(encoded: Sequence[EncodedSample], config: DegradationConfig) -> list[Sequence[EncodedSample]]:
    """The encoded rows of each shard, in order: consecutive runs of `config.shard_size` rows."""
    return [encoded[start:stop] for start, stop in shard_bounds(len(encoded), config.shard_size)]


def _write_shard(store: ShardStore, index: int, frame: pd.DataFrame) -> None:
    """Write shard `index` (and first, when the frame carries them, its rows' per-token JSD beside it), then its
    completion marker; a crash before the marker leaves none (recomputed)."""
    ids = frame["id"].tolist()
    if TOKEN_JSD_COLUMN in frame.columns:
        write_token_jsd(token_jsd_path(store.data_path(index)), ids, frame[TOKEN_JSD_COLUMN].tolist())
        frame = frame.drop(columns=TOKEN_JSD_COLUMN)
    store.write(index, ids, lambda path: frame.to_parquet(path, index=False))


write_score_shard = _write_shard


def load_score_shard(store: ShardStore, index: int, ids: list[str], *, token_jsd: bool = False) -> pd.DataFrame | None:
    """The finished shard `index` when its marker exists (verified against the expected ids), else None; with
    `token_jsd`, also None when the shard's per-token JSD file is missing (scored before it was asked for)."""
    if not store.is_done(index, ids):
        return None
    if token_jsd and not token_jsd_path(store.data_path(index)).exists():
        return None
    frame = pd.read_parquet(store.data_path(index))
    if frame["id"].tolist() != ids:
        raise RuntimeError(f"{store.data_path(index)} holds other ids than its marker {store.marker_path(index)} says")
    return frame


def _validate(encoded: Sequence[EncodedSample], vocab_size: int) -> None:
    ids = [sample.id for sample in encoded]
    if len(set(ids)) != len(ids):
        duplicate = next(sample_id for sample_id, seen in pd.Series(ids).duplicated().items() if seen)
        raise ValueError(f"encoded sample ids must be unique; {ids[duplicate]!r} occurs more than once")
    for sample in encoded:
        if not 1 <= sample.prompt_length < sample.length:
            raise ValueError(
                f"sample {sample.id!r}: needs >= 1 prompt and >= 1 response token, got prompt_length="
                f"{sample.prompt_length} of {sample.length} tokens"
            )
        ids = sample.input_ids
        if min(ids) < 0 or max(ids) >= vocab_size:
            raise ValueError(f"sample {sample.id!r}: token ids outside the models' vocabulary of {vocab_size}")


def refuse_token_jsd(config: DegradationConfig, path: str) -> None:
    """Refuse (ValueError) `config.keep_token_jsd` on a scoring path that does not keep the per-token JSD."""
    if config.keep_token_jsd:
        raise ValueError(
            f"scoring.keep_token_jsd: {path} does not keep the per-token JSD; only exact scoring on the local engine "
            "does"
        )


def bos_token_id_for(pruned: nn.Module) -> int:
    """The pruned model's BOS token id, which starts the response-only sequence of `unconditioned_nll`."""
    bos = getattr(getattr(pruned, "config", None), "bos_token_id", None)
    if isinstance(bos, list):
        bos = bos[0] if bos else None
    if bos is None:
        raise ValueError(
            "unconditioned_nll needs a BOS token to start the response-only sequence; "
            "the pruned model's config has no bos_token_id"
        )
    return int(bos)


def score_degradation(
    original: nn.Module,
    pruned: nn.Module,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    shard_dir: Path | None = None,
    *,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Score each encoded sample: how far the pruned model's predictions of its response drift from the
    original's.

    Returns one row per encoded sample, in input order, with columns: id; cds (mean over response tokens of
    JSD(p_original,t || p_pruned,t) over the full vocabulary, nats, in [0, ln 2]); prompt_tokens;
    response_tokens; nll_original and nll_pruned (mean negative log-likelihood of the response tokens, nats);
    nll_pruned_unconditioned (with `config.unconditioned_nll`: the same tokens after BOS alone); truncated.
    With `config.keep_token_jsd` and a `shard_dir`, each shard's per-token JSD is also written beside it
    (`paser.selection.token_jsd`; a finished shard without that file is scored again); without a `shard_dir`
    it is refused (there is nowhere to keep it).

    With `shard_dir`, results are written in shards of `config.shard_size` rows, each with a completion
    marker, and a rerun over the same inputs (models' weights, encoded rows, numeric config) loads finished
    shards and computes only the rest, giving bitwise the same result. A shard_dir written for other inputs is
    refused unless `overwrite` discards it. Refused: models without a decoder body + output head, or whose
    logits are not head(body); output heads of different vocab sizes; duplicate ids; rows without prompt or
    response tokens; token ids outside the vocabulary. Models run in eval mode (restored afterwards) on their
    own devices.
    """
    if config.keep_token_jsd and shard_dir is None:
        raise ValueError("scoring.keep_token_jsd needs a shard_dir: the per-token JSD is written beside the shards")
    original_parts, pruned_parts = check_model_pair(original, pruned)
    _validate(encoded, original_parts.vocab_size)
    prepare_bodies((original_parts, pruned_parts), config)
    bos_token_id = bos_token_id_for(pruned) if config.unconditioned_nll else None
    shards = shard_rows(encoded, config)
    shard_ids = [[sample.id for sample in rows] for rows in shards]
    frames: list[pd.DataFrame | None] = [None] * len(shards)
    store = None
    if shard_dir is not None:
        fingerprint = scoring_fingerprint(
            encoded, config, bos_token_id, model_signature(original_parts), model_signature(pruned_parts)
        )
        store = open_score_shards(Path(shard_dir), fingerprint, overwrite=overwrite)
        frames = [
            load_score_shard(store, index, ids, token_jsd=config.keep_token_jsd) for index, ids in enumerate(shard_ids)
        ]
    pending = [index for index, frame in enumerate(frames) if frame is None]
    finished_rows = len(encoded) - sum(len(shard_ids[index]) for index in pending)
    training_modes = [original.training, pruned.training]
    original.eval()
    pruned.eval()
    progress = progress_bar(total=len(encoded), initial=finished_rows, desc="degradation", show=config.show_progress)
    try:
        with torch.inference_mode():
            if pending:
                shortest = min(encoded, key=lambda sample: sample.length).input_ids
                original_parts.check_decomposition(shortest)
                pruned_parts.check_decomposition(shortest)
            for index in pending:
                frame = _score_shard(original_parts, pruned_parts, shards[index], config, bos_token_id, progress.update)
                if store is not None:
                    _write_shard(store, index, frame)
                frames[index] = frame.drop(columns=TOKEN_JSD_COLUMN, errors="ignore")
    finally:
        progress.close()
        original.train(training_modes[0])
        pruned.train(training_modes[1])
    return concat_scores(frames, config)


def concat_scores(frames: Sequence[pd.DataFrame | None], config: DegradationConfig) -> pd.DataFrame:
    """The shards' score frames as one table in shard order (an empty, typed table when there are none)."""
    if any(frame is None for frame in frames):
        missing = [index for index, frame in enumerate(frames) if frame is None]
        raise RuntimeError(f"score shards {missing[:10]} are missing")
    if not frames:
        columns = [*COLUMNS[:-1], *([UNCONDITIONED_COLUMN] if config.unconditioned_nll else []), COLUMNS[-1]]
        return pd.DataFrame({name: pd.Series(dtype=_EMPTY_DTYPES[name]) for name in columns})
    return pd.concat(frames, ignore_index=True)


def prepare_bodies(parts: Sequence[_ModelParts], config: DegradationConfig) -> None:
    """What `config` asks of the models' bodies before scoring: with `compile_body`, compile each in place."""
    if config.compile_body:
        for model_parts in parts:
            model_parts.compile_body()


def check_model_pair(original: nn.Module, pruned: nn.Module) -> tuple[_ModelParts, _ModelParts]:
    """Both models split into body + head; refuses (TypeError) a model that is not a causal LM with a decoder
    body and an output head, and (ValueError) output heads of different vocab sizes."""
    original_parts, pruned_parts = _ModelParts(original, "original"), _ModelParts(pruned, "pruned")
    if original_parts.vocab_size != pruned_parts.vocab_size:
        raise ValueError(
            f"the models' vocab sizes differ: original {original_parts.vocab_size} vs pruned {pruned_parts.vocab_size}"
        )
    return original_parts, pruned_parts


_EMPTY_DTYPES = {
    "id": "str",
    "cds": "float64",
    "prompt_tokens": "int64",
    "response_tokens": "int64",
    "nll_original": "float64",
    "nll_pruned": "float64",
    UNCONDITIONED_COLUMN: "float64",
    "truncated": "bool",
}


def model_signature(parts: _ModelParts) -> str:
    """sha256 of the weights' cheap identity (`weight_signature`): what the shard fingerprint records."""
    return hashlib.sha256(json.dumps(parts.weight_signature()).encode()).hexdigest()
