"""The paper's seven zero-shot tasks, run in-process through lm-evaluation-harness on a loaded model.

`run_zero_shot` wraps a transformers model (or a peft `PeftModel`) in lm-eval's `HFLM` and scores it with
`lm_eval.simple_evaluate`, one task at a time so that each task reports its own item count and wall time.
Two sources of task data:
- `local` (default, offline): the YAML configs in `recovery/tasks` (`paser_<task>`) read the files listed in
  `TASK_FILES` from the data directory (`data_dir` argument, else `$PASER_DATA_DIR`, else `../shared/data`). They
  keep lm-eval's prompts, choices and metrics; `recovery/tasks/utils.py` says where the local data differs.
- `hub`: lm-eval's stock tasks under the same names, which download their datasets from the Hugging Face hub.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from paser.common.registry import check_name
from paser.data.paths import data_dir as resolve_data_dir
from paser.data.paths import data_file
from paser.recovery.tasks import LOCAL_TASK_PREFIX, TASKS_DIR
from paser.recovery.tasks.utils import TASK_FILES

ZERO_SHOT_TASKS: tuple[str, ...] = (
    "boolq",
    "piqa",
    "hellaswag",
    "winogrande",
    "arc_easy",
    "arc_challenge",
    "openbookqa",
)
SOURCES: tuple[str, ...] = ("local", "hub")

# Every metric of these tasks aggregates by mean, whose stderr lm-eval computes in closed form; bootstrap_iters
# only has to be positive for stderr to be reported, and bounds the cost should a bootstrapped metric appear.
BOOTSTRAP_ITERS = 1000

# lm-eval warnings that every run here triggers by design: we pass a loaded model, and our loaders already take
# `data_dir` through the task metadata.
_EXPECTED_WARNINGS = (
    "`pretrained` model kwarg is not of type `str`",
    "Passed an already-initialized model through `pretrained`",
    "Custom kwargs can be passed to `--metadata`",
)


class _DropExpectedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(expected in message for expected in _EXPECTED_WARNINGS)


@contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval logs at warning level and above, without the expected warnings; tqdm progress bars still show."""
    root = logging.getLogger("lm_eval")
    noisy = [logging.getLogger("lm_eval.api.task"), logging.getLogger("lm_eval.models.huggingface")]
    previous_level = root.level
    drop = _DropExpectedWarnings()
    root.setLevel(logging.WARNING)
    for logger in noisy:
        logger.addFilter(drop)
    try:
        yield
    finally:
        root.setLevel(previous_level)
        for logger in noisy:
            logger.removeFilter(drop)


def _check_request(tasks: Sequence[str], source: str, limit: int | None) -> list[str]:
    """The requested tasks in order, without repeats; refuses unknown tasks, an unknown source or a bad limit."""
    if isinstance(tasks, str):
        raise ValueError(f"tasks must be a sequence of task names, not the string {tasks!r}")
    for task in tasks:
        check_name("zero-shot task", task, ZERO_SHOT_TASKS)
    if not tasks:
        raise ValueError(f"no zero-shot tasks given; known: {', '.join(ZERO_SHOT_TASKS)}")
    check_name("zero-shot source", source, SOURCES)
    # lm-eval reads a limit below 1 as a fraction of the task; ours is always a count of items.
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of items or None, got {limit!r}")
    return list(dict.fromkeys(tasks))


def local_task_files(tasks: Sequence[str], data_dir: str | Path | None = None) -> dict[str, list[Path]]:
    """The local files each zero-shot task reads, {task: [paths]}; FileNotFoundError naming a missing one."""
    root = resolve_data_dir(data_dir)
    return {task: [data_file(relative, root) for relative in TASK_FILES[task]] for task in tasks}


def _metrics(task_results: dict[str, Any]) -> dict[str, float | None]:
    """lm-eval's `{"acc,none": ..., "acc_stderr,none": "N/A", "alias": ...}` as `{"acc": ..., "acc_stderr": None}`."""
    metrics: dict[str, float | None] = {}
    for key, value in task_results.items():
        name, separator, _filter = key.partition(",")
        if not separator:
            continue  # "alias" and other labels, not metrics
        metrics[name] = None if value in (None, "N/A") else float(value)
    return metrics


def _items(samples: list[dict[str, Any]] | None, metrics: dict[str, float | None]) -> dict[str, list[float]]:
    """Each question's value of every reported metric lm-eval scores per question (acc, acc_norm: 1.0 or 0.0), in
    document order; empty without logged samples."""
    if not samples:
        return {}
    ordered = sorted(samples, key=lambda sample: sample["doc_id"])
    names = [name for name in metrics if name in ordered[0] and not name.endswith("_stderr")]
    return {name: [float(sample[name]) for sample in ordered] for name in names}


def run_zero_shot(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    source: str = "local",
    batch_size: int = 8,
    seed: int = 0,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Zero-shot scores of `model` on `tasks` (names from `ZERO_SHOT_TASKS`), in the order given, each once.

    Returns `{task: {"metrics", "n", "source", "files", "seconds", "items"}}`: `metrics` is what lm-eval reports for the
    task (`acc` and `acc_stderr` for every task, `acc_norm` and `acc_norm_stderr` too except for BoolQ and
    WinoGrande; accuracies are fractions in [0, 1], stderr None where lm-eval gives none), `n` the number of items
    scored (the first `limit` of the task, or all), `source` the data source, `files` the local files read (empty
    for `hub`), `seconds` the wall time of the task, and `items` each question's acc (and acc_norm), in document
    order, where lm-eval logged them (`paser.recovery.items`). `on_result(task, record)` is called as each task
    finishes, so a caller can report progress. The model is scored in eval mode and handed back in the
    train/eval mode it came in. Refuses (ValueError) an empty task list, an unknown task or source and a limit below 1,
    and
    (FileNotFoundError naming it) a missing data directory or file, before any scoring starts.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks = _check_request(tasks, source, limit)
    if source == "local":
        root = resolve_data_dir(data_dir)
        files = {task: [str(path) for path in paths] for task, paths in local_task_files(tasks, root).items()}
        names = {task: LOCAL_TASK_PREFIX + task for task in tasks}
        # Indexing only our folder takes well under a second; lm-eval's defaults are thousands of YAMLs (~14 s).
        task_manager = TaskManager(
            include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(root)}
        )
    else:
        files = {task: [] for task in tasks}
        names = {task: task for task in tasks}
        task_manager = TaskManager()

    was_training = model.training
    results: dict[str, dict[str, Any]] = {}
    try:
        with _quiet_lm_eval():
            # HFLM puts the model in eval mode; `finally` restores the caller's mode.
            language_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            for task in tasks:
                name = names[task]
                start = time.perf_counter()
                output = lm_eval.simple_evaluate(
                    model=language_model,
                    tasks=[name],
                    limit=limit,
                    bootstrap_iters=BOOTSTRAP_ITERS,
                    log_samples=True,  # for each question's correctness (`items`)
                    task_manager=task_manager,
                    random_seed=seed,
                    numpy_random_seed=seed,
                    torch_random_seed=seed,
                    fewshot_random_seed=seed,
                )
                results[task] = {
                    "metrics": _metrics(output["results"][name]),
                    "n": int(output["n-samples"][name]["effective"]),
                    "source": source,
                    "files": files[task],
                    "seconds": time.perf_counter() - start,
                }
                items = _items(output.get("samples", {}).get(name), results[task]["metrics"])
                if items:
                    results[task]["items"] = items
                if on_result is not None:
                    on_result(task, results[task])
    finally:
        model.train(was_training)
    return results
