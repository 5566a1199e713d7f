"""The run-folder reader: what a folder written by `paser run` (pipelines/run.py) holds, read through
`paser.pipelines.layout.RunLayout` and nothing else: the resolved config, the manifest, results.json and its
combinations, the scores, the clusterings, the selections and their stats, the raw rows' labels, and what is
missing. The analyses are functions that take a reader, one module per idea: `metrics` (results table, summary,
versus random), `selections` (cluster budgets, overlap, picks, CDS against gain, a cluster's rows), `accounting`
(compute), `purity` (clusters against labels).

    run = load_run("runs/demo")
    run.combos()                        # every expected (strategy, budget, seed), and which artifacts it has
    run.clusters(seed=0)                # the pool's clustering of seed 0, with each row's CDS
    results_table(run)                  # paser.pipelines.analysis.metrics: mean/std over seeds, gap recovered
    cluster_budgets(run, "paser")       # paser.pipelines.analysis.selections: per budget and cluster

A run is expected to hold every (strategy, budget, seed) combo of results.json's `strategies`, `budgets` and
`seeds`. An artifact that is not there (a combo whose evaluation did not finish, a missing selection) reads as
missing (NaN) in the tables and is listed by `RunReader.missing()`; nothing is dropped silently. A method asked for
one artifact by name (`selection`, `clusters`, `scores`) refuses a missing file (RunError naming it).

CDS (capability degradation score of a row, `paser.selection.degradation`) is the mean Jensen-Shannon
divergence (nats) between the original and the pruned model's next-token distributions over the response.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import yaml

from paser.pipelines.layout import RECOVERY_SEPARATOR, RunLayout, split_recovery
from paser.selection.allocate import TokenBudget, is_one_row, parse_budget
from paser.selection.store import CorpusStore

RESULTS_KEYS = ("metrics", "lower_is_better", "baselines", "combos", "seeds", "strategies", "budgets")
BASELINES = ("original", "pruned")
# Raw-row fields the report compares the clusters with where config.yaml's report.label_field names none, in this
# order: what instruction corpora usually call a row's kind (the demo corpus's own is `skill`). One is taken only
# where it is categorical (`is_categorical`).
LABEL_FIELDS = ("category", "label", "skill", "task", "topic", "domain", "subject", "dataset")


class RunError(ValueError):
    """A run directory that cannot be read as asked: not a run, a malformed results.json, an unknown combo,
    seed or budget, a missing artifact asked for by name. The message names the file (and the key)."""


def combo_name(strategy: str, budget: float | str, seed: int, recovery: str | None = None) -> str:
    """The combo folder name of one (strategy, budget, seed): e.g. "paser-b0.1-s0", "random-b30-s1", "paser-b1-s0"
    for the fraction 1.0 (every row), "paser-b1row-s0" for the int 1 (one row), and for a token budget
    "paser-t200000-s0"; with a recovery variant (`recovery.variants`) its name after `RECOVERY_SEPARATOR`:
    "paser-b0.1-s0@kd"."""
    parsed = parse_budget(budget)
    if isinstance(parsed, TokenBudget):
        label = f"t{parsed.tokens}"
    else:
        label = "b1row" if is_one_row(parsed) else f"b{parsed:g}"
    name = f"{strategy}-{label}-s{seed}"
    return name if recovery is None else f"{name}{RECOVERY_SEPARATOR}{recovery}"


def format_budget(budget: float | str) -> str:
    """A run's budget as reports write it: a row budget as "0.1" or "30" ("1.0" for every row, "1 row" for one
    row), a token budget as "200000t"."""
    parsed = parse_budget(budget)
    if isinstance(parsed, TokenBudget):
        return str(parsed)
    if is_one_row(parsed):
        return "1 row"
    return "1.0" if parsed == 1 else f"{parsed:g}"


def budget_order(budget: float | str) -> tuple[int, float]:
    """Sort key of a run's budgets: row budgets first, then token budgets, each ascending."""
    parsed = parse_budget(budget)
    return (1, parsed.tokens) if isinstance(parsed, TokenBudget) else (0, float(parsed))


def is_categorical(labels: pd.Series) -> bool:
    """Whether `labels` (one value per labelled row) look like categories a clustering can be compared with: at
    least two distinct values, and on average at least two rows per value (not an id, a URL or a free text)."""
    distinct = labels.nunique()
    return 2 <= distinct <= len(labels) / 2


def corpus_labels(corpus: Path, field: str) -> pd.Series:
    """The value of `field` in each raw row of the corpus store `corpus` (`paser.selection.store.CorpusStore`) as
    text (a non-string value as its JSON), indexed by id; rows without the field, with a null value or stored
    without their raw row are absent."""
    key = json.dumps(field, ensure_ascii=False)
    ids: list[str] = []
    values: list[str] = []
    for batch in CorpusStore(corpus).iter_batches(["id", "raw"]):
        # Parsing every raw row of a corpus of millions takes minutes: only a row whose JSON text holds the quoted
        # key can have the field, and a corpus without it is passed over at Arrow speed.
        holds = pc.fill_null(pc.match_substring(batch.column("raw"), key), False)
        if not pc.any(holds).as_py():
            continue
        chosen = batch.filter(holds)
        for sample_id, raw in zip(chosen.column("id").to_pylist(), chosen.column("raw").to_pylist(), strict=True):
            value = json.loads(raw).get(field)
            if value is not None:
                ids.append(sample_id)
                values.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return pd.Series(values, index=pd.Index(ids, name="id"), dtype=object, name=field)


def load_run(run_dir: str | os.PathLike[str]) -> RunReader:
    """The run at `run_dir` (config.yaml, manifest.json, results.json read eagerly; everything else on use).

    Refuses (RunError) a folder without manifest.json or results.json (naming the file looked for), a
    results.json missing one of `RESULTS_KEYS`, and unreadable JSON/YAML.
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    for path in (layout.manifest, layout.results):
        if not path.is_file():
            raise RunError(f"{run_dir} is not a run directory written by `paser run`: no {path}")
    manifest = _read_json(layout.manifest)
    results = _read_json(layout.results)
    absent = [key for key in RESULTS_KEYS if key not in results]
    if absent:
        raise RunError(f"{layout.results}: missing key(s) {absent}; expected {list(RESULTS_KEYS)}")
    config_path = layout.config
    if not config_path.is_file():
        raise RunError(f"{run_dir}: no {config_path} (the resolved run config)")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RunError(f"{config_path}: not valid YAML: {error}") from error
    return RunReader(run_dir, config=config, results=results, manifest=manifest)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{path}: not valid JSON: {error}") from error


class RunReader:
    """One run folder, read through its `RunLayout` (`layout`); built by `load_run`. config.yaml (`config`, a
    dict), manifest.json (`manifest`) and results.json (`results`, with its `metrics`, `strategies`, `budgets` and
    `seeds`) are read eagerly; the rest on use, large files (scores, clusters, labels) once."""

    def __init__(self, path: Path, *, config: dict[str, Any], results: dict[str, Any], manifest: dict[str, Any]):
        self.path = path
        self.layout = RunLayout(path)
        self.config = config
        self.results = results
        self.manifest = manifest
        self.metrics: list[str] = list(results["metrics"])
        self.strategies: list[str] = list(results["strategies"])
        self.budgets: list[float | str] = list(results["budgets"])
        self.seeds: list[int] = list(results["seeds"])
        # The recovery variants (`recovery.variants`): each (strategy, budget, seed) is trained once per variant.
        self.recoveries: list[str | None] = list(results.get("recoveries") or [None])
        self._combo_records = {record["combo"]: record for record in results["combos"]}
        self._scores: pd.DataFrame | None = None
        self._clusters: dict[int, pd.DataFrame] = {}
        self._labels: dict[str, pd.Series] = {}

    def __repr__(self) -> str:
        return (
            f"RunReader({str(self.path)!r}, strategies={self.strategies}, budgets={self.budgets}, seeds={self.seeds})"
        )

    @property
    def recovery_columns(self) -> tuple[str, ...]:
        """("recovery",) where the run has recovery variants: the column the tables carry them in; else ()."""
        return ("recovery",) if self.recoveries != [None] else ()

    def combos(self) -> pd.DataFrame:
        """Every expected combo (strategies × budgets × seeds × recovery variants, in that order): combo,
        strategy, recovery (the variant, only where the run has `recoveries`), budget, budget_rows (from
        results.json; NA where the combo is not recorded there), seed, and whether its selection and its
        evaluation metrics are present (has_selection, has_metrics)."""
        rows = []
        for strategy in self.strategies:
            for budget in self.budgets:
                for seed in self.seeds:
                    for recovery in self.recoveries:
                        combo = combo_name(strategy, budget, seed, recovery)
                        record = self.combo_record(combo)
                        rows.append(
                            {
                                "combo": combo,
                                "strategy": strategy,
                                **({} if recovery is None else {"recovery": recovery}),
                                "budget": budget,
                                "budget_rows": record.get("budget_rows"),
                                "seed": seed,
                                "has_selection": self.selection_path(combo).is_file(),
                                "has_metrics": bool(record.get("metrics")),
                            }
                        )
        table = pd.DataFrame(rows)
        table["budget_rows"] = table["budget_rows"].astype("Int64")
        return table

    def selection_path(self, combo: str) -> Path:
        """Where combo's selection.jsonl is (whether or not it exists)."""
        return self.layout.combo(combo).select.selection

    def combo_record(self, combo: str) -> dict[str, Any]:
        """results.json's entry of `combo` (budget_rows, metrics, ...); empty where the combo is not recorded."""
        return self._combo_records.get(combo, {})

    def select_stats(self, combo: str) -> dict[str, Any] | None:
        """combos/{combo}/select/stats.json (the strategy, its per-cluster budgets and totals); None where the
        file is missing (listed by `missing()`)."""
        path = self.layout.combo(combo).select.stats
        return _read_json(path) if path.is_file() else None

    def _check_combo(self, combo: str) -> None:
        known = self.combos()["combo"].tolist()
        # A recovery variant's combination selects in its combination's folder: that name reads its selection.
        if combo not in known and combo not in {split_recovery(name)[0] for name in known}:
            raise RunError(f"{self.path}: unknown combo {combo!r}; known: {', '.join(known)}")

    def resolve_seed(self, seed: int | None) -> int:
        """`seed`, or the run's first seed for None; refuses a seed the run does not have (RunError)."""
        if seed is None:
            return self.seeds[0]
        if seed not in self.seeds:
            raise RunError(f"{self.path}: seed {seed} is not one of the run's seeds {self.seeds}")
        return seed

    def scores(self) -> pd.DataFrame:
        """shared/scores.parquet: one row per scored row (id as str, cds, token counts, NLLs). Refuses a
        missing file (RunError)."""
        if self._scores is None:
            path = self.layout.shared.scores
            if not path.is_file():
                raise RunError(f"{self.path}: no {path}")
            scores = pd.read_parquet(path)
            scores["id"] = scores["id"].astype(str)
            self._scores = scores
        return self._scores

    def clusters(self, seed: int | None = None) -> pd.DataFrame:
        """The pool's clustering of `seed` (default: the run's first seed): id, cluster, coordinate_0/1 where
        the clustering has them, and each row's cds from scores.parquet. Refuses an unknown seed and a
        missing clusters file (RunError)."""
        seed = self.resolve_seed(seed)
        if seed not in self._clusters:
            path = self.layout.shared.cluster_table(seed)
            if not path.is_file():
                raise RunError(f"{self.path}: no {path}")
            clusters = pd.read_parquet(path)
            clusters["id"] = clusters["id"].astype(str)
            table = clusters.merge(self.scores()[["id", "cds"]], on="id", how="left", validate="one_to_one")
            unscored = table["cds"].isna()
            if unscored.any():
                raise RunError(
                    f"{path}: {int(unscored.sum())} clustered id(s) have no row in scores.parquet, "
                    f"e.g. {table.loc[unscored, 'id'].iloc[0]!r}"
                )
            self._clusters[seed] = table
        return self._clusters[seed]

    def selection(self, combo: str) -> pd.DataFrame:
        """combos/{combo}/select/selection.jsonl as a table, in selection order (id as str). Refuses an
        unknown combo and a missing file (RunError)."""
        self._check_combo(combo)
        path = self.selection_path(combo)
        if not path.is_file():
            raise RunError(f"{self.path}: combo {combo} has no selection: no {path}")
        with path.open(encoding="utf-8") as stream:
            rows = [json.loads(line) for line in stream if line.strip()]
        table = pd.DataFrame(rows)
        if len(table):
            table["id"] = table["id"].astype(str)
        return table

    def label_field(self) -> str | None:
        """The raw-row field the clusters are compared with (`paser.pipelines.analysis.purity.cluster_purity`):
        config.yaml's `report.label_field` where set (any field, whether or not the rows carry it), else the first of
        `LABEL_FIELDS` whose values in shared/corpus.parquet's rows are categorical (`is_categorical`); None
        where none is set or found, or the corpus store is missing."""
        configured = (self.config.get("report") or {}).get("label_field")
        if configured:
            return str(configured)
        if not self.layout.shared.corpus.is_file():
            return None
        return next((field for field in LABEL_FIELDS if is_categorical(self.labels(field))), None)

    def labels(self, field: str) -> pd.Series:
        """The value of `field` in each corpus row's raw row (shared/corpus.parquet) as text (a non-string
        value as its JSON), indexed by id; rows without the field, with a null value or stored without their
        raw row are absent. Refuses a missing corpus store (RunError)."""
        if field not in self._labels:
            path = self.layout.shared.corpus
            if not path.is_file():
                raise RunError(f"{self.path}: no {path}")
            self._labels[field] = corpus_labels(path, field)
        return self._labels[field]

    def missing(self) -> list[str]:
        """Every artifact the run should have and does not, one line each naming the file (relative to the
        run) or the results.json entry: shared files, per-seed clusters, each combo's selection, stats and
        evaluation, each combo's and baseline's metric values. Empty for a complete run."""
        layout = self.layout
        expected = [layout.shared.scores, layout.shared.corpus, *map(layout.shared.cluster_table, self.seeds)]
        missing = [f"{self._relative(path)} (file missing)" for path in expected if not path.is_file()]
        for name in BASELINES:
            path = layout.baseline(name).metrics
            if not path.is_file():
                missing.append(f"{self._relative(path)} (file missing)")
            values = self.results["baselines"].get(name) or {}
            absent = [metric for metric in self.metrics if math.isnan(as_float(values.get(metric)))]
            if absent:
                missing.append(f"results.json: baseline {name} has no {', '.join(absent)}")
        for combo in self.combos()["combo"]:
            folder = layout.combo(combo)
            for path in (folder.select.selection, folder.select.stats, folder.eval.metrics):
                if not path.is_file():
                    missing.append(f"{self._relative(path)} (file missing)")
            record = self._combo_records.get(combo)
            if record is None:
                missing.append(f"results.json: combo {combo} is not recorded")
                continue
            metrics = record.get("metrics") or {}
            if not metrics:
                missing.append(f"results.json: combo {combo} has no metrics (evaluation not finished)")
                continue
            absent = [metric for metric in self.metrics if math.isnan(as_float(metrics.get(metric)))]
            if absent:
                missing.append(f"results.json: combo {combo} has no {', '.join(absent)}")
        return missing

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.path).as_posix()


def as_float(value: Any) -> float:
    """A metric value as float; None (absent or JSON null) as NaN."""
    return math.nan if value is None else float(value)


def block_table(rows: list[dict[str, Any]], columns: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    """Records of a results.json block as a table with these columns; None is NaN in the `numeric` ones."""
    table = pd.DataFrame.from_records(rows, columns=list(columns))
    table[list(numeric)] = table[list(numeric)].astype(float)
    return table
