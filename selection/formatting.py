"""Prompt formatting and tokenisation: a `Sample` becomes the token ids both models are teacher-forced on.

A sample is rendered as a prompt (the tokenizer's chat template where it has one, else the Alpaca prompt)
followed by the response and the end-of-sequence token. Prompt and response are tokenised separately and
concatenated, so the boundary between them is exact: `input_ids[prompt_length:]` are precisely the response
tokens plus EOS, the tokens that degradation scoring measures and that recovery training updates.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paser.common.console import progress_bar
from paser.common.registry import check_name
from paser.selection.corpus import Sample

TEMPLATES = ("auto", "alpaca", "chat")
OVERFLOW_MODES = ("truncate", "skip")

# Skip reasons returned by `encode_sample` and counted by `encode_corpus`.
TOO_LONG = "too_long"
PROMPT_TOO_LONG = "prompt_too_long"

ALPACA_PREAMBLE_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_PREAMBLE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)

# Rows per call to the (Rust, multi-threaded) fast tokenizer in `encode_corpus`.
_TOKENIZE_BATCH_ROWS = 1024
_MAX_EXAMPLE_IDS = 5
# Text both tokenizers must split identically for `check_same_tokenizer`: same vocabularies can still
# differ in merges or normalisation.
_PROBE_TEXT = "The quick brown fox jumps over the lazy dog. 1234567890 naïve café — 東京 🙂\n\tdef f(x): return x**2"


class EncodedSample:
    """One sample as token ids: prompt tokens, then response tokens (response + EOS).

    `input_ids[prompt_length:]` are the response tokens; there is always at least one. `truncated` is True
    when the response tail was cut to fit `max_length` (the EOS is then cut too).

    The ids are held as a C int array (4 bytes a token): a corpus of millions of rows kept as lists of
    Python ints costs ~29 bytes a token (measured on Alpaca, 107 tokens a row), 9 GB at 3M rows.
    `input_ids` returns a fresh list each time; use `length` for the count.
    """

    __slots__ = ("id", "_tokens", "prompt_length", "truncated")

    def __init__(self, id: str, input_ids: Sequence[int], prompt_length: int, truncated: bool) -> None:
        self.id = id
        reuse = isinstance(input_ids, array) and input_ids.typecode == "i"
        self._tokens = input_ids if reuse else array("i", input_ids)
        self.prompt_length = prompt_length
        self.truncated = truncated

    @property
    def input_ids(self) -> list[int]:
        """The token ids, prompt then response, as a new list."""
        return self._tokens.tolist()

    @property
    def length(self) -> int:
        """Number of tokens, prompt and response."""
        return len(self._tokens)

    @property
    def response_length(self) -> int:
        """Number of response tokens (including EOS unless truncated away)."""
        return len(self._tokens) - self.prompt_length

    def _key(self) -> tuple[object, ...]:
        return (self.id, self._tokens, self.prompt_length, self.truncated)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EncodedSample):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return (
            f"EncodedSample(id={self.id!r}, input_ids={self.input_ids!r}, prompt_length={self.prompt_length!r}, "
            f"truncated={self.truncated!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (EncodedSample, (self.id, self._tokens, self.prompt_length, self.truncated))


def _resolve_template(tokenizer: Any, template: str) -> str:
    """'auto' → 'chat' when the tokenizer has a chat template, else 'alpaca'; refuses 'chat' without one."""
    check_name("template", template, TEMPLATES)
    has_chat_template = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat_template else "alpaca"
    if template == "chat" and not has_chat_template:
        raise ValueError(
            f"template='chat' but tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat_template; "
            "use template='alpaca' or 'auto'"
        )
    return template


def _alpaca_prompt(sample: Sample) -> str:
    parts = [ALPACA_PREAMBLE_WITH_INPUT if sample.input else ALPACA_PREAMBLE_NO_INPUT, "\n\n"]
    # Earlier chat turns have no place in the Alpaca format; they go after the preamble as role-titled
    # sections so the instruction still reads last, right before the response.
    for role, content in sample.context:
        parts.append(f"### {role.capitalize()}:\n{content}\n\n")
    parts.append(f"### Instruction:\n{sample.instruction}\n\n")
    if sample.input:
        parts.append(f"### Input:\n{sample.input}\n\n")
    parts.append("### Response:\n")
    return "".join(parts)


def _chat_prompt(sample: Sample, tokenizer: Any) -> str:
    messages = [{"role": role, "content": content} for role, content in sample.context]
    messages.append({"role": "user", "content": sample.user_text()})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _render(sample: Sample, tokenizer: Any, resolved_template: str) -> str:
    return _chat_prompt(sample, tokenizer) if resolved_template == "chat" else _alpaca_prompt(sample)


def build_prompt(sample: Sample, tokenizer: Any, template: str = "auto") -> str:
    """Return the prompt text for `sample`: everything the model reads before the response.

    template: "auto" (the tokenizer's chat template when it has one, else Alpaca), "chat" (context turns and
    the user turn through the chat template with the generation prompt; refused with ValueError when the
    tokenizer has no chat template) or "alpaca" (the standard Alpaca prompt, with context turns rendered as
    role-titled sections before the instruction). Unknown template names raise ValueError.
    """
    return _render(sample, tokenizer, _resolve_template(tokenizer, template))


def _eos_token_id(tokenizer: Any) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos token; the response must end with one"
        )
    return int(eos)


def _assemble(
    sample_id: str,
    prompt_ids: list[int],
    response_ids: list[int],
    max_length: int,
    overflow: str,
) -> EncodedSample | str:
    """Concatenate prompt and response ids (response already ends with EOS), applying the length policy."""
    if not prompt_ids:
        raise ValueError(f"sample {sample_id!r}: the prompt encodes to no tokens, nothing predicts the response")
    if len(prompt_ids) >= max_length:
        return PROMPT_TOO_LONG
    room = max_length - len(prompt_ids)
    truncated = len(response_ids) > room
    if truncated:
        if overflow == "skip":
            return TOO_LONG
        response_ids = response_ids[:room]
    return EncodedSample(
        id=sample_id, input_ids=prompt_ids + response_ids, prompt_length=len(prompt_ids), truncated=truncated
    )


def _check_encode_arguments(max_length: int, overflow: str) -> None:
    check_name("overflow", overflow, OVERFLOW_MODES)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (one prompt and one response token), got {max_length}")


def encode_sample(
    sample: Sample, tokenizer: Any, max_length: int, overflow: str = "truncate", template: str = "auto"
) -> EncodedSample | str:
    """Tokenise one sample; return an `EncodedSample`, or a skip reason string.

    The prompt is tokenised with the tokenizer's usual special tokens (e.g. BOS) for the Alpaca format and
    with none for a chat template (its text already carries them); the response is tokenised without special
    tokens and EOS is appended. A sequence longer than `max_length` tokens has its response tail cut
    (overflow="truncate", `truncated=True`) or is skipped with reason "too_long" (overflow="skip"); a prompt
    that leaves no room for one response token is skipped with reason "prompt_too_long" in either mode.
    Unknown overflow or template names, `max_length < 2` and a tokenizer without EOS raise ValueError.
    """
    _check_encode_arguments(max_length, overflow)
    resolved = _resolve_template(tokenizer, template)
    prompt_ids = tokenizer(_render(sample, tokenizer, resolved), add_special_tokens=resolved == "alpaca")["input_ids"]
    response_ids = tokenizer(sample.response, add_special_tokens=False)["input_ids"] + [_eos_token_id(tokenizer)]
    return _assemble(sample.id, prompt_ids, response_ids, max_length, overflow)


def encode_corpus(
    samples: Sequence[Sample],
    tokenizer: Any,
    max_length: int,
    overflow: str = "truncate",
    template: str = "auto",
    show_progress: bool = True,
) -> tuple[list[EncodedSample], dict[str, int], dict[str, list[str]]]:
    """Tokenise a corpus in batches with the same rules as `encode_sample`.

    Returns `(encoded, skip_counts, skip_examples)`: the encoded samples in input order (skipped ones left
    out), the number of skipped samples per reason ("too_long", "prompt_too_long"; only reasons that
    occurred), and up to 5 example sample ids per reason. Refuses what `encode_sample` refuses.
    """
    _check_encode_arguments(max_length, overflow)
    resolved = _resolve_template(tokenizer, template)
    eos = _eos_token_id(tokenizer)
    encoded: list[EncodedSample] = []
    skip_counts: dict[str, int] = {}
    skip_examples: dict[str, list[str]] = {}
    progress = progress_bar(total=len(samples), desc="tokenise", show=show_progress)
    # Batches taken by iterating, not slicing: `samples` may stream from a corpus store (`StoredSamples`).
    rows = iter(samples)
    while batch := list(itertools.islice(rows, _TOKENIZE_BATCH_ROWS)):
        prompts = [_render(sample, tokenizer, resolved) for sample in batch]
        prompt_ids = tokenizer(prompts, add_special_tokens=resolved == "alpaca")["input_ids"]
        response_ids = tokenizer([sample.response for sample in batch], add_special_tokens=False)["input_ids"]
        for sample, prompt, response in zip(batch, prompt_ids, response_ids, strict=True):
            result = _assemble(sample.id, prompt, response + [eos], max_length, overflow)
            if isinstance(result, str):
                skip_counts[result] = skip_counts.get(result, 0) + 1
                examples = skip_examples.setdefault(result, [])
                if len(examples) < _MAX_EXAMPLE_IDS:
                    examples.append(sample.id)
            else:
                encoded.append(result)
        progress.update(len(batch))
    progress.close()
    return encoded, skip_counts, skip_examples


_SPECIAL_TOKEN_NAMES = ("bos", "eos", "pad", "unk")


def check_same_tokenizer(tokenizer_a: Any, tokenizer_b: Any) -> None:
    """Refuse (ValueError) two tokenizers that would give different token ids; return None when they agree.

    Compared: vocabulary size (including added tokens), the token → id map, the bos/eos/pad/unk ids, and the
    ids of a probe text (same vocabularies can still merge differently). The message lists every difference
    found, e.g. "vocab sizes differ: 49152 vs 32000; 17 tokens map to different ids, e.g. 'the': 5 vs 8".
    """
    if tokenizer_a is tokenizer_b:
        return
    problems: list[str] = []
    if len(tokenizer_a) != len(tokenizer_b):
        problems.append(f"vocab sizes differ: {len(tokenizer_a)} vs {len(tokenizer_b)}")
    vocab_a, vocab_b = tokenizer_a.get_vocab(), tokenizer_b.get_vocab()
    different = sorted(
        (token for token, token_id in vocab_a.items() if token in vocab_b and vocab_b[token] != token_id),
        key=vocab_a.__getitem__,
    )
    if different:
        token = different[0]
        problems.append(
            f"{len(different)} tokens map to different ids, e.g. {token!r}: {vocab_a[token]} vs {vocab_b[token]}"
        )
    for missing_from, present, absent in (("second", vocab_a, vocab_b), ("first", vocab_b, vocab_a)):
        missing = sorted((token for token in present if token not in absent), key=present.__getitem__)
        if missing:
            problems.append(f"{len(missing)} tokens are missing from the {missing_from} tokenizer, e.g. {missing[0]!r}")
    for name in _SPECIAL_TOKEN_NAMES:
        id_a, id_b = getattr(tokenizer_a, f"{name}_token_id"), getattr(tokenizer_b, f"{name}_token_id")
        if id_a != id_b:
            problems.append(f"{name} ids differ: {id_a} vs {id_b}")
    if not problems:
        probe_a = tokenizer_a(_PROBE_TEXT, add_special_tokens=False)["input_ids"]
        probe_b = tokenizer_b(_PROBE_TEXT, add_special_tokens=False)["input_ids"]
        if probe_a != probe_b:
            problems.append("same vocabulary but the same text tokenises to different ids")
    if problems:
        raise ValueError("the two models' tokenizers differ: " + "; ".join(problems))


TOKEN_CACHE_VERSION = 1
_TOKEN_CACHE_GROUP_ROWS = 65_536


def _write_token_table(path: Path, encoded: Sequence[EncodedSample]) -> None:
    """`encoded` as Parquet (id, input_ids as list<int32>, prompt_length, truncated), a row group of
    `_TOKEN_CACHE_GROUP_ROWS` at a time: one copy of every token id at once would add GBs at millions of rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("input_ids", pa.list_(pa.int32())),
            ("prompt_length", pa.int32()),
            ("truncated", pa.bool_()),
        ]
    )
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, max(len(encoded), 1), _TOKEN_CACHE_GROUP_ROWS):
            rows = encoded[start : start + _TOKEN_CACHE_GROUP_ROWS]
            tokens = np.frombuffer(b"".join(row._tokens.tobytes() for row in rows), dtype=np.int32)
            columns = {
                "id": pa.array([row.id for row in rows], pa.string()),
                "input_ids": pa.ListArray.from_arrays(
                    pa.array(np.cumsum([0] + [row.length for row in rows]), pa.int32()), pa.array(tokens)
                ),
                "prompt_length": pa.array([row.prompt_length for row in rows], pa.int32()),
                "truncated": pa.array([row.truncated for row in rows], pa.bool_()),
            }
            writer.write_table(pa.table(columns, schema=schema))


def _read_token_table(path: Path) -> list[EncodedSample]:
    """The rows `_write_token_table` wrote, read a row group at a time."""
    import numpy as np
    import pyarrow.parquet as pq

    encoded = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_TOKEN_CACHE_GROUP_ROWS):
        tokens = batch.column("input_ids")
        offsets, values = tokens.offsets.to_numpy(), tokens.values.to_numpy().astype(np.int32, copy=False)
        rows = zip(
            batch.column("id").to_pylist(),
            batch.column("prompt_length").to_pylist(),
            batch.column("truncated").to_pylist(),
            strict=True,
        )
        for row, (row_id, prompt_length, truncated) in enumerate(rows):
            row_tokens = array("i")
            row_tokens.frombytes(values[offsets[row] : offsets[row + 1]].tobytes())
            encoded.append(EncodedSample(row_id, row_tokens, prompt_length, truncated))
    return encoded


def tokenizer_identity(tokenizer: Any) -> str:
    """sha256 of what decides a tokenizer's output: its full serialised form (fast tokenizers) or vocabulary,
    its chat template, special tokens and class."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    payload = {
        "class": type(tokenizer).__name__,
        "backend": backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items()),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special": {key: str(value) for key, value in tokenizer.special_tokens_map.items()},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def samples_digest(samples: Sequence[Sample]) -> str:
    """sha256 over every sample's id and text fields, in order."""
    digest = hashlib.sha256()
    for sample in samples:
        for text in (sample.id, sample.instruction, sample.input, sample.response):
            digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(json.dumps(sample.context).encode() + b"\1")
    return digest.hexdigest()


def encode_corpus_cached(
    samples: Sequence[Sample],
    tokenizer: Any,
    max_length: int,
    cache_dir: Path,
    overflow: str = "truncate",
    template: str = "auto",
    show_progress: bool = True,
) -> tuple[list[EncodedSample], dict[str, int], dict[str, list[str]]]:
    """`encode_corpus`, remembered in `cache_dir` (`tokens.parquet` + `tokens.json`): a rerun over the same
    samples, tokenizer and settings reads the token ids back (seconds) instead of tokenising again (about
    3,000 rows/s on two cores: a quarter of an hour at 3M rows). Other inputs recompute and replace the cache.
    """
    from paser.common.io import write_atomic

    cache_dir = Path(cache_dir)
    key = {
        "version": TOKEN_CACHE_VERSION,
        "samples": samples_digest(samples),
        "tokenizer": tokenizer_identity(tokenizer),
        "max_length": max_length,
        "overflow": overflow,
        "template": template,
    }
    record_path, table_path = cache_dir / "tokens.json", cache_dir / "tokens.parquet"
    if record_path.exists() and table_path.exists():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record["key"] == key:
            return _read_token_table(table_path), record["skipped"], record["examples"]
    encoded, skipped, examples = encode_corpus(samples, tokenizer, max_length, overflow, template, show_progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(table_path, lambda path: _write_token_table(path, encoded))
    payload = json.dumps({"key": key, "skipped": skipped, "examples": examples}, indent=2)
    write_atomic(record_path, lambda path: path.write_text(payload, encoding="utf-8"))
    return encoded, skipped, examples
