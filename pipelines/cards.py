"""Artifacts others can load without paser: a selection as a Hugging Face `datasets` folder with its card.

`write_selection_dataset` saves the rows of `selection.jsonl` (every field any row has: `selection_table`) with
`datasets.Dataset.save_to_disk` and writes `README.md` beside them: a dataset card whose YAML header the hub reads
(pretty_name, license, task categories, size, tags) and whose body says where the rows come from (the source and
its content digest), how they were chosen (strategy, budget, model pair, the per-cluster table) and how to load
them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from paser.common.io import give_ordinary_modes

# The size buckets of the hub's `size_categories` tag: (upper bound, label).
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)

COLUMN_MEANINGS = """\
| column | meaning |
| --- | --- |
| `id` | paser's id of the row: its `corpus.id_field` where one is set, else its 0-based position in the source |
| `source_<name>` | the row's own field `<name>` where the source has one named like a column paser adds (`id`, \
`cluster`, `cds`, `ies`): a row's own `id` is `source_id`, the key to join the subset back to the source |
| `cluster` | the semantic cluster the row was assigned to (its prompt and response embeddings, clustered) |
| `cds` | capability degradation score: the mean, over the response tokens, of the Jensen-Shannon divergence \
between the original and the pruned model's next-token distributions (nats, in [0, ln 2]; higher: the pruning \
hurt this row more) |
| `ies` | information efficiency score: `cds / log(cost)`, the cost growing with the row's prompt and response \
tokens (`paser.selection.prioritize.efficiency_score`); rows are taken in this order within a cluster |"""


def size_category(rows: int) -> str:
    """The hub's `size_categories` label for a dataset of `rows` rows."""
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return "n>1T"


def source_license(source: str) -> str:
    """The source corpus's license where it states one: the `license` of a dataset card (README.md YAML
    header) or of `dataset_info.json` in the source folder (or the folder of a source file); else `unknown`."""
    path = Path(source).expanduser()
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        return "unknown"
    card = folder / "README.md"
    if card.is_file():
        header = card_header(card.read_text(encoding="utf-8"))
        if isinstance(header, dict) and header.get("license"):
            return str(header["license"])
    info = folder / "dataset_info.json"
    if info.is_file():
        try:
            license_name = json.loads(info.read_text(encoding="utf-8")).get("license")
        except (json.JSONDecodeError, AttributeError):
            license_name = None
        if license_name:
            return str(license_name)
    return "unknown"


def card_header(text: str) -> Any:
    """The YAML between a card's first two `---` lines, parsed; None when the text has no such header or it
    is not valid YAML."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    try:
        end = next(index for index, line in enumerate(lines[1:], start=1) if line.strip() == "---")
    except StopIteration:
        return None
    try:
        return yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return None


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def cluster_table_markdown(clusters: list[dict[str, Any]]) -> str:
    """stats.json's per-cluster rows as a markdown table: cluster, size, mean CDS, budget, selected."""
    lines = ["| cluster | size | mean CDS | budget | selected |", "| --: | --: | --: | --: | --: |"]
    for row in sorted(clusters, key=lambda row: row["cluster"]):
        cells = (row["cluster"], row["size"], row["mean_cds"], row.get("budget"), row["selected"])
        lines.append("| " + " | ".join(_cell(value) for value in cells) + " |")
    return "\n".join(lines)


def dataset_card(stats: dict[str, Any], source_digest: str, json_columns: tuple[str, ...] = ()) -> str:
    """The dataset card (README.md) of a selection, from its stats.json payload, its source's digest
    (`paser.pipelines.stages.source_identity`) and the columns stored as JSON text (`selection_table`)."""
    config = stats["config"]
    totals = stats["totals"]
    source = str(config["corpus"]["path"])
    strategy = stats["strategy"]["name"]
    header = {
        "pretty_name": f"PASER selection ({strategy}) of {Path(source).name or source}",
        "license": source_license(source),
        "task_categories": ["text-generation"],
        "size_categories": [size_category(totals["selected"])],
        "tags": ["paser", "data-selection"],
    }
    if totals.get("budget_kind") == "tokens":
        budget = f"`{totals['budget_requested']}`: {totals['budget_tokens']:,} tokens"
    else:
        budget = f"`{totals['budget_requested']}`: {totals['budget']:,} rows"
    models = config["models"]
    options = f" {json.dumps(stats['strategy']['options'])}" if stats["strategy"].get("options") else ""
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# {header["pretty_name"]}

{totals["selected"]:,} rows ({totals["selected_tokens"]:,} prompt + response tokens) chosen by `paser select` from
{totals["rows_scored"]:,} scored rows of the source corpus, as the post-training data that best repairs the pruned
model below. The rows keep their original fields, in selection order.

| | |
| --- | --- |
| source corpus | `{source}` (split `{config["corpus"].get("split")}`) |
| source digest | `{source_digest}` |
| rows read / valid / scored | {totals["rows_read"]:,} / {totals["rows_valid"]:,} / {totals["rows_scored"]:,} |
| strategy | `{strategy}`{options} |
| budget | {budget} |
| original model | `{models["original"]}` |
| pruned model | `{models["pruned"]}` |
| clusters | {totals["clusters"]} |
| mean CDS (all scored / selected) | {_cell(totals["mean_cds"])} / {_cell(totals["mean_cds_selected"])} |
| paser version | {stats["versions"].get("paser", "unknown")} |

## Columns added by paser

Every field of the source rows is kept; a field some rows lack is empty (None) in those rows.

{COLUMN_MEANINGS}
{_json_columns_note(json_columns)}
## Clusters

`budget` is the rows the strategy allotted to the cluster, `selected` the rows it took.

{cluster_table_markdown(stats["clusters"])}

## Loading

```python
from datasets import load_from_disk

rows = load_from_disk("path/to/dataset")  # this folder
rows[0]["id"], rows[0]["cds"]
```

The same rows, as JSON Lines, are `selection.jsonl` in the folder above; `stats.json` there holds the full
statistics and the configuration that produced them.
"""


def _json_columns_note(names: tuple[str, ...]) -> str:
    if not names:
        return ""
    listed = ", ".join(f"`{name}`" for name in names)
    return (
        f"\n{listed}: the values of this field mix types across rows (numbers and text, say), which one Arrow column "
        "cannot hold, so each value is stored as its JSON text (`json.loads` gives it back; None stays None).\n"
    )


def selection_table(rows: list[dict[str, Any]]) -> tuple[pa.Table, tuple[str, ...]]:
    """`rows` as an Arrow table and the columns stored as JSON text. One column per field that any row has, in
    the order fields first appear, None where a row lacks the field: a corpus of Alpaca and chat rows keeps both
    kinds' fields (`datasets.Dataset.from_list` takes the columns of the first row only). A field whose values
    no one Arrow type holds (ids that are numbers in some rows and text in others, an integer past 64 bits) is
    stored as each value's JSON text rather than refused or dropped."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns: dict[str, pa.Array] = {}
    as_json = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            texts = [None if value is None else json.dumps(value, ensure_ascii=False) for value in values]
            columns[name] = pa.array(texts, pa.string())
            as_json.append(name)
    return pa.table(columns), tuple(as_json)


def write_selection_dataset(folder: Path, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Path:
    """Save `rows` (as written to selection.jsonl, in that order) as a `datasets` folder at `folder` with
    its card (`dataset_card`) as `folder/README.md`; returns `folder`.

    The columns are every field of any row (`selection_table`). Written into a temporary sibling folder, then
    renamed into place, so a reader never sees half a dataset; an earlier `folder` is replaced.
    """
    from datasets import Dataset

    # Imported here: pipelines.stages imports pipelines.select, which imports this module.
    from paser.pipelines.stages import source_identity

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        table, json_columns = selection_table(rows)
        Dataset(table).save_to_disk(str(staging))
        card = dataset_card(stats, source_identity(str(stats["config"]["corpus"]["path"])), json_columns)
        (staging / "README.md").write_text(card, encoding="utf-8")
        give_ordinary_modes(staging)
        if folder.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            folder.rename(retired / folder.name)
            staging.rename(folder)
            shutil.rmtree(retired)
        else:
            staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return folder
