"""Generation tasks of `paser eval`: the model's greedy answers to held-out prompts, scored beside the likelihoods.

Two tasks, registered by name in `GENERATION_TASKS`:

- `gen_labels`: label-style T0 prompts (built-in set `t0_labels` of `paser.data.heldout`: sentiment, topic and
  paraphrase prompts whose reference is a short label), scored by `exact_match`, overall and per category.
- `gen_longform`: Alpaca prompts with long references (built-in set `alpaca_longform`), scored by how much each
  answer repeats itself (`repeat_3`, `repeat_4`: `ngram_counts`) and how varied the answers are across prompts
  (`distinct_1`, `distinct_2`: `distinct_ngrams`).

Both also report `mean_length` (generated tokens per answer, EOS excluded) and `capped` (the share of answers
that reached `max_new_tokens` without EOS). Token counts are over the generated ids, in the model's tokenizer.

Prompts are formatted and tokenised as training formats them (`paser.selection.formatting`: the tokenizer's chat
template, else the Alpaca prompt; `template` as in training) and decoded greedily in left-padded batches of
prompts of similar length (`paser.recovery.greedy`), up to the task's `max_new_tokens`. Answers are cached per
task in a JSON file under the evaluation's folder: keyed by a fingerprint of the model's weights and the
generation settings, one entry per prompt's token ids, so a rerun decodes only prompts it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paser.common.io import write_atomic
from paser.common.registry import Registry
from paser.data.heldout import heldout_rows, heldout_source
from paser.recovery.greedy import eos_token_ids, generate_batch, greedy_decoding
from paser.recovery.models import max_positions
from paser.selection.corpus import Sample
from paser.selection.formatting import encode_corpus

CACHE_FORMAT = "paser.generations"
CACHE_FORMAT_VERSION = 1
# Positions a prompt may use when the model config names no maximum.
_FALLBACK_POSITIONS = 2048
_NOT_WORD = re.compile(r"[\W_]+")
_EXAMPLES = 3


@dataclass(frozen=True)
class Answer:
    """One greedy answer: the generated ids before EOS, their text (special tokens dropped) and whether EOS came
    before `max_new_tokens` (`finished`)."""

    tokens: tuple[int, ...]
    text: str
    finished: bool


# ------------------------------------------------------------------------------------------------ metrics


def normalise_answer(text: str) -> str:
    """`text` casefolded, every run of punctuation, symbols and whitespace one space, stripped."""
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def exact_match(answer: str, reference: str) -> bool:
    """Whether `answer` gives the label `reference`: the answer's first non-empty line, normalised
    (`normalise_answer`), equals the normalised reference or starts with it as whole words (the label prefix:
    "Positive. The reviewer liked it" gives "positive"; "not duplicates" does not give "duplicates", nor "not
    really" "no"). False for an empty reference."""
    expected = normalise_answer(reference).split()
    lines = [line for line in answer.splitlines() if normalise_answer(line)]
    given = normalise_answer(lines[0]).split() if lines else []
    return bool(expected) and given[: len(expected)] == expected


def ngram_counts(tokens: Sequence[int], n: int) -> tuple[int, int]:
    """(repeated, total) n-grams of one answer: `total` = len(tokens) - n + 1 (0 when shorter than n), `repeated`
    = those equal to an n-gram earlier in the same answer (total − distinct). Refuses (ValueError) n < 1."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    grams = [tuple(tokens[start : start + n]) for start in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams)), len(grams)


def distinct_ngrams(answers: Sequence[Sequence[int]], n: int) -> float:
    """distinct-n (Li et al., 2016): the number of different n-grams over all answers divided by the number of
    n-grams; 1 when no n-gram repeats within or across answers, low when the model says the same things to
    every prompt. NaN when no answer has n tokens."""
    grams = [tuple(tokens[start : start + n]) for tokens in answers for start in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def _length_items(answers: Sequence[Answer]) -> dict[str, list[float]]:
    return {
        "length": [float(len(answer.tokens)) for answer in answers],
        "capped": [float(not answer.finished) for answer in answers],
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def label_scores(answers: Sequence[Answer], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`gen_labels`' record part for answers to `rows` (same order): metrics `exact_match` (share of answers that
    give the row's `output`, `exact_match`), its standard error, `mean_length` and `capped`; `categories`:
    `{category: {"exact_match", "n"}}`; `items`: each answer's `exact_match` (0/1), `length` and `capped`."""
    matches = [float(exact_match(answer.text, row["output"])) for answer, row in zip(answers, rows, strict=True)]
    items = {"exact_match": matches, **_length_items(answers)}
    share = _mean(matches)
    stderr = math.sqrt(share * (1 - share) / (len(matches) - 1)) if len(matches) > 1 else None
    by_category: dict[str, list[float]] = {}
    for match, row in zip(matches, rows, strict=True):
        by_category.setdefault(str(row.get("category")), []).append(match)
    return {
        "metrics": {
            "exact_match": share,
            "exact_match_stderr": stderr,
            "mean_length": _mean(items["length"]),
            "capped": _mean(items["capped"]),
        },
        "categories": {
            category: {"exact_match": _mean(values), "n": len(values)}
            for category, values in sorted(by_category.items())
        },
        "items": items,
    }


def longform_scores(answers: Sequence[Answer], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`gen_longform`'s record part: metrics `repeat_3` and `repeat_4` (repeated n-grams over all n-grams of the
    answers, each answer's counted within itself: `ngram_counts`; NaN when no answer has n tokens),
    `distinct_1` and `distinct_2` (`distinct_ngrams` over all answers), `mean_length` and `capped`; `items`: each
    answer's `repeated_<n>` and `ngrams_<n>` for n = 3, 4, `length` and `capped`. `rows` are unused: the
    reference only chose the prompt."""
    del rows
    items: dict[str, list[float]] = {}
    metrics: dict[str, float] = {}
    for n in (3, 4):
        counts = [ngram_counts(answer.tokens, n) for answer in answers]
        items[f"repeated_{n}"] = [float(repeated) for repeated, _ in counts]
        items[f"ngrams_{n}"] = [float(total) for _, total in counts]
        total = sum(items[f"ngrams_{n}"])
        metrics[f"repeat_{n}"] = sum(items[f"repeated_{n}"]) / total if total else math.nan
    for n in (1, 2):
        metrics[f"distinct_{n}"] = distinct_ngrams([answer.tokens for answer in answers], n)
    items.update(_length_items(answers))
    metrics["mean_length"] = _mean(items["length"])
    metrics["capped"] = _mean(items["capped"])
    return {"metrics": metrics, "items": items}


# ------------------------------------------------------------------------------------------------ the tasks


@dataclass(frozen=True)
class GenerationTask:
    """A generation task of `paser eval`: its prompts are the built-in held-out set `heldout_set`
    (`paser.data.heldout`, its default row count unless a limit is given), answered greedily up to
    `max_new_tokens` and scored by `score(answers, rows)`; `higher_is_better` names its metrics where more is
    better (the others: lower is better, or no direction, e.g. `mean_length`)."""

    name: str
    description: str
    heldout_set: str
    max_new_tokens: int
    score: Callable[[Sequence[Answer], Sequence[dict[str, Any]]], dict[str, Any]]
    higher_is_better: tuple[str, ...]


GENERATION_TASKS: Registry[GenerationTask] = Registry("generation task")
for _task in (
    GenerationTask(
        "gen_labels",
        "exact match of greedy answers to label-style T0 prompts (sentiment, topic, paraphrase)",
        "t0_labels",
        16,
        label_scores,
        ("exact_match",),
    ),
    GenerationTask(
        "gen_longform",
        "repetition, distinct-n and length of greedy answers to long-form Alpaca prompts",
        "alpaca_longform",
        64,
        longform_scores,
        ("distinct_1", "distinct_2"),
    ),
):
    GENERATION_TASKS.register(_task.name, _task)


def get_generation_task(name: str) -> GenerationTask:
    """The generation task `name`; refuses (`UnknownNameError`, a ValueError) an unknown name, listing the known
    ones."""
    return GENERATION_TASKS.get(name)


def generation_task_file(name: str, data_dir: str | Path | None = None) -> Path:
    """The data file task `name` reads its prompts from; FileNotFoundError naming it when missing."""
    return heldout_source(get_generation_task(name).heldout_set, data_dir)


def flat_generation_metrics(task: str, record: dict[str, Any]) -> dict[str, float]:
    """A generation task's record as flat metric columns `{task}_{metric}` (standard errors left out)."""
    return {
        f"{task}_{metric}": float(value)
        for metric, value in record["metrics"].items()
        if not metric.endswith("_stderr") and value is not None
    }


def higher_is_better(metric: str) -> bool:
    """Whether flat metric `metric` (`flat_generation_metrics`) is one where more is better."""
    return any(
        metric in {f"{task.name}_{name}" for name in task.higher_is_better} for task in GENERATION_TASKS.values()
    )


# ------------------------------------------------------------------------------------------------ decoding, cache


def model_fingerprint(model: Any) -> str:
    """sha256 over the model's class and every named parameter's name, dtype, shape and bytes (a peft model's
    adapter weights included): two models share it only when their weights are the same. About a second per
    500 MB of weights on one core."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, parameter in model.named_parameters():
        tensor = parameter.detach()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _prompt_sha(prompt_ids: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, prompt_ids)).encode()).hexdigest()


def _read_cache(path: Path, key: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cached answers by prompt sha, when `path` holds answers under `key`; else none."""
    if not path.is_file():
        return {}
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    if cached.get("format") != CACHE_FORMAT or cached.get("version") != CACHE_FORMAT_VERSION:
        return {}
    return cached["answers"] if cached.get("key") == key else {}


def greedy_generations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    cache_path: Path | None = None,
) -> tuple[list[Answer], dict[str, Any]]:
    """The greedy answer to every prompt (token ids), in order, and `{"generated", "from_cache",
    "tokens_generated", "seconds"}`.

    Prompts are sorted by length and decoded `batch_size` at a time, left-padded; identical prompts are decoded
    once. With `cache_path`, answers cached there under the same key (`model_fingerprint`, `max_new_tokens`, EOS
    and pad ids, device type) are reused and the file is rewritten (atomically) with every answer of the key.
    Refuses (ValueError) a tokenizer without a pad token, `max_new_tokens` or `batch_size` below 1 and an empty
    prompt.
    """
    started = time.perf_counter()
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad_token_id; batched generation left-pads with it")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be at least 1, got {max_new_tokens}, {batch_size}")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("an empty prompt: nothing to answer")
    eos_ids = eos_token_ids(model, tokenizer)
    key = {
        "model": model_fingerprint(model),
        "max_new_tokens": max_new_tokens,
        "eos_token_ids": eos_ids,
        "pad_token_id": tokenizer.pad_token_id,
        "device": model.get_input_embeddings().weight.device.type,
    }
    answers = _read_cache(cache_path, key) if cache_path is not None else {}
    shas = [_prompt_sha(prompt) for prompt in prompts]
    by_sha = {sha: list(prompt) for sha, prompt in zip(shas, prompts, strict=True) if sha not in answers}
    todo = sorted(by_sha, key=lambda sha: len(by_sha[sha]))
    tokens_generated = 0
    with greedy_decoding(model, eos_ids, tokenizer.pad_token_id):
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            results = generate_batch(
                model, [by_sha[sha] for sha in batch], tokenizer.pad_token_id, eos_ids, max_new_tokens
            )
            for sha, (tokens, finished) in zip(batch, results, strict=True):
                answers[sha] = {"tokens": tokens, "finished": finished}
                tokens_generated += len(tokens) + int(finished)
    if cache_path is not None and todo:
        payload = json.dumps({"format": CACHE_FORMAT, "version": CACHE_FORMAT_VERSION, "key": key, "answers": answers})
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_path, lambda path: path.write_text(payload, encoding="utf-8"))
    texts = tokenizer.batch_decode([answers[sha]["tokens"] for sha in shas], skip_special_tokens=True)
    result = [
        Answer(tuple(answers[sha]["tokens"]), text, bool(answers[sha]["finished"]))
        for sha, text in zip(shas, texts, strict=True)
    ]
    stats = {
        "generated": len(todo),
        "from_cache": len(prompts) - sum(sha in by_sha for sha in shas),
        "tokens_generated": tokens_generated,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return result, stats


def run_generation_task(
    model: Any,
    tokenizer: Any,
    name: str,
    *,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    template: str = "auto",
    batch_size: int = 8,
    cache_dir: Path | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """Task `name`'s evaluation record: `{"metrics", "n": answers scored, "max_new_tokens", "skipped": prompts
    left out as too long for the model, "source": "local", "files", "seconds", "generation": decoding stats,
    "examples": the first answers beside their references, "items"}` (and `categories` for `gen_labels`).

    The prompts are the task's built-in set, at most `limit` rows (None: the set's default), drawn from the rows
    whose prompt is not in `exclude` (`paser.data.heldout.prompt_key`: a training pool's prompts), tokenised as
    training does with `template`. A prompt that leaves fewer than `max_new_tokens` of the model's positions is
    skipped (counted). With `cache_dir`, answers are cached in `cache_dir/<name>.json`. Refuses an unknown task
    (ValueError), a missing data file (FileNotFoundError) and a set with no prompt left (ValueError).
    """
    started = time.perf_counter()
    task = get_generation_task(name)
    rows = heldout_rows(task.heldout_set, limit, data_dir, exclude)
    samples = [Sample(row["id"], row["instruction"], row["input"], row["output"]) for row in rows]
    room = (max_positions(model.config) or _FALLBACK_POSITIONS) - task.max_new_tokens
    encoded, skipped, _ = encode_corpus(samples, tokenizer, max(room, 2), "truncate", template, show_progress=False)
    if not encoded:
        raise ValueError(f"{name}: no prompt left to answer ({len(rows)} drawn, skipped: {skipped or 'none'})")
    kept = {row.id for row in encoded}
    rows = [row for row in rows if row["id"] in kept]
    answers, stats = greedy_generations(
        model,
        tokenizer,
        [row.input_ids[: row.prompt_length] for row in encoded],
        max_new_tokens=task.max_new_tokens,
        batch_size=batch_size,
        cache_path=None if cache_dir is None else Path(cache_dir) / f"{name}.json",
    )
    record = task.score(answers, rows)
    examples = [
        {"id": row["id"], "answer": answer.text, "reference": row["output"]}
        for row, answer in zip(rows[:_EXAMPLES], answers, strict=False)
    ]
    return {
        "metrics": record["metrics"],
        "n": len(answers),
        "max_new_tokens": task.max_new_tokens,
        "skipped": skipped,
        "source": "local",
        "files": [str(generation_task_file(name, data_dir))],
        "seconds": time.perf_counter() - started,
        "generation": stats,
        "examples": examples,
        **{key: value for key, value in record.items() if key != "metrics"},
    }
