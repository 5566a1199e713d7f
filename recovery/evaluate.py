"""Evaluation of a (pruned, recovered) model: perplexity, the paper's seven zero-shot tasks and generation tasks.

Perplexity follows the protocol of SparseGPT, Wanda and LLM-Pruner: the test split is joined into one
text, tokenized once, cut into non-overlapping windows of `seqlen` tokens, and the perplexity is the
exponential of the mean next-token NLL over every predicted token. The zero-shot tasks run in-process
through lm-evaluation-harness (`paser.recovery.zero_shot`). The generation tasks (`gen_labels`, `gen_longform`)
score the model's greedy answers to held-out prompts (`paser.recovery.generation`). `response_nll` scores held-out
rows on their response tokens, the tokens and mask recovery training uses. `run_eval` is the entry point behind
`paser eval`: it loads a model (and optionally a LoRA adapter), evaluates, and writes `metrics.json` and
`metrics.md`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from paser.common.console import progress_bar, say
from paser.common.io import write_atomic
from paser.common.registry import UnknownNameError, check_name
from paser.data.paths import data_file
from paser.recovery.generation import GENERATION_TASKS, generation_task_file, run_generation_task
from paser.recovery.items import ITEMS_FILE, split_items, write_items
from paser.recovery.models import default_seqlen, max_positions
from paser.recovery.versions import package_versions
from paser.recovery.zero_shot import SOURCES, ZERO_SHOT_TASKS, local_task_files, run_zero_shot
from paser.selection.formatting import EncodedSample

PPL_TASKS: tuple[str, ...] = ("wikitext2", "ptb")
# "all": the paper's tasks. The generation tasks run when named.
ALL_TASKS: tuple[str, ...] = PPL_TASKS + ZERO_SHOT_TASKS
GENERATION_TASK_NAMES: tuple[str, ...] = tuple(GENERATION_TASKS)
KNOWN_TASKS: tuple[str, ...] = ALL_TASKS + GENERATION_TASK_NAMES
# The packages that decide the numbers, recorded with every evaluation.
EVALUATION_PACKAGES = ("paser", "lm_eval", "transformers", "torch", "peft")

# Test splits, relative to the data directory (see the data README, "Perplexity").
PPL_FILES: dict[str, str] = {
    "wikitext2": "eval/wikitext2_raw_v1_test.jsonl",
    "ptb": "eval/ptb.test.txt",
}

# Table columns in the order of the paper's tables: (task, header, metric shown).
# acc_norm where lm-eval's length-normalised accuracy is the reported one (as in LLM-Pruner and PASER);
# BoolQ and WinoGrande have single-token or shared continuations, so lm-eval reports acc for them.
PPL_COLUMNS: tuple[tuple[str, str], ...] = (("wikitext2", "WikiText-2 PPL"), ("ptb", "PTB PPL"))
ACCURACY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("boolq", "BoolQ", "acc"),
    ("piqa", "PIQA", "acc_norm"),
    ("hellaswag", "HellaSwag", "acc_norm"),
    ("winogrande", "WinoGrande", "acc"),
    ("arc_easy", "ARC-e", "acc_norm"),
    ("arc_challenge", "ARC-c", "acc_norm"),
    ("openbookqa", "OBQA", "acc_norm"),
)
MISSING = "–"
GENERATIONS_DIR = "generations"  # beside metrics.json: the generation tasks' cached answers
PARTIAL_AVERAGE = "†"  # marks an Average over fewer than the seven accuracies

# Largest float32 logit block (positions x vocabulary) turned into log-probabilities at once: 2**24
# elements is 64 MiB, about 340 positions of SmolLM2's 49,152-token vocabulary.
_LOGIT_CHUNK_ELEMENTS = 2**24


def parse_tasks(tasks: str | Iterable[str]) -> list[str]:
    """The task names in `tasks` ("wikitext2,piqa", a list, or "all": the paper's nine, not the generation
    tasks), duplicates removed, order kept.

    Refuses (ValueError listing the known names) an unknown task and an empty selection.
    """
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    chosen: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        expanded = list(ALL_TASKS) if name == "all" else [name]
        for task in expanded:
            if task not in KNOWN_TASKS:
                raise UnknownNameError("task", raw.strip(), ("all", *KNOWN_TASKS))
            if task not in chosen:
                chosen.append(task)
    if not chosen:
        raise ValueError(f"no task given; known: all, {', '.join(KNOWN_TASKS)}")
    return chosen


def ppl_file(task: str, data_dir: str | Path | None = None) -> Path:
    """The local test-split file of perplexity task `task`; FileNotFoundError naming it when missing."""
    check_name("perplexity task", task, PPL_TASKS)
    return data_file(PPL_FILES[task], data_dir)


def load_ppl_text(task: str, data_dir: str | Path | None = None) -> str:
    """The evaluation text of a perplexity task, built as SparseGPT/Wanda build it.

    wikitext2: the rows of WikiText-2-raw test joined with "\\n\\n" (1,294,336 characters).
    ptb: the PTB test sentences (each line stripped) joined with " ", as `" ".join(testdata["sentence"])`.
    Refuses an unknown task (ValueError) and a missing file (FileNotFoundError naming it).
    """
    path = ppl_file(task, data_dir)
    if task == "wikitext2":
        with path.open(encoding="utf-8") as stream:
            return "\n\n".join(json.loads(line)["text"] for line in stream)
    # split("\n"), not splitlines(): the file's only line separator is "\n".
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return " ".join(line.strip() for line in lines)


def required_files(
    tasks: str | Iterable[str], data_dir: str | Path | None = None, source: str = "local"
) -> dict[str, list[Path]]:
    """The local files every task in `tasks` reads: {task: [paths]}, empty for zero-shot tasks from the hub.

    Perplexity and generation tasks always read local files; zero-shot tasks do when `source` is "local". Refuses
    an unknown task or source (ValueError) and a missing file (FileNotFoundError naming it), so a run fails before
    it spends time on the tasks that come first.
    """
    check_name("source", source, SOURCES)
    files: dict[str, list[Path]] = {}
    for task in parse_tasks(tasks):
        if task in PPL_TASKS:
            files[task] = [ppl_file(task, data_dir)]
        elif task in GENERATION_TASKS:
            files[task] = [generation_task_file(task, data_dir)]
        elif source == "local":
            files[task] = local_task_files([task], data_dir)[task]
        else:
            files[task] = []
    return files


def _check_counts(limit: int | None, batch_size: int) -> None:
    """Refuse (ValueError) a limit or batch size below 1 before anything loads or runs."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of windows/examples or None, got {limit!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _window_nll_sum(logits: torch.Tensor, window: torch.Tensor) -> float:
    """Sum of next-token NLL (nats) over one window's seqlen-1 predicted tokens, in float32 chunks."""
    predicted = logits[:-1]
    targets = window[1:]
    step = max(1, _LOGIT_CHUNK_ELEMENTS // predicted.shape[-1])
    total = 0.0
    for start in range(0, predicted.shape[0], step):
        chunk = predicted[start : start + step].float()
        total += float(torch.nn.functional.cross_entropy(chunk, targets[start : start + step], reduction="sum"))
    return total


def perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    seqlen: int | None = None,
    batch_size: int = 4,
    limit: int | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Perplexity of `model` on `text` with the SparseGPT/Wanda protocol.

    The text is tokenized once (with the tokenizer's usual specials, so a Llama tokenizer adds one BOS at
    the very start, as in SparseGPT); it is cut into `n = tokens // seqlen` non-overlapping windows (the
    trailing remainder is dropped, as SparseGPT does), the first `limit` of them are kept, and windows run
    through the model `batch_size` at a time. Every window predicts its tokens 2..seqlen from the ones
    before, so it contributes seqlen-1 NLL terms, computed in float32 from the logits.

    Returns {"ppl": exp(mean_nll), "mean_nll": nats per predicted token, "n_tokens": predicted tokens,
    "n_windows": windows evaluated, "seqlen", "windows_available": windows the whole text gives,
    "window_nll": each window's NLL summed over its seqlen-1 predicted tokens (nats), in text order}.

    Deliberate difference from SparseGPT's code: it multiplies each window's mean loss by seqlen, i.e.
    counts seqlen rather than seqlen-1 tokens per window; with equal windows both give the same ppl, and
    `n_tokens` / `mean_nll` here count the tokens actually predicted.

    Memory: the model's logits for one batch (batch_size x seqlen x vocab, in the model's dtype); the
    float32 log-softmax works on chunks of at most 2**24 elements. Works with a peft model as well; the
    model runs in eval mode and is handed back in the mode it came in.
    Refuses (ValueError) seqlen < 2 or beyond the model's maximum positions, batch_size or limit < 1,
    and a text shorter than one window.
    """
    seqlen = default_seqlen(model.config) if seqlen is None else seqlen
    longest = max_positions(model.config)
    if seqlen < 2:
        raise ValueError(f"seqlen must be at least 2, got {seqlen}")
    if longest is not None and seqlen > longest:
        raise ValueError(f"seqlen {seqlen} exceeds the model's maximum positions ({longest})")
    _check_counts(limit, batch_size)
    # verbose=False: the "longer than the maximum sequence length" warning is expected here, as we window.
    input_ids = tokenizer(text, return_tensors="pt", verbose=False).input_ids[0]
    windows_available = input_ids.numel() // seqlen
    if windows_available == 0:
        raise ValueError(f"text has {input_ids.numel()} tokens, fewer than one window of seqlen {seqlen}")
    n_windows = windows_available if limit is None else min(limit, windows_available)
    windows = input_ids[: n_windows * seqlen].view(n_windows, seqlen)
    device = model.get_input_embeddings().weight.device
    window_nll: list[float] = []
    progress = progress_bar(total=n_windows, desc="perplexity", unit="windows", show=show_progress)
    was_training = model.training
    model.eval()  # no dropout; the caller gets the model back in the mode it came in
    try:
        with torch.inference_mode():
            for start in range(0, n_windows, batch_size):
                batch = windows[start : start + batch_size].to(device)
                logits = model(input_ids=batch, use_cache=False).logits
                window_nll += [_window_nll_sum(logits[row], batch[row]) for row in range(batch.shape[0])]
                progress.update(batch.shape[0])
    finally:
        model.train(was_training)
        progress.close()
    n_tokens = n_windows * (seqlen - 1)
    mean_nll = sum(window_nll) / n_tokens
    return {
        # exp overflows past ~709.8 nats; a NaN mean (e.g. fp16 overflow in the model) stays NaN.
        "ppl": math.inf if mean_nll > math.log(sys.float_info.max) else math.exp(mean_nll),
        "mean_nll": mean_nll,
        "n_tokens": n_tokens,
        "n_windows": n_windows,
        "seqlen": seqlen,
        "windows_available": windows_available,
        "window_nll": window_nll,
    }


def response_nll(model: Any, encoded: Sequence[EncodedSample], *, batch_size: int = 8) -> dict[str, float]:
    """Mean negative log-likelihood (nats per response token) of `model` on the rows' response tokens.

    The held-out measure of recovery: same tokens and mask as training. Rows are batched with right padding;
    returns `{"nll", "ppl", "tokens", "rows", "items"}`, `items` being each row's `nll_sum` (nats over its
    response tokens) and `tokens`, in the order of `encoded` (`paser.recovery.items`). Refuses an empty row list.
    """
    if not encoded:
        raise ValueError("response_nll needs at least one row")
    device = next(model.parameters()).device
    row_nll = [0.0] * len(encoded)
    row_tokens = [0] * len(encoded)
    was_training = model.training
    model.eval()
    order = sorted(range(len(encoded)), key=lambda index: encoded[index].length)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [encoded[index] for index in order[start : start + batch_size]]
            width = max(row.length for row in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            attention = torch.zeros(len(batch), width, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for position, row in enumerate(batch):
                length = row.length
                ids[position, :length] = torch.tensor(row.input_ids)
                attention[position, :length] = 1
                labels[position, row.prompt_length : length] = ids[position, row.prompt_length : length]
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
            shifted = labels[:, 1:].to(device)
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), shifted.reshape(-1), ignore_index=-100, reduction="none"
            ).view(len(batch), -1)
            for index, loss, counted in zip(
                order[start : start + batch_size], losses.sum(dim=1), (shifted != -100).sum(dim=1), strict=True
            ):
                row_nll[index] = float(loss)
                row_tokens[index] = int(counted)
    model.train(was_training)
    tokens = sum(row_tokens)
    nll = sum(row_nll) / tokens
    return {
        "nll": nll,
        "ppl": math.exp(nll),
        "tokens": tokens,
        "rows": len(encoded),
        "items": {"nll_sum": row_nll, "tokens": row_tokens},
    }


def _progress(message: str) -> None:
    say(message, component="eval", stderr=True)


def _perplexity_record(
    model: Any,
    tokenizer: Any,
    task: str,
    files: list[Path],
    seqlen: int,
    batch_size: int,
    limit: int | None,
    data_dir: str | Path | None,
) -> dict[str, Any]:
    """One perplexity task's record for `evaluate_model` (metrics, counts, files, seconds, per-window items)."""
    started = time.perf_counter()
    _progress(f"{task}: perplexity on windows of {seqlen} tokens")
    result = perplexity(
        model,
        tokenizer,
        load_ppl_text(task, data_dir),
        seqlen=seqlen,
        batch_size=batch_size,
        limit=limit,
        show_progress=True,
    )
    seconds = time.perf_counter() - started
    _progress(f"{task}: ppl {result['ppl']:.4f} ({result['n_windows']} windows, {seconds:.1f} s)")
    return {
        "metrics": {"ppl": result["ppl"], "mean_nll": result["mean_nll"]},
        "n": result["n_tokens"],
        "n_windows": result["n_windows"],
        "windows_available": result["windows_available"],
        "seqlen": result["seqlen"],
        "source": "local",
        "files": [str(path) for path in files],
        "seconds": seconds,
        "items": {"nll_sum": result["window_nll"], "tokens": [result["seqlen"] - 1] * result["n_windows"]},
    }


def evaluate_model(
    model: Any,
    tokenizer: Any,
    tasks: str | Iterable[str],
    *,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    source: str = "local",
    batch_size: int = 8,
    seqlen: int | None = None,
    seed: int = 0,
    template: str = "auto",
    exclude_prompts: Collection[str] = (),
    generation_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a loaded model on `tasks`; returns the content of `metrics.json`.

    {"tasks": {name: record}, "limit", "seed", "source", "dtype", "device", "versions", "seqlen"}. A
    perplexity record is {"metrics": {"ppl", "mean_nll"}, "n": predicted tokens, "n_windows",
    "windows_available", "seqlen", "source": "local", "files", "seconds", "items": each window's `nll_sum` and
    `tokens`}; a zero-shot record is what `paser.recovery.zero_shot.run_zero_shot` returns for it (`items`: each
    question's correctness); a generation record is what `paser.recovery.generation.run_generation_task` returns
    (prompts formatted with `template`, as training formats them; drawn from the rows whose prompt is not in
    `exclude_prompts`, the prompts a model may have trained on; answers cached in `generation_cache`). `write_results`
    keeps the items apart, in items.npz (`paser.recovery.items`). `limit` caps windows for perplexity, examples for
    zero-shot tasks and prompts for generation tasks. Perplexity and generation read local files (the data
    directory) whatever `source` says; `source` ("local" or "hub") applies to the zero-shot tasks.
    Every data file is checked before anything runs (`required_files`), so a missing one fails fast
    (FileNotFoundError naming it); unknown tasks or sources, and a limit or batch size below 1, raise ValueError.
    """
    _check_counts(limit, batch_size)
    names = parse_tasks(tasks)
    files = required_files(names, data_dir, source)
    ppl_tasks = [name for name in names if name in PPL_TASKS]
    zero_shot_tasks = [name for name in names if name in ZERO_SHOT_TASKS]
    seqlen = default_seqlen(model.config) if seqlen is None else seqlen
    records = {
        task: _perplexity_record(model, tokenizer, task, files[task], seqlen, batch_size, limit, data_dir)
        for task in ppl_tasks
    }
    if zero_shot_tasks:
        _progress(f"zero-shot: {', '.join(zero_shot_tasks)}" + (f" (limit {limit})" if limit else ""))

        def report(task: str, record: dict[str, Any]) -> None:
            _progress(f"{task}: acc {record['metrics']['acc']:.4f} (n={record['n']}, {record['seconds']:.1f} s)")

        records.update(
            run_zero_shot(
                model,
                tokenizer,
                zero_shot_tasks,
                limit=limit,
                data_dir=data_dir,
                source=source,
                batch_size=batch_size,
                seed=seed,
                on_result=report,
            )
        )
    for task in (name for name in names if name in GENERATION_TASKS):
        _progress(f"{task}: greedy answers" + (f" (limit {limit})" if limit else ""))
        records[task] = run_generation_task(
            model,
            tokenizer,
            task,
            limit=limit,
            data_dir=data_dir,
            template=template,
            batch_size=batch_size,
            cache_dir=None if generation_cache is None else Path(generation_cache),
            exclude=exclude_prompts,
        )
        metrics = ", ".join(f"{key} {value:.4f}" for key, value in _shown_metrics(records[task]).items())
        _progress(f"{task}: {metrics} (n={records[task]['n']}, {records[task]['seconds']:.1f} s)")
    # The embedding's dtype is the model's: with an adapter, the first parameter may be a float32 LoRA weight.
    embedding = model.get_input_embeddings().weight
    return {
        "tasks": {name: records[name] for name in names},
        "limit": limit,
        "seed": seed,
        "source": source,
        "dtype": str(embedding.dtype).replace("torch.", ""),
        "device": str(embedding.device),
        "versions": package_versions(EVALUATION_PACKAGES),
        "seqlen": seqlen,
    }


def _shown_metrics(record: dict[str, Any]) -> dict[str, float]:
    """A task record's metrics without standard errors or missing values."""
    return {
        metric: value
        for metric, value in record["metrics"].items()
        if not metric.endswith("_stderr") and value is not None
    }


def run_eval(
    model: str,
    *,
    adapter: str | Path | None = None,
    tasks: str | Iterable[str] = ALL_TASKS,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    source: str = "local",
    dtype: str = "auto",
    device: str | None = None,
    batch_size: int = 8,
    seqlen: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Load `model` (a path, hub id or alias such as `smollm2`), optionally with a peft `adapter` folder,
    evaluate it on `tasks` and return the `evaluate_model` record plus "model" and "adapter".

    With `out_dir`, also writes `metrics.json` (that record without its per-item values), `metrics.md` (the
    paper-shaped table and per-task details) and `items.npz` (the per-item values) atomically, and caches the
    generation tasks' answers in `out_dir/generations/`. The task names,
    every data file, the adapter folder and the device are checked before the model loads. Refuses a missing
    model path and a checkpoint or adapter whose files cannot be read (`ModelLoadError` naming the file), a missing
    adapter folder or data file (FileNotFoundError naming it), unknown
    tasks or sources, a limit or batch size below 1 and a CUDA device this torch cannot use (ValueError).
    """
    from paser.recovery.models import check_adapter, load_adapter, load_model, resolve_device

    resolve_device(device)
    _check_counts(limit, batch_size)
    names = parse_tasks(tasks)
    required_files(names, data_dir, source)
    adapter_path = None if adapter is None else check_adapter(adapter)
    loaded, tokenizer = load_model(model, dtype=dtype, device=device)
    if adapter_path is not None:
        loaded = load_adapter(loaded, adapter_path)
    loaded.eval()
    record = {
        "model": model,
        "adapter": None if adapter_path is None else str(adapter_path),
        **evaluate_model(
            loaded,
            tokenizer,
            names,
            limit=limit,
            data_dir=data_dir,
            source=source,
            batch_size=batch_size,
            seqlen=seqlen,
            seed=seed,
            generation_cache=None if out_dir is None else Path(out_dir) / GENERATIONS_DIR,
        ),
    }
    if out_dir is not None:
        write_results(record, out_dir)
    return record


def result_label(record: dict[str, Any]) -> str:
    """The row name of an evaluation record: its model, plus its adapter when it has one."""
    model = str(record.get("model", "model"))
    return f"{model} + {record['adapter']}" if record.get("adapter") else model


def write_results(record: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `metrics.json` and `metrics.md` for one evaluation record into `out_dir`, each atomically, and its
    per-item values (`items` of its tasks and held-out set) apart in `items.npz` (`paser.recovery.items`), first, so
    that a metrics.json never sits beside the items of an older evaluation.

    Returns the paths of metrics.json and metrics.md.
    """
    out_dir = Path(out_dir)
    record, items = split_items(record)
    if items:
        write_items(items, out_dir)
    else:
        (out_dir / ITEMS_FILE).unlink(missing_ok=True)
    json_text = json.dumps(record, indent=2) + "\n"
    markdown = metrics_markdown(record)
    json_path = write_atomic(out_dir / "metrics.json", lambda path: path.write_text(json_text, encoding="utf-8"))
    markdown_path = write_atomic(out_dir / "metrics.md", lambda path: path.write_text(markdown, encoding="utf-8"))
    return json_path, markdown_path


def _format_metric(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def metrics_markdown(record: dict[str, Any]) -> str:
    """`metrics.md`: the paper-shaped table for one record, then every task's metrics, n and time, then
    the settings (limit, seed, dtype, device, seqlen, versions)."""
    lines = [f"# Evaluation: {result_label(record)}", "", results_table({result_label(record): record}), ""]
    lines += ["| task | metric | value | stderr | n | seconds |", "|---|---|---:|---:|---:|---:|"]
    for task, task_record in record["tasks"].items():
        metrics = task_record["metrics"]
        for metric, value in metrics.items():
            if metric.endswith("_stderr"):
                continue
            stderr = metrics.get(f"{metric}_stderr")
            lines.append(
                f"| {task} | {metric} | {_format_metric(value)} | {_format_metric(stderr)} | "
                f"{task_record['n']} | {task_record['seconds']:.1f} |"
            )
    versions = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
    lines += [
        "",
        f"limit: {record['limit']}; seed: {record['seed']}; source: {record['source']}; "
        f"dtype: {record['dtype']}; device: {record['device']}; seqlen: {record['seqlen']}",
        f"versions: {versions}",
        "",
    ]
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table in the shape of the paper's tables: one row per named evaluation record.

    Columns: WikiText-2 PPL, PTB PPL, BoolQ, PIQA, HellaSwag, WinoGrande, ARC-e, ARC-c, OBQA, Average.
    PPL to 2 decimals; accuracies in % to 2 decimals, acc_norm for PIQA, HellaSwag, ARC-e, ARC-c and
    OBQA and acc for BoolQ and WinoGrande (a footnote says so). A task the record lacks shows "–". The
    Average is over the seven accuracies; with some missing it is the mean of those present, marked "†"
    and footnoted (so a `--limit` run on a few tasks still shows one); with none it is "–". Rows
    evaluated with a limit are listed in a footnote. Refuses (ValueError) a record whose task lacks the
    metric its column shows.
    """
    header = ["Model", *(title for _, title in PPL_COLUMNS), *(title for _, title, _ in ACCURACY_COLUMNS), "Average"]
    rows: list[list[str]] = []
    partial_average = False
    limited: list[str] = []
    for name, record in results.items():
        tasks = record["tasks"]
        cells = [_markdown_cell(name)]
        for task, _ in PPL_COLUMNS:
            cells.append(f"{tasks[task]['metrics']['ppl']:.2f}" if task in tasks else MISSING)
        accuracies = []
        for task, _, metric in ACCURACY_COLUMNS:
            if task not in tasks:
                cells.append(MISSING)
                continue
            value = tasks[task]["metrics"].get(metric)
            if value is None:
                raise ValueError(f"result {name!r}: task {task} has no {metric}, which its column shows")
            accuracies.append(value)
            cells.append(f"{100 * value:.2f}")
        if len(accuracies) == len(ACCURACY_COLUMNS):
            cells.append(f"{100 * sum(accuracies) / len(accuracies):.2f}")
        elif accuracies:
            partial_average = True
            cells.append(f"{100 * sum(accuracies) / len(accuracies):.2f}{PARTIAL_AVERAGE}")
        else:
            cells.append(MISSING)
        rows.append(cells)
        if record.get("limit") is not None:
            limited.append(f"{_markdown_cell(name)} ({record['limit']})")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    separator = [":" + "-" * (widths[0] - 1)] + ["-" * (width - 1) + ":" for width in widths[1:]]

    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    lines = [line(header), line(separator), *(line(row) for row in rows), ""]
    lines.append(
        "Accuracies in %: acc_norm for PIQA, HellaSwag, ARC-e, ARC-c and OBQA; acc for BoolQ and WinoGrande. "
        "PPL: lower is better."
    )
    if partial_average:
        lines.append(
            f"{PARTIAL_AVERAGE} Mean of the accuracies present only (fewer than seven): not comparable to a full one."
        )
    if limited:
        lines.append(
            "Evaluated with a limit (first N windows per PPL task, first N examples per zero-shot task): "
            + ", ".join(limited)
            + "."
        )
    return "\n".join(lines)


def format_summary(record: dict[str, Any]) -> str:
    """A one-screen text of an evaluation record for the CLI: settings, one line per task, and the table."""
    head = f"paser eval: {result_label(record)} ({record['dtype']} on {record['device']}, seed {record['seed']}"
    head += f", limit {record['limit']})" if record["limit"] is not None else ")"
    lines = [head]
    for task, task_record in record["tasks"].items():
        metrics = task_record["metrics"]
        if task in PPL_TASKS:
            detail = (
                f"ppl {metrics['ppl']:.4f}  mean NLL {metrics['mean_nll']:.4f} nats  "
                f"{task_record['n_windows']} windows x {task_record['seqlen']}  {task_record['n']} tokens"
            )
        elif task in GENERATION_TASKS:
            shown = "  ".join(f"{metric} {value:.4f}" for metric, value in _shown_metrics(task_record).items())
            detail = f"{shown}  n={task_record['n']}"
        else:
            parts = []
            for metric in ("acc", "acc_norm"):
                if metrics.get(metric) is None:
                    continue
                stderr = metrics.get(f"{metric}_stderr")
                parts.append(f"{metric} {metrics[metric]:.4f}" + ("" if stderr is None else f" ± {stderr:.4f}"))
            detail = "  ".join(parts) + f"  n={task_record['n']}"
        lines.append(f"  {task:<14} {detail}  ({task_record['seconds']:.1f} s)")
    lines += ["", results_table({result_label(record): record})]
    return "\n".join(lines)
