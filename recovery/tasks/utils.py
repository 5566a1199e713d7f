"""Offline loaders for the seven zero-shot tasks: the local files of the data README (`eval/`) as lm-eval docs.

Each `load_*` function is the `custom_dataset` of one task YAML in this folder. lm-eval calls it with the task's
metadata as keyword arguments (`data_dir` from `TaskManager(metadata=...)`, plus its own `version` and
`config_source`), and it returns a `DatasetDict` with one split. The `*_doc` functions turn one local row into the
fields that lm-eval's stock YAML for that task reads (`goal`/`sol1`/`sol2`, `passage`/`question`, `question`,
`question_stem`, ...), with the gold answer always in `label` and the answer texts in `choices`. The YAMLs can then
keep lm-eval's prompts word for word.

Known differences from lm-eval's hub data, which the local files cannot undo:
- HellaSwag: the file is klosax's preprocessed text, used as it is. Its context keeps `ctx_b` lower-case
  ("... on a roof. he"), where lm-eval capitalises it, and its tag removal differs slightly from lm-eval's regex.
- BoolQ: lm-eval reads SuperGLUE, whose passage starts with the Wikipedia title ("Ethanol fuel -- All biomass
  ..."). The llm-foundry file has no title, so the local passage starts at "All biomass ...".
"""

from __future__ import annotations

import bz2
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paser.data.paths import data_file

# Paths relative to the data directory, in the order each loader reads them.
TASK_FILES: dict[str, tuple[str, ...]] = {
    "boolq": ("eval/boolq_dev.llmfoundry.jsonl",),
    "piqa": ("eval/piqa_valid.jsonl", "eval/piqa_valid-labels.lst"),
    "hellaswag": ("eval/hellaswag_val_full.txt.bz2",),
    "winogrande": ("eval/winogrande_dev.llmfoundry.jsonl",),
    "arc_easy": ("eval/arc_easy_test.llmfoundry.jsonl",),
    "arc_challenge": ("eval/arc_challenge_test.llmfoundry.jsonl",),
    "openbookqa": ("eval/openbookqa_test.llmfoundry.jsonl",),
}

HELLASWAG_LINES_PER_ITEM = 6  # context, gold label, then four endings
BOOLQ_PASSAGE_PREFIX = "Passage: "
BOOLQ_QUESTION_MARKER = "\nQuestion: "
ARC_QUESTION_PREFIX = "Question: "


def _gold(value: Any, n_choices: int, field: str, where: str) -> int:
    """`value` as a 0-based choice index; refuses anything but an int in range(n_choices)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_choices:
        raise ValueError(f"{where}: field {field!r} must be an int in [0, {n_choices}), got {value!r}")
    return value


def _field(row: dict[str, Any], field: str, where: str) -> Any:
    if field not in row:
        raise ValueError(f"{where}: missing field {field!r}")
    return row[field]


def _choices(row: dict[str, Any], where: str) -> list[str]:
    choices = _field(row, "choices", where)
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"{where}: field 'choices' must be a list of at least two strings")
    return choices


def piqa_doc(row: dict[str, Any], label: str, where: str) -> dict[str, Any]:
    """One PIQA row and its line of the labels file as lm-eval `piqa` fields: goal, sol1, sol2, label (0 or 1)."""
    if label not in ("0", "1"):
        raise ValueError(f"{where}: PIQA label must be 0 or 1, got {label!r}")
    return {
        "goal": _field(row, "goal", where),
        "sol1": _field(row, "sol1", where),
        "sol2": _field(row, "sol2", where),
        "label": int(label),
    }


def boolq_doc(row: dict[str, Any], where: str) -> dict[str, Any]:
    """An llm-foundry BoolQ row as lm-eval `boolq` fields: passage, question (no "?"), choices, label (1 = yes).

    The query is "Passage: {passage}\\nQuestion: {question}?"; it is split on the last "\\nQuestion: " because one
    passage contains that string itself. The trailing "?" is dropped because lm-eval's prompt adds it.
    """
    query = _field(row, "query", where)
    passage, marker, question = query.rpartition(BOOLQ_QUESTION_MARKER)
    if not marker or not passage.startswith(BOOLQ_PASSAGE_PREFIX) or not question.endswith("?"):
        raise ValueError(f"{where}: field 'query' is not 'Passage: ...\\nQuestion: ...?'")
    choices = _choices(row, where)
    if choices != ["no", "yes"]:
        raise ValueError(f"{where}: field 'choices' must be ['no', 'yes'], got {choices!r}")
    return {
        "passage": passage[len(BOOLQ_PASSAGE_PREFIX) :],
        "question": question[:-1],
        "choices": choices,
        "label": _gold(_field(row, "gold", where), 2, "gold", where),
    }


def hellaswag_doc(lines: list[str], where: str) -> dict[str, Any]:
    """The six lines of one HellaSwag item as lm-eval `hellaswag` docs after its `process_docs`: query,
    choices (four endings), label. The text is the file's, already preprocessed (see the module docstring)."""
    if len(lines) != HELLASWAG_LINES_PER_ITEM:
        raise ValueError(f"{where}: a HellaSwag item has {HELLASWAG_LINES_PER_ITEM} lines, got {len(lines)}")
    context, label, *endings = lines
    if label not in ("0", "1", "2", "3"):
        raise ValueError(f"{where}: HellaSwag gold label line must be 0-3, got {label!r}")
    return {"query": context, "choices": endings, "label": int(label)}


def winogrande_doc(row: dict[str, Any], where: str) -> dict[str, Any]:
    """An llm-foundry WinoGrande row for lm-eval's partial scoring: context_options, continuation, label.

    lm-eval `winogrande` returns the gold index from `doc_to_text`, the two contexts (sentence up to "_" with
    each option filled in) from `doc_to_choice` and the shared continuation from `doc_to_target`, then scores
    logP(" " + continuation | context_i). The local fields are exactly those contexts and that continuation.
    """
    contexts = _field(row, "context_options", where)
    if not isinstance(contexts, list) or len(contexts) != 2 or not all(isinstance(c, str) for c in contexts):
        raise ValueError(f"{where}: field 'context_options' must be a list of two strings")
    return {
        "context_options": contexts,
        "continuation": _field(row, "continuation", where),
        "label": _gold(_field(row, "gold", where), 2, "gold", where),
    }


def arc_doc(row: dict[str, Any], where: str) -> dict[str, Any]:
    """An llm-foundry ARC row as lm-eval `arc_*` fields: question (without "Question: "), choices, label."""
    query = _field(row, "query", where)
    if not query.startswith(ARC_QUESTION_PREFIX):
        raise ValueError(f"{where}: field 'query' does not start with {ARC_QUESTION_PREFIX!r}")
    choices = _choices(row, where)
    return {
        "question": query[len(ARC_QUESTION_PREFIX) :],
        "choices": choices,
        "label": _gold(_field(row, "gold", where), len(choices), "gold", where),
    }


def openbookqa_doc(row: dict[str, Any], where: str) -> dict[str, Any]:
    """An llm-foundry OpenBookQA row as lm-eval `openbookqa` fields: question_stem, choices, label."""
    choices = _choices(row, where)
    return {
        "question_stem": _field(row, "query", where),
        "choices": choices,
        "label": _gold(_field(row, "gold", where), len(choices), "gold", where),
    }


def _jsonl_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for each line; `where` is "file:line" for error messages. A blank line is refused too: PIQA's
    labels align with its questions by line number."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object")
            rows.append((where, row))
    return rows


def _split(name: str, docs: list[dict[str, Any]]) -> Any:
    """A DatasetDict with the single split `name` holding `docs`."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({name: Dataset.from_list(docs)})


def _jsonl_task(
    task: str, convert: Callable[[dict[str, Any], str], dict[str, Any]], split: str, data_dir: str | None
) -> Any:
    (relative,) = TASK_FILES[task]
    docs = [convert(row, where) for where, row in _jsonl_rows(data_file(relative, data_dir))]
    return _split(split, docs)


# lm-eval passes every metadata key (`version`, `config_source`, ...) to `custom_dataset`; the loaders read only
# `data_dir` and take the rest in `**_metadata`.


def load_piqa(data_dir: str | None = None, **_metadata: Any) -> Any:
    """PIQA validation (1,838 items): `DatasetDict(validation=...)` of `piqa_doc` rows.

    Refuses a labels file whose line count differs from the questions file."""
    questions_file, labels_file = (data_file(relative, data_dir) for relative in TASK_FILES["piqa"])
    rows = _jsonl_rows(questions_file)
    labels = labels_file.read_text(encoding="utf-8").splitlines()
    if len(labels) != len(rows):
        raise ValueError(f"{labels_file} has {len(labels)} labels for {len(rows)} questions in {questions_file}")
    return _split("validation", [piqa_doc(row, label, where) for (where, row), label in zip(rows, labels, strict=True)])


def load_boolq(data_dir: str | None = None, **_metadata: Any) -> Any:
    """BoolQ dev (3,270 items): `DatasetDict(validation=...)` of `boolq_doc` rows."""
    return _jsonl_task("boolq", boolq_doc, "validation", data_dir)


def load_hellaswag(data_dir: str | None = None, **_metadata: Any) -> Any:
    """HellaSwag validation (10,042 items): `DatasetDict(validation=...)` of `hellaswag_doc` rows.

    Refuses a file whose line count is not a multiple of six."""
    (relative,) = TASK_FILES["hellaswag"]
    path = data_file(relative, data_dir)
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if len(lines) % HELLASWAG_LINES_PER_ITEM:
        raise ValueError(f"{path}: {len(lines)} lines is not a multiple of {HELLASWAG_LINES_PER_ITEM}")
    docs = [
        hellaswag_doc(lines[start : start + HELLASWAG_LINES_PER_ITEM], f"{path}:{start + 1}")
        for start in range(0, len(lines), HELLASWAG_LINES_PER_ITEM)
    ]
    return _split("validation", docs)


def load_winogrande(data_dir: str | None = None, **_metadata: Any) -> Any:
    """WinoGrande dev (1,267 items): `DatasetDict(validation=...)` of `winogrande_doc` rows."""
    return _jsonl_task("winogrande", winogrande_doc, "validation", data_dir)


def load_arc_easy(data_dir: str | None = None, **_metadata: Any) -> Any:
    """ARC-Easy test (2,376 items): `DatasetDict(test=...)` of `arc_doc` rows."""
    return _jsonl_task("arc_easy", arc_doc, "test", data_dir)


def load_arc_challenge(data_dir: str | None = None, **_metadata: Any) -> Any:
    """ARC-Challenge test (1,172 items): `DatasetDict(test=...)` of `arc_doc` rows."""
    return _jsonl_task("arc_challenge", arc_doc, "test", data_dir)


def load_openbookqa(data_dir: str | None = None, **_metadata: Any) -> Any:
    """OpenBookQA test (500 items): `DatasetDict(test=...)` of `openbookqa_doc` rows."""
    return _jsonl_task("openbookqa", openbookqa_doc, "test", data_dir)
