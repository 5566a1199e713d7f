"""The held-out sets of `paser run`: the `evaluation.heldout` mapping, each set's rows, and its response NLL.

`evaluation.heldout` maps a set name (`[a-z0-9_]+`, it becomes part of metric names) to one of:

- an int N > 0: N rows split off the corpus (seeded, spread over it) and kept out of every selection; at
  most one entry may be an int;
- `builtin:NAME` or `builtin:NAME:LIMIT`: a set built from the shared data by `paser.data.heldout` (gsm8k,
  humaneval, t0), at most LIMIT rows (default: the set's own default);
- any other string: a file of rows in the corpus schema (Alpaca `instruction`/`input`/`output`, or chat
  `messages`): `.jsonl`, `.jsonl.gz`, `.json` or `.json.gz`.

Each set is reported as `heldout_<name>_nll` / `heldout_<name>_ppl` (nats per response token, as training
counts them). A labelled set (rows with a string `category`) also gets `heldout_<name>_nll_<slug>` per
category, the slug being the category lowercased with every run of other characters turned into `_`.
The older keys `heldout_rows` / `heldout_file` are one unnamed set, reported as `heldout_nll` / `heldout_ppl`.

Dev and test. The in-distribution set (the rows split off the corpus, or the older keys' unnamed set) is also
reported in two halves: `dev` (`heldout_<name>_dev_nll`, `heldout_dev_nll` for the unnamed set), on which every
choice is made (objective defaults, token-weight settings, hyperparameters, the shipped recipe), and `test`
(`heldout_<name>_test_nll`), reported and never used to choose. A row's half is a hash of its id (`row_split`), so
it is the same in every run, whatever the set's size or the rows the tokenizer skips. The out-of-distribution sets
(built-in sets and files) are report-only. `paser.pipelines.choose` is the one way to pick a setting: it reads dev
metrics only.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paser.common.io import write_jsonl
from paser.common.registry import check_name
from paser.data.heldout import get_heldout_builder
from paser.selection.corpus import read_rows

BUILTIN_PREFIX = "builtin:"
HELDOUT_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
SET_NAME = re.compile(r"[a-z0-9_]+")
DEV, TEST = "dev", "test"
SPLITS = (DEV, TEST)
# The share of in-distribution rows in the dev half, and the salt of the hash that assigns them.
DEV_SHARE = 0.5
SPLIT_SALT = "paser dev/test 1"
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class HeldoutSet:
    """One held-out set: rows split off the corpus (`rows`), a file of rows (`file`) or a built-in set
    (`builtin`, at most `limit` rows). `name` is None for the unnamed set of the older keys."""

    name: str | None
    rows: int | None = None
    file: str | None = None
    builtin: str | None = None
    limit: int | None = None

    @property
    def metric_prefix(self) -> str:
        """`heldout` for the unnamed set, else `heldout_<name>`."""
        return "heldout" if self.name is None else f"heldout_{self.name}"

    @property
    def in_distribution(self) -> bool:
        """Whether the set is the in-distribution one, split into dev and test: the rows split off the corpus,
        or the older keys' unnamed set."""
        return self.name is None or self.rows is not None


def parse_heldout(mapping: dict[Any, Any]) -> list[HeldoutSet]:
    """The sets of an `evaluation.heldout` mapping, in its order.

    Refuses (ValueError naming `evaluation.heldout.<name>`): a name that is not `[a-z0-9_]+`, or is `dev` /
    `test` or ends in `_dev` / `_test` (the names of the in-distribution set's halves), a count that is not a
    positive int, a second int entry, an unknown built-in set or a limit that is not a positive int, a file with
    another suffix than `HELDOUT_FILE_SUFFIXES`, and a missing file.
    """
    sets: list[HeldoutSet] = []
    split: str | None = None
    for name, value in mapping.items():
        where = f"evaluation.heldout.{name}"
        if not isinstance(name, str) or not SET_NAME.fullmatch(name):
            raise ValueError(f"{where}: a set name must be lowercase letters, digits and _ ([a-z0-9_]+)")
        if any(name == split or name.endswith(f"_{split}") for split in SPLITS):
            raise ValueError(f"{where}: names ending in _dev or _test are the in-distribution set's halves")
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"{where}: rows split off the corpus must be a positive count, got {value}")
            if split is not None:
                raise ValueError(
                    f"{where}: only one set may be rows split off the corpus (evaluation.heldout.{split} is one)"
                )
            split = name
            sets.append(HeldoutSet(name, rows=value))
        elif isinstance(value, str) and value.startswith(BUILTIN_PREFIX):
            builtin, _, limit = value[len(BUILTIN_PREFIX) :].partition(":")
            try:
                get_heldout_builder(builtin)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from error
            if limit and not (limit.isdigit() and int(limit) > 0):
                raise ValueError(f"{where}: the row limit of {value!r} must be a positive int (builtin:NAME:LIMIT)")
            sets.append(HeldoutSet(name, builtin=builtin, limit=int(limit) if limit else None))
        elif isinstance(value, str):
            if not value.lower().endswith(HELDOUT_FILE_SUFFIXES):
                raise ValueError(f"{where}: {value} is not a file of rows ({', '.join(HELDOUT_FILE_SUFFIXES)})")
            if not Path(value).expanduser().is_file():
                raise ValueError(f"{where}: file {value} does not exist")
            sets.append(HeldoutSet(name, file=value))
        else:
            raise ValueError(f"{where}: expected a row count, builtin:NAME[:LIMIT] or a file path, got {value!r}")
    return sets


def copy_rows(source: str | Path, out: Path) -> Path:
    """Write the rows of a JSON Lines / JSON file (`paser.selection.corpus.read_rows`) to `out` as JSON Lines,
    atomically: a held-out file in any supported format becomes what `load_training_rows` reads."""
    return write_jsonl(out, [row for _, row in read_rows(source)])


def category_slug(category: str) -> str:
    """A category as a metric-name suffix: lowercase, each run of other characters than [a-z0-9] as `_`."""
    return _NOT_SLUG.sub("_", category.lower()).strip("_")


def row_split(row_id: str) -> str:
    """`dev` or `test`: the half of the in-distribution set that row `row_id` belongs to. The sha256 of the salt
    and the id, read as a number in [0, 1), is below `DEV_SHARE` for dev: deterministic, disjoint, and
    independent of every other row (about half of the rows each; not exactly half)."""
    digest = hashlib.sha256(f"{SPLIT_SALT}\0{row_id}".encode()).digest()
    return DEV if int.from_bytes(digest[:8], "big") / 2**64 < DEV_SHARE else TEST


def split_parts(row_ids: Sequence[str], items: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """The dev and test halves of an in-distribution set's per-row `items` (`nll_sum`, `tokens`; rows in the
    order of `row_ids`): `{split: {nll, ppl, tokens, rows, items}}`, the NLL summed over the half's rows as the
    whole set's is. A half with no row is left out."""
    parts: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        chosen = [position for position, row_id in enumerate(row_ids) if row_split(row_id) == split]
        if not chosen:
            continue
        part_items = {name: [values[position] for position in chosen] for name, values in items.items()}
        tokens = sum(part_items["tokens"])
        nll = sum(part_items["nll_sum"]) / tokens
        parts[split] = {"nll": nll, "ppl": math.exp(nll), "tokens": int(tokens), "rows": len(chosen)}
        parts[split]["items"] = part_items
    return parts


def heldout_nll(
    model: Any, tokenizer: Any, path: Path, training: Any, *, batch_size: int, split: bool = False
) -> dict[str, Any]:
    """The response NLL of `model` on the rows of `path`, tokenised as training does (`training`: the run's
    `TrainConfig`): `{nll, ppl, tokens, rows, skipped}`, plus `categories: {category: {nll, ppl, tokens, rows}}`
    when rows carry a string `category` (rows without one count in the total only), and each row's values
    (`items`, in file order) where `response_nll` gives them. With `split` (the in-distribution set), also
    `splits`: its dev and test halves (`split_parts`).

    Each category is one `response_nll` pass and the total is their token-weighted mean, so a labelled set
    costs one pass over its rows. Refuses (ValueError) two categories with the same slug, or an empty slug.
    """
    from paser.recovery.evaluate import response_nll
    from paser.recovery.train import load_training_rows

    rows = load_training_rows(path, tokenizer, training)
    labels = {sample.id: sample.raw.get("category") for sample in rows.samples}
    positions: dict[str | None, list[int]] = {}
    for position, row in enumerate(rows.encoded):
        label = labels[row.id]
        positions.setdefault(label if isinstance(label, str) else None, []).append(position)
    categories = sorted(label for label in positions if label is not None)
    slugs: dict[str, str] = {}
    for category in categories:
        slug = category_slug(category)
        if not slug or slug in slugs:
            other = f", as {slugs[slug]!r} does" if slug in slugs else ""
            raise ValueError(f"{path}: category {category!r} gives the metric suffix {slug!r}{other}")
        slugs[slug] = category
    parts = {
        label: response_nll(model, [rows.encoded[position] for position in chosen], batch_size=batch_size)
        for label, chosen in positions.items()
    }
    tokens = sum(part["tokens"] for part in parts.values())
    nll = sum(part["nll"] * part["tokens"] for part in parts.values()) / tokens
    record: dict[str, Any] = {"nll": nll, "ppl": math.exp(nll), "tokens": tokens, "rows": len(rows.encoded)}
    record["skipped"] = rows.skipped
    if all("items" in part for part in parts.values()):
        # Per-row values (recovery.items), put back in file order.
        components = next(iter(parts.values()))["items"]
        record["items"] = {component: [0.0] * len(rows.encoded) for component in components}
        for label, part in parts.items():
            for component, values in part["items"].items():
                for position, value in zip(positions[label], values, strict=True):
                    record["items"][component][position] = value
        if split:
            record["splits"] = split_parts([row.id for row in rows.encoded], record["items"])
    if categories:
        keys = ("nll", "ppl", "tokens", "rows")
        record["categories"] = {category: {key: parts[category][key] for key in keys} for category in categories}
    return record


def heldout_metrics(name: str, result: dict[str, Any]) -> dict[str, float]:
    """The flat metrics of named set `name`'s eval record: `heldout_<name>_nll`, `heldout_<name>_ppl`, then
    `heldout_<name>_nll_<slug>` per category in sorted order."""
    prefix = f"heldout_{name}"
    metrics = {f"{prefix}_nll": float(result["nll"]), f"{prefix}_ppl": float(result["ppl"])}
    for category, values in sorted(result.get("categories", {}).items()):
        metrics[f"{prefix}_nll_{category_slug(category)}"] = float(values["nll"])
    return metrics


def split_metric_names(sets: Sequence[HeldoutSet], split: str) -> list[str]:
    """The metrics of half `split` (`dev` or `test`) of the in-distribution set among `sets`:
    `heldout_<name>_<split>_nll` and `_ppl` (`heldout_<split>_nll` / `_ppl` for the unnamed set); none without
    one. The dev ones are the only metrics a choice may read (`paser.pipelines.choose`)."""
    check_name("split", split, SPLITS)
    return [f"{spec.metric_prefix}_{split}_{kind}" for spec in sets if spec.in_distribution for kind in ("nll", "ppl")]


def category_metric_names(metrics: list[str], names: list[str]) -> list[str]:
    """The per-category metrics among `metrics` of the named sets `names` (what the report shows in a
    table of its own)."""
    totals = {f"heldout_{name}_{kind}" for name in names for kind in ("nll", "ppl")}
    prefixes = tuple(f"heldout_{name}_nll_" for name in names)
    return [metric for metric in metrics if metric not in totals and metric.startswith(prefixes)]
