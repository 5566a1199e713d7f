"""Read a run directory written by `paser run` (pipelines/run.py) as tables: the Python API behind
`paser report` and the notebooks.

    run = load_run("runs/demo")
    run.results_table()                 # one row per (strategy, budget): mean/std over seeds, gap recovered
    run.cluster_budgets("paser")        # per budget and cluster: size, mean CDS, allocated and selected rows
    run.sample_rows(cluster=2, n=3)     # the most degraded rows of a cluster, with their text
    run.labels(run.label_field())       # a label the raw rows carry (e.g. category), for `cluster_purity`

A run is expected to hold every (strategy, budget, seed) combo of results.json's `strategies`, `budgets`
and `seeds`. An artifact that is not there (a combo whose evaluation did not finish, a missing selection)
reads as missing (NaN) in the tables and is listed by `RunResults.missing()`; nothing is dropped silently.
A method asked for one artifact by name (`selection`, `clusters`, `scores`) refuses a missing file (RunError
naming it).

CDS (capability degradation score of a row, `paser.selection.degradation`) is the mean Jensen-Shannon
divergence (nats) between the original and the pruned model's next-token distributions over the response.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import yaml

from paser.pipelines.analysis.accounting import COMPUTE_FIELDS, combo_compute, shared_cost
from paser.pipelines.analysis.uncertainty import metric_summary, versus_random
from paser.pipelines.layout import RunLayout
from paser.selection.allocate import TokenBudget, is_one_row, parse_budget
from paser.selection.store import CorpusStore
from paser.selection.strategies import strategy_with_role

RESULTS_KEYS = ("metrics", "lower_is_better", "baselines", "combos", "seeds", "strategies", "budgets")
BASELINES = ("original", "pruned")
TEXT_COLUMNS = ("instruction", "input", "response")
# Raw-row fields taken as the pool's label, in this order, when config.yaml sets no report.label_field.
# Raw-row fields the report compares the clusters with where config.yaml's report.label_field names none, in this
# order: what instruction corpora usually call a row's kind (the demo corpus's own is `skill`). One is taken only
# where it is categorical (`is_categorical`).
LABEL_FIELDS = ("category", "label", "skill", "task", "topic", "domain", "subject", "dataset")


class RunError(ValueError):
    """A run directory that cannot be read as asked: not a run, a malformed results.json, an unknown combo,
    seed or budget, a missing artifact asked for by name. The message names the file (and the key)."""


def gap_recovered(recovered: Any, pruned: float, original: float) -> Any:
    """(recovered − pruned) / (original − pruned) for a value or a Series: 1 = the pruning damage undone, 0 =
    none, the same formula whatever the metric's direction; NaN without a gap."""
    gap = original - pruned
    return (recovered - pruned) / gap if gap != 0 and math.isfinite(gap) else math.nan


def combo_name(strategy: str, budget: float | str, seed: int) -> str:
    """The combo folder name of one (strategy, budget, seed): e.g. "paser-b0.1-s0", "random-b30-s1", "paser-b1-s0"
    for the fraction 1.0 (every row), "paser-b1row-s0" for the int 1 (one row), and for a token budget
    "paser-t200000-s0"."""
    parsed = parse_budget(budget)
    if isinstance(parsed, TokenBudget):
        label = f"t{parsed.tokens}"
    else:
        label = "b1row" if is_one_row(parsed) else f"b{parsed:g}"
    return f"{strategy}-{label}-s{seed}"


def format_budget(budget: float | str) -> str:
    """A run's budget as reports write it: a row budget as "0.1" or "30" ("1.0" for every row, "1 row" for one
    row), a token budget as "200000t"."""
    parsed = parse_budget(budget)
    if isinstance(parsed, TokenBudget):
        return str(parsed)
    if is_one_row(parsed):
        return "1 row"
    return "1.0" if parsed == 1 else f"{parsed:g}"


def _budget_order(budget: float | str) -> tuple[int, float]:
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


def load_run(run_dir: str | os.PathLike[str]) -> RunResults:
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
    return RunResults(run_dir, config=config, results=results, manifest=manifest)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{path}: not valid JSON: {error}") from error


class RunResults:
    """Tables over one run directory; built by `load_run`. Large files (scores, clusters) are read once."""

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
        self._combo_records = {record["combo"]: record for record in results["combos"]}
        self._scores: pd.DataFrame | None = None
        self._clusters: dict[int, pd.DataFrame] = {}
        self._labels: dict[str, pd.Series] = {}

    def __repr__(self) -> str:
        return (
            f"RunResults({str(self.path)!r}, strategies={self.strategies}, budgets={self.budgets}, seeds={self.seeds})"
        )

    # ---- combos -------------------------------------------------------------------------------------------

    def combos(self) -> pd.DataFrame:
        """Every expected combo (strategies × budgets × seeds, in that order): combo, strategy, budget,
        budget_rows (from results.json; NA where the combo is not recorded there), seed, and whether its
        selection and its evaluation metrics are present (has_selection, has_metrics)."""
        rows = []
        for strategy in self.strategies:
            for budget in self.budgets:
                for seed in self.seeds:
                    combo = combo_name(strategy, budget, seed)
                    record = self._combo_records.get(combo, {})
                    rows.append(
                        {
                            "combo": combo,
                            "strategy": strategy,
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

    def _check_combo(self, combo: str) -> None:
        known = self.combos()["combo"].tolist()
        if combo not in known:
            raise RunError(f"{self.path}: unknown combo {combo!r}; known: {', '.join(known)}")

    def _seed(self, seed: int | None) -> int:
        if seed is None:
            return self.seeds[0]
        if seed not in self.seeds:
            raise RunError(f"{self.path}: seed {seed} is not one of the run's seeds {self.seeds}")
        return seed

    # ---- shared tables ------------------------------------------------------------------------------------

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
        seed = self._seed(seed)
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

    def cluster_budgets(self, strategy: str = "paser", seed: int | None = None) -> pd.DataFrame:
        """Per budget of the run and cluster, from each combo's select/stats.json: budget, budget_rows, cluster,
        size, mean_cds, budget_allocated (the strategy's allocation; NaN for a strategy without one, e.g.
        random), selected and unit: both counts are rows, or tokens for a token budget (the selected rows'
        tokens). Row budgets come first, then token budgets, each ascending. A combo whose stats.json is
        missing gives one row per cluster of `seed`'s clustering with size and mean_cds computed from it and NaN
        allocated/selected (and is listed by `missing()`). Refuses an unknown strategy or seed (RunError)."""
        if strategy not in self.strategies:
            raise RunError(f"{self.path}: unknown strategy {strategy!r}; the run has {self.strategies}")
        seed = self._seed(seed)
        frames = []
        for budget in sorted(self.budgets, key=_budget_order):
            combo = combo_name(strategy, budget, seed)
            unit = "tokens" if isinstance(parse_budget(budget), TokenBudget) else "rows"
            stats_path = self.layout.combo(combo).select.stats
            if stats_path.is_file():
                stats = _read_json(stats_path)
                frame = pd.DataFrame(stats["clusters"])
                frame = frame.rename(columns={"budget": "budget_allocated"})
                if "budget_allocated" not in frame:
                    frame["budget_allocated"] = np.nan
                if unit == "tokens":
                    frame["selected"] = frame["selected_tokens"]
                budget_rows = stats["totals"]["budget"]
            else:
                frame = self._cluster_sizes(seed)
                frame["budget_allocated"] = np.nan
                frame["selected"] = np.nan
                budget_rows = self._combo_records.get(combo, {}).get("budget_rows")
            frame = frame[["cluster", "size", "mean_cds", "budget_allocated", "selected"]]
            frame = frame.sort_values("cluster", kind="stable").assign(unit=unit)
            frame.insert(0, "budget_rows", budget_rows)
            frame.insert(0, "budget", budget)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        table["budget_allocated"] = table["budget_allocated"].astype(float)
        table["selected"] = table["selected"].astype(float)
        return table

    def _cluster_sizes(self, seed: int) -> pd.DataFrame:
        return self.clusters(seed).groupby("cluster").agg(size=("id", "size"), mean_cds=("cds", "mean")).reset_index()

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

    def sample_rows(self, cluster: int, n: int = 3, seed: int | None = None) -> pd.DataFrame:
        """The `n` rows of `cluster` (in `seed`'s clustering) with the highest CDS, most degraded first: id,
        cluster, cds, instruction, input, response (text from shared/corpus.parquet). Refuses a cluster the
        clustering does not have and n < 1 (RunError)."""
        if n < 1:
            raise RunError(f"n must be >= 1, got {n}")
        clusters = self.clusters(seed)
        members = clusters[clusters["cluster"] == cluster]
        if members.empty:
            known = sorted(int(label) for label in clusters["cluster"].unique())
            raise RunError(f"{self.path}: no cluster {cluster} in seed {self._seed(seed)}'s clustering; known: {known}")
        top = members.sort_values(["cds", "id"], ascending=[False, True], kind="stable").head(n)
        store = CorpusStore(self.layout.shared.corpus)
        samples = store.samples(top["id"].tolist(), with_raw=False)
        text = pd.DataFrame([{name: getattr(sample, name) for name in TEXT_COLUMNS} for sample in samples])
        return pd.concat([top[["id", "cluster", "cds"]].reset_index(drop=True), text], axis=1)

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

    def overlap(self, budget: float | str, seed: int | None = None) -> pd.DataFrame:
        """Jaccard overlap |A ∩ B| / |A ∪ B| of the strategies' selected id sets at `budget` and `seed`
        (default: the first seed), as a square table indexed by strategy. NaN where a selection is missing
        (listed by `missing()`) or both are empty. Refuses a budget the run does not have (RunError)."""
        if budget not in self.budgets:
            raise RunError(
                f"{self.path}: budget {format_budget(budget)} is not one of the run's budgets {self.budgets}"
            )
        seed = self._seed(seed)
        chosen: dict[str, set[str] | None] = {}
        for strategy in self.strategies:
            path = self.selection_path(combo_name(strategy, budget, seed))
            chosen[strategy] = set(self.selection(combo_name(strategy, budget, seed))["id"]) if path.is_file() else None
        table = pd.DataFrame(np.nan, index=self.strategies, columns=self.strategies)
        for first, first_ids in chosen.items():
            for second, second_ids in chosen.items():
                if first_ids is None or second_ids is None:
                    continue
                union = len(first_ids | second_ids)
                if union:
                    table.loc[first, second] = len(first_ids & second_ids) / union
        table.index.name = "strategy"
        return table

    # ---- results ------------------------------------------------------------------------------------------

    def picks(self) -> pd.DataFrame:
        """What each combo's selection is made of, against its pool (the rows it selected from): one row per combo
        with a selection, then one `pool` row per seed. Columns: combo, strategy, budget, seed, rows, tokens
        (prompt + response, as the scorer counted them), mean_prompt_tokens, mean_response_tokens,
        median_response_tokens, mean_cds, cds_rank (the selected rows' mean CDS percentile in the pool: 0.5 for a
        uniform draw, 1 for the top), clusters_covered, cluster_shift (total variation distance between the
        selection's cluster mix and the pool's, in [0, 1]) and ccg_rejected (rows the CCG turned away; NaN for a
        strategy without one)."""
        scores = self.scores().set_index("id")
        combos = self.combos()
        rows = []
        for seed in self.seeds:
            pool = self.clusters(seed).set_index("id")
            if not len(pool):
                continue
            pool_tokens = scores.loc[pool.index, ["prompt_tokens", "response_tokens"]]
            rank = pool["cds"].rank(pct=True)
            pool_mix = pool["cluster"].value_counts(normalize=True)
            rows.append(
                {"combo": f"pool-s{seed}", "strategy": "pool", "budget": None, "seed": seed}
                | _pick_stats(pool_tokens, pool["cds"], rank, pool["cluster"], pool_mix)
                | {"ccg_rejected": np.nan}
            )
            for combo in combos[combos["seed"] == seed].itertuples(index=False):
                if not combo.has_selection:
                    continue
                ids = self.selection(combo.combo)["id"].tolist()
                stats_path = self.layout.combo(combo.combo).select.stats
                clusters = pd.DataFrame(_read_json(stats_path).get("clusters") or []) if stats_path.is_file() else None
                rejected = np.nan
                if clusters is not None and "ccg_rejected" in clusters:
                    rejected = float(clusters["ccg_rejected"].sum())
                rows.append(
                    {"combo": combo.combo, "strategy": combo.strategy, "budget": combo.budget, "seed": seed}
                    | _pick_stats(
                        scores.loc[ids, ["prompt_tokens", "response_tokens"]],
                        pool.loc[ids, "cds"],
                        rank.loc[ids],
                        pool.loc[ids, "cluster"],
                        pool_mix,
                    )
                    | {"ccg_rejected": rejected}
                )
        return pd.DataFrame(rows)

    def cds_vs_gain(self, metric: str) -> tuple[pd.DataFrame, float, float]:
        """Does the degradation signal point where recovery pays? Over the combos that trained on one cluster's
        rows (the strategy with role "per_cluster", `single_cluster`, e.g. variants `cluster_0`, `cluster_1`, ...
        of a sweep), one row per (seed, cluster) (each seed has its own clustering, so a label names different
        rows in different seeds): the combo, size, mean_cds (in that seed's pool), the tokens it trained on
        (train_tokens), its `metric` and gain (the improvement over the pruned model, positive when better).
        Returns (that table, Spearman's rho of mean_cds vs gain over its rows, the two-sided p-value); rho and p
        are NaN with fewer than three rows.
        Refuses an unknown metric (RunError)."""
        if metric not in self.metrics:
            raise RunError(f"{self.path}: unknown metric {metric!r}; the run has {self.metrics}")
        pruned = _as_float((self.results["baselines"].get("pruned") or {}).get(metric))
        sign = -1.0 if self.results["lower_is_better"].get(metric, True) else 1.0
        values = self.combo_metrics().set_index("combo")[metric]
        tokens = self.compute().set_index("combo")["train_tokens"]
        per_cluster = strategy_with_role("per_cluster")
        rows = []
        for combo in self.combos().itertuples(index=False):
            stats_path = self.layout.combo(combo.combo).select.stats
            if not stats_path.is_file() or math.isnan(values.get(combo.combo, math.nan)):
                continue
            strategy = _read_json(stats_path)["strategy"]
            if strategy.get("name") != per_cluster:
                continue
            pool = self.clusters(combo.seed)
            members = pool[pool["cluster"] == strategy["cluster"]]
            rows.append(
                {
                    "combo": combo.combo,
                    "cluster": int(strategy["cluster"]),
                    "seed": combo.seed,
                    "size": len(members),
                    "mean_cds": float(members["cds"].mean()),
                    "train_tokens": float(tokens.get(combo.combo, math.nan)),
                    metric: float(values[combo.combo]),
                    "gain": sign * (float(values[combo.combo]) - pruned),
                }
            )
        columns = ["seed", "cluster", "combo", "size", "mean_cds", "train_tokens", metric, "gain"]
        if not rows:
            return pd.DataFrame(columns=columns), math.nan, math.nan
        table = pd.DataFrame(rows)[columns].sort_values(["seed", "cluster"], ignore_index=True)
        if len(table) < 3:
            return table, math.nan, math.nan
        from scipy.stats import spearmanr

        rho, p_value = spearmanr(table["mean_cds"], table["gain"])
        return table, float(rho), float(p_value)

    def combo_metrics(self) -> pd.DataFrame:
        """One row per expected combo: combo, strategy, budget, seed and every metric (NaN where missing)."""
        rows = []
        for combo in self.combos().itertuples(index=False):
            record = self._combo_records.get(combo.combo, {})
            metrics = record.get("metrics") or {}
            rows.append(
                {
                    "combo": combo.combo,
                    "strategy": combo.strategy,
                    "budget": combo.budget,
                    "seed": combo.seed,
                    "evaluated": bool(metrics),
                    **{metric: _as_float(metrics.get(metric)) for metric in self.metrics},
                }
            )
        return pd.DataFrame(rows)

    def results_table(self) -> pd.DataFrame:
        """One row per (strategy, budget), then the baselines as rows "original" and "pruned".

        Columns: strategy, budget, budget_rows, seeds (combos of the row with metrics), then for each metric
        `{metric}_mean` and `{metric}_std` (sample standard deviation over seeds, ddof=1: NaN with one seed),
        then `{metric}_gap_recovered` for each metric both baselines have: (mean − pruned) / (original −
        pruned), a fraction (1 = the original's value, 0 = no better than the pruned model), the same
        formula whatever the metric's direction. It is NaN where original == pruned (stated in `notes()`).
        Because the formula is linear, the gap of the mean equals the mean of the per-seed gaps. A baseline
        row has its value as the mean, NaN std and seeds. Missing metrics are NaN and listed by `missing()`.
        """
        per_combo = self.combo_metrics()
        budget_rows = self.combos().set_index("combo")["budget_rows"]
        rows = []
        for strategy in self.strategies:
            for budget in self.budgets:
                group = per_combo[(per_combo["strategy"] == strategy) & (per_combo["budget"] == budget)]
                known_rows = budget_rows[group["combo"]].dropna().unique()
                if len(known_rows) > 1:
                    raise RunError(
                        f"{self.layout.results}: {strategy} at budget {format_budget(budget)} has different "
                        f"budget_rows across seeds ({sorted(int(value) for value in known_rows)})"
                    )
                row: dict[str, Any] = {
                    "strategy": strategy,
                    "budget": budget,
                    "budget_rows": known_rows[0] if len(known_rows) else pd.NA,
                    "seeds": int(group["evaluated"].sum()),
                }
                for metric in self.metrics:
                    values = group[metric].dropna()
                    row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
                    row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
                rows.append(row)
        baselines = self.results["baselines"]
        for name in BASELINES:
            values = baselines.get(name) or {}
            row = {"strategy": name, "budget": math.nan, "budget_rows": pd.NA, "seeds": pd.NA}
            for metric in self.metrics:
                row[f"{metric}_mean"] = _as_float(values.get(metric))
                row[f"{metric}_std"] = math.nan
            rows.append(row)
        table = pd.DataFrame(rows)
        for metric in self.gap_metrics():
            original, pruned = (_as_float(baselines[name][metric]) for name in BASELINES)
            # + 0.0 turns the pruned row's -0.0 (0 / a negative gap) into 0.0.
            table[f"{metric}_gap_recovered"] = gap_recovered(table[f"{metric}_mean"], pruned, original) + 0.0
        table["budget_rows"] = table["budget_rows"].astype("Int64")
        table["seeds"] = table["seeds"].astype("Int64")
        return table

    def gap_metrics(self) -> list[str]:
        """The metrics both baselines have a value for: those that get a gap-recovered column."""
        baselines = self.results["baselines"]
        return [
            metric
            for metric in self.metrics
            if all(not math.isnan(_as_float((baselines.get(name) or {}).get(metric))) for name in BASELINES)
        ]

    def notes(self) -> list[str]:
        """Statements about the results table a reader needs: metrics whose pruning gap is undefined
        (original == pruned) and metrics without a gap column (a baseline lacks them)."""
        baselines = self.results["baselines"]
        notes = []
        gap_metrics = self.gap_metrics()
        for metric in self.metrics:
            if metric not in gap_metrics:
                absent = [name for name in BASELINES if math.isnan(_as_float((baselines.get(name) or {}).get(metric)))]
                notes.append(f"{metric}: no gap recovered (no {' and no '.join(absent)} baseline value)")
                continue
            original, pruned = (_as_float(baselines[name][metric]) for name in BASELINES)
            if original == pruned:
                notes.append(
                    f"{metric}: gap recovered undefined (NaN): original and pruned are equal ({original:g}), "
                    "pruning left nothing to recover"
                )
        return notes

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
            absent = [metric for metric in self.metrics if math.isnan(_as_float(values.get(metric)))]
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
            absent = [metric for metric in self.metrics if math.isnan(_as_float(metrics.get(metric)))]
            if absent:
                missing.append(f"results.json: combo {combo} has no {', '.join(absent)}")
        return missing

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.path).as_posix()

    # ---- uncertainty and compute --------------------------------------------------------------------------

    def summary(self) -> pd.DataFrame:
        """Per strategy × budget × metric: seeds (with a value), mean, sd (ddof=1) and the 95% t-interval [lo, hi]
        of the mean over seeds (NaN where undefined). results.json's `summary`; computed from the combos'
        metrics for a run written before it had one (`paser.pipelines.analysis.uncertainty.metric_summary`)."""
        block = self.results.get("summary") or metric_summary(self.results)
        numeric = ("mean", "sd", "lo", "hi")
        return _table(block["rows"], ("strategy", "budget", "metric", "seeds", *numeric), numeric)

    def versus_random(self) -> pd.DataFrame:
        """Per strategy other than random × budget × metric: pairs (seeds both have), difference (mean over
        pairs of strategy − random), t_p and permutation_p (the paired t-test's and the sign-flip test's
        two-sided p-values over seeds; permutation: "exact" or "monte carlo", sign_flips: the sign patterns
        counted), the secondary bootstrap interval [lo, hi], bootstrap (what it resampled: seeds+items, items,
        seeds or none), items, lower_is_better and verdict (better, worse, unclear, too few seeds, or None
        with fewer than two pairs; the rule is `paser.pipelines.analysis.uncertainty.VERDICT_RULE`). results.json's
        `versus_random`; computed from the run folder for a run written before it had one, or before its
        verdicts rested on the seed-level tests (`paser.pipelines.analysis.uncertainty.versus_random`). Empty without a
        random strategy."""
        block = self.results.get("versus_random") or {}
        if "rule" not in block:
            block = versus_random(self.results, self.path)
        numeric = ("difference", "t_p", "permutation_p", "sign_flips", "lo", "hi", "items")
        columns = ("strategy", "budget", "metric", "pairs", *numeric, "permutation", "bootstrap", "lower_is_better")
        return _table(block["rows"], (*columns, "verdict"), numeric)

    def compute(self) -> pd.DataFrame:
        """Per combo of results.json: rows, epochs and tokens trained, train, recover and select seconds, teacher
        and generated tokens, estimated FLOPs, and the tokens, seconds and FLOPs as a fraction of the `full`
        combos' (NaN without one); see `paser.pipelines.analysis.accounting`. results.json's `compute`, else read
        from the recovery records and the manifest."""
        block = self.results.get("compute") or combo_compute(self.results, self.manifest.get("stages", {}), self.path)
        return _table(block["rows"], ("combo", "strategy", "budget", "seed", *COMPUTE_FIELDS), COMPUTE_FIELDS)

    def shared_cost(self) -> dict[str, Any]:
        """{"stages": seconds of each shared stage, "selection_seconds": scoring + embedding + clustering,
        "scoring_tokens", "scoring_flops"}: results.json's `shared_cost`, else from the manifest and the run folder
        (`paser.pipelines.analysis.accounting.shared_cost`)."""
        return self.results.get("shared_cost") or shared_cost(self.manifest.get("stages", {}), self.path)


def _as_float(value: Any) -> float:
    """A metric value as float; None (absent or JSON null) as NaN."""
    return math.nan if value is None else float(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    """Records of a results.json block as a table with these columns; None is NaN in the `numeric` ones."""
    table = pd.DataFrame.from_records(rows, columns=list(columns))
    table[list(numeric)] = table[list(numeric)].astype(float)
    return table


def _pick_stats(
    tokens: pd.DataFrame, cds: pd.Series, rank: pd.Series, clusters: pd.Series, pool_mix: pd.Series
) -> dict[str, Any]:
    """`RunResults.picks`'s numbers for one set of rows (see there)."""
    mix = clusters.value_counts(normalize=True).reindex(pool_mix.index, fill_value=0.0)
    return {
        "rows": len(tokens),
        "tokens": int(tokens.to_numpy().sum()),
        "mean_prompt_tokens": float(tokens["prompt_tokens"].mean()),
        "mean_response_tokens": float(tokens["response_tokens"].mean()),
        "median_response_tokens": float(tokens["response_tokens"].median()),
        "mean_cds": float(cds.mean()),
        "cds_rank": float(rank.mean()),
        "clusters_covered": int(clusters.nunique()),
        "cluster_shift": float(0.5 * (mix - pool_mix).abs().sum()),
    }
