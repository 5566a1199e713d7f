"""Calibration data for pruning: `n_samples` windows of `seqlen` tokens drawn from a text source.

Sampling follows the published Wanda / SparseGPT code: the source's text is tokenised once and `n_samples`
windows start at seeded random offsets. A source of several documents (corpus rows, C4 documents) is joined
with a blank line ("\\n\\n") first. Special tokens are never added (no BOS at the start of the text or of a
window; a corpus row's chat-template markers are part of its rendered text). The published code tokenises
with the tokenizer's defaults, which puts one BOS at the very start of the whole text; a random window almost
never contains it, so plain windows are what their calibration saw.

Sources: a recovery corpus file the selection engine reads (each row rendered exactly as degradation scoring
renders it, prompt + response + EOS, so calibration looks like the recovery data), a plain `.txt` file (as
is), the built-in `demo` corpus, or a hub name (`wikitext2`: WikiText-2 raw **train**, its rows joined with
" " as in the published code; `c4`: the C4 shard the Wanda code calibrates on). Evaluation text (the
WikiText-2 / PTB test files of the data directory) is refused: calibrating on it would leak the perplexity
benchmark into the pruned weights.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from paser.common.io import file_sha256
from paser.data.demo import demo_rows
from paser.data.paths import data_dir as resolve_data_dir
from paser.recovery.models import DEFAULT_SEQLEN
from paser.selection.corpus import FILE_SUFFIXES, CorpusConfig, Sample, load_corpus
from paser.selection.formatting import build_prompt

DEFAULT_N_SAMPLES = 128
DOCUMENT_SEPARATOR = "\n\n"
HUB_SOURCES = ("wikitext2", "c4")
# C4 shard the Wanda code calibrates on (allenai/c4, English, first training shard).
C4_HUB_ID = "allenai/c4"
C4_TRAIN_SHARD = "en/c4-train.00000-of-01024.json.gz"
WIKITEXT_HUB_ID = "Salesforce/wikitext"
WIKITEXT_CONFIG = "wikitext-2-raw-v1"
# Test-split file names of the perplexity benchmarks, wherever they lie.
EVALUATION_FILE_PATTERN = re.compile(r"^(wikitext2_raw_v1_test.*|ptb\.test\.txt)$")
# Documents tokenised per call when counting tokens of a sampled source (C4, corpus rows).
_COUNT_BATCH = 256
# Corpus rows are rendered until their text holds this many times the tokens the windows cover, so random
# windows rarely share text, while a 3M-row corpus is not rendered and tokenised whole for 128 windows.
CORPUS_TOKEN_FACTOR = 4


def load_calibration(
    source: str,
    tokenizer: Any,
    n_samples: int = DEFAULT_N_SAMPLES,
    seqlen: int | None = None,
    seed: int = 0,
    max_length: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Draw `n_samples` calibration windows of `seqlen` tokens from `source`.

    `source` is `demo`, `wikitext2`, `c4`, a `.txt` file, or a corpus file (`.jsonl`, `.jsonl.gz`, `.json`,
    `.json.gz`, `.parquet`; Alpaca or chat rows). `seqlen=None` means min(2048, `max_length`), `max_length`
    being the model's maximum positions (`paser.recovery.models.max_positions(model.config)`; 2048 when not given).
    `data_dir` is the data directory whose `eval/` folder is refused (default: `paser.data.paths.data_dir()` when
    one exists).

    Returns `(input_ids, record)`: a `[n_samples, seqlen]` torch.long tensor, and the JSON-serialisable record
    for `pruning.json`: source, kind (`corpus`, `text`, `demo`, `hub`), n_samples, seqlen, seed,
    n_tokens_available (tokens of the joined text), overlapping (True when the text has fewer than
    n_samples * seqlen tokens, so windows must repeat text; random windows of a longer text may still share
    some tokens, as in the published code), text_sha256 (of the tokenised text),
    sha256 (of the file) or hub (dataset id, config/shard, split; for C4 also documents_used), and for corpora
    and the demo rows_read / rows_valid / rows_used / rows_skipped (by reason). Corpus and demo rows are taken
    in seeded random order until they hold `CORPUS_TOKEN_FACTOR` x the windows' tokens (`corpus_documents`).

    Refuses: evaluation test text (ValueError: WikiText-2 / PTB test files, anything under the data
    directory's `eval/`), a missing file (FileNotFoundError naming it), an unsupported file type, a text with
    fewer than seqlen + 1 tokens, non-positive n_samples or seqlen, seqlen above `max_length` (ValueError
    naming the sizes), and a hub source that cannot be loaded (ConnectionError suggesting a corpus file).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive number of windows, got {n_samples}")
    seqlen = _resolve_seqlen(seqlen, max_length)
    record: dict[str, Any] = {"source": source}
    if source == "demo":
        record["kind"] = "demo"
        rows = demo_rows()
        samples = [
            Sample(id=str(index), instruction=row["instruction"], input=row["input"], response=row["output"])
            for index, row in enumerate(rows)
        ]
        documents = corpus_documents(samples, tokenizer, _corpus_tokens_wanted(n_samples, seqlen), seed)
        record.update(rows_read=len(rows), rows_valid=len(samples), rows_used=len(documents), rows_skipped={})
    elif source in HUB_SOURCES:
        record["kind"] = "hub"
        documents, hub_fields = _hub_documents(source, tokenizer, n_samples * seqlen + 1, seed)
        record.update(hub_fields)
    else:
        documents = _file_documents(source, tokenizer, _corpus_tokens_wanted(n_samples, seqlen), seed, record, data_dir)
    text = DOCUMENT_SEPARATOR.join(documents)
    # verbose=False: the joined text is meant to exceed the model length; the tokenizer's warning would mislead.
    token_ids = torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.long)
    windows = sample_windows(token_ids, n_samples, seqlen, seed)
    record.update(
        n_samples=n_samples,
        seqlen=seqlen,
        seed=seed,
        n_tokens_available=int(token_ids.numel()),
        overlapping=token_ids.numel() < n_samples * seqlen,
        text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )
    return windows, record


def _file_documents(
    source: str,
    tokenizer: Any,
    tokens_wanted: int,
    seed: int,
    record: dict[str, Any],
    data_dir: str | os.PathLike[str] | None,
) -> list[str]:
    """The documents of a calibration file (a .txt text, or a corpus's rows as `corpus_documents` takes them);
    adds the file's fields to `record` (kind, sha256, and the row counts of a corpus). Refuses as
    `load_calibration` says."""
    path = Path(source).expanduser()
    refuse_evaluation_text(path, data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {source} does not exist")
    name = path.name.lower()
    if name.endswith(".txt"):
        record["kind"] = "text"
        try:
            documents = [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as error:
            raise ValueError(f"calibration file {source} is not UTF-8 text: {error}") from error
    elif name.endswith(FILE_SUFFIXES):
        record["kind"] = "corpus"
        corpus = load_corpus(CorpusConfig(path=str(path)))
        documents = corpus_documents(corpus.samples, tokenizer, tokens_wanted, seed)
        used = calibration_order(len(corpus.samples), seed)[: len(documents)]
        record.update(
            rows_read=corpus.stats.rows_read,
            rows_valid=corpus.stats.rows_valid,
            rows_used=len(documents),
            rows_skipped=dict(sorted(corpus.stats.skipped.items())),
            # 0-based row positions in the file of the rows the windows come from: what a pool drawn from
            # the same file leaves out (`paser.selection.corpus.CorpusConfig.exclude_rows`).
            rows_used_positions=sorted(corpus.samples[index].source_index for index in used),
        )
    else:
        raise ValueError(
            f"calibration file {source} has an unsupported type; use .txt, {', '.join(FILE_SUFFIXES)}, "
            f"'demo' or a hub name ({', '.join(HUB_SOURCES)})"
        )
    record["sha256"] = file_sha256(path)
    return documents


def sample_windows(token_ids: torch.Tensor, n_samples: int, seqlen: int, seed: int) -> torch.Tensor:
    """`n_samples` windows of `seqlen` consecutive ids from the 1-D `token_ids`, at seeded uniform offsets.

    As in the Wanda / SparseGPT code, a start lies in [0, n_tokens - seqlen - 1], so the text needs at least
    seqlen + 1 tokens (refused with ValueError naming both sizes otherwise). Returns the `[n_samples, seqlen]`
    long ids. Windows may overlap.
    """
    n_tokens = int(token_ids.numel())
    if n_tokens < seqlen + 1:
        raise ValueError(
            f"calibration text has {n_tokens} tokens, fewer than seqlen + 1 = {seqlen + 1}; "
            "use a longer source or a smaller seqlen"
        )
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, n_tokens - seqlen, (n_samples,), generator=generator)
    return torch.stack([token_ids[start : start + seqlen] for start in starts.tolist()])


def _corpus_tokens_wanted(n_samples: int, seqlen: int) -> int:
    return CORPUS_TOKEN_FACTOR * n_samples * seqlen + 1


def corpus_documents(samples: Sequence[Sample], tokenizer: Any, tokens_wanted: int, seed: int) -> list[str]:
    """Rendered rows (`formatted_rows`) in a seeded random order, until they hold `tokens_wanted` tokens.

    Rows are rendered and counted in batches as they are taken, so calibration costs what the windows need,
    not the size of the corpus; a corpus smaller than that is used whole (in the shuffled order).
    """
    order = calibration_order(len(samples), seed)

    def rendered(indices: list[int]) -> list[str]:
        return formatted_rows([samples[index] for index in indices], tokenizer)

    return _take_until(rendered, order, tokenizer, tokens_wanted)


def calibration_order(n_rows: int, seed: int) -> list[int]:
    """The seeded random order in which `corpus_documents` takes rows (positions in its `samples`)."""
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed)).tolist()


def _take_until(
    texts: Callable[[list[int]], list[str]], order: list[int], tokenizer: Any, tokens_wanted: int
) -> list[str]:
    """The texts of `order` (fetched `_COUNT_BATCH` at a time) until they hold `tokens_wanted` tokens, or all."""
    taken: list[str] = []
    tokens = 0
    for start in range(0, len(order), _COUNT_BATCH):
        batch = texts(order[start : start + _COUNT_BATCH])
        counts = [len(ids) for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]]
        for text, count in zip(batch, counts, strict=True):
            taken.append(text)
            tokens += count
            if tokens >= tokens_wanted:
                return taken
    return taken


def formatted_rows(samples: Sequence[Sample], tokenizer: Any) -> list[str]:
    """Each sample as the text degradation scoring reads: `build_prompt` + response + the EOS token's text.

    Refuses (ValueError) a tokenizer without an EOS token, as scoring does.
    """
    if tokenizer.eos_token is None:
        raise ValueError("tokenizer has no eos token; corpus rows end with one as in scoring")
    return [build_prompt(sample, tokenizer) + sample.response + tokenizer.eos_token for sample in samples]


def refuse_evaluation_text(path: Path, data_dir: str | os.PathLike[str] | None = None) -> None:
    """Refuse (ValueError) a path that is evaluation text: a WikiText-2 / PTB test file by name, or any file
    under the data directory's `eval/` folder (`data_dir`, else `paser.data.paths.data_dir()` when one exists).
    Returns None for any other path."""
    resolved = path.expanduser().resolve()
    reason = None
    if EVALUATION_FILE_PATTERN.match(resolved.name):
        reason = "it is a WikiText-2 or PTB test split"
    else:
        evaluation_dir = _evaluation_dir(data_dir)
        if evaluation_dir is not None and resolved.is_relative_to(evaluation_dir):
            reason = f"it lies under the evaluation data folder {evaluation_dir}"
    if reason is not None:
        raise ValueError(
            f"calibration source {path} is evaluation text ({reason}); calibration must not use the text the "
            "pruned model is evaluated on; use recovery-corpus rows, 'demo', or a train split"
        )


def _evaluation_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    try:
        return (resolve_data_dir(data_dir) / "eval").resolve()
    except FileNotFoundError:
        # No data directory is configured, so there is no evaluation folder to protect; file names still are.
        return None


def _resolve_seqlen(seqlen: int | None, max_length: int | None) -> int:
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    if seqlen is None:
        return DEFAULT_SEQLEN if max_length is None else min(DEFAULT_SEQLEN, max_length)
    if seqlen < 1:
        raise ValueError(f"seqlen must be a positive number of tokens, got {seqlen}")
    if max_length is not None and seqlen > max_length:
        raise ValueError(f"seqlen {seqlen} exceeds the model's maximum length {max_length}")
    return seqlen


def _load_hub_dataset(*args: Any, **kwargs: Any) -> Any:
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as error:  # the hub client raises many types (HTTP, offline mode, missing files)
        raise ConnectionError(
            f"cannot load {args[0]} from the Hugging Face hub; the hub may be unreachable "
            f"({type(error).__name__}: {error}). Calibrate on a corpus file (.jsonl/.json/.parquet), a .txt file "
            "or 'demo' instead"
        ) from error


def _hub_documents(name: str, tokenizer: Any, tokens_wanted: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    """The documents of hub source `name` and the record fields saying what was loaded."""
    if name == "wikitext2":
        dataset = _load_hub_dataset(WIKITEXT_HUB_ID, WIKITEXT_CONFIG, split="train")
        # One document joined with " ", exactly as the Wanda / SparseGPT code joins the train split ("\n\n" is
        # what they use for the test split), so windows match their calibration text.
        return [" ".join(dataset["text"])], {"hub": f"{WIKITEXT_HUB_ID} {WIKITEXT_CONFIG} train"}
    dataset = _load_hub_dataset(C4_HUB_ID, data_files={"train": C4_TRAIN_SHARD}, split="train")
    # The shard holds ~150M tokens, far more than calibration needs and too many to tokenise at once. Wanda
    # draws one window per random document; we take documents in seeded random order until they hold
    # enough tokens, then sample windows from their concatenation like every other source.
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    documents = _take_until(lambda indices: dataset[indices]["text"], order, tokenizer, tokens_wanted)
    return documents, {"hub": f"{C4_HUB_ID} {C4_TRAIN_SHARD} train", "documents_used": len(documents)}
