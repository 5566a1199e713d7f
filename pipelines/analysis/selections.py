"""What the selections of a run are made of, each a function of the run's reader (`paser.pipelines.analysis.reader`):
how a strategy's budget spread over the clusters (`cluster_budgets`), how much the strategies' subsets overlap
(`overlap`), what each subset holds against its pool (`picks`), whether recovery pays where the rows degraded most
(`cds_vs_gain`) and a cluster's most degraded rows (`sample_rows`).

CDS (capability degradation score of a row, `paser.selection.degradation`) is the mean Jensen-Shannon
divergence (nats) between the original and the pruned model's next-token distributions over the response.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from paser.pipelines.analysis.accounting import compute_table
from paser.pipelines.analysis.metrics import combo_metrics
from paser.pipelines.analysis.reader import RunError, RunReader, as_float, budget_order, combo_name, format_budget
from paser.selection.allocate import TokenBudget, parse_budget
from paser.selection.store import CorpusStore
from paser.selection.strategies import strategy_with_role

TEXT_COLUMNS = ("instruction", "input", "response")


def cluster_budgets(run: RunReader, strategy: str = "paser", seed: int | None = None) -> pd.DataFrame:
    """Per budget of the run and cluster, from each combo's select/stats.json: budget, budget_rows, cluster,
    size, mean_cds, budget_allocated (the strategy's allocation; NaN for a strategy without one, e.g.
    random), selected and unit: both counts are rows, or tokens for a token budget (the selected rows'
    tokens). Row budgets come first, then token budgets, each ascending. A combo whose stats.json is
    missing gives one row per cluster of `seed`'s clustering with size and mean_cds computed from it and NaN
    allocated/selected (and is listed by `RunReader.missing()`). Refuses an unknown strategy or seed (RunError)."""
    if strategy not in run.strategies:
        raise RunError(f"{run.path}: unknown strategy {strategy!r}; the run has {run.strategies}")
    seed = run.resolve_seed(seed)
    frames = []
    for budget in sorted(run.budgets, key=budget_order):
        combo = combo_name(strategy, budget, seed)
        unit = "tokens" if isinstance(parse_budget(budget), TokenBudget) else "rows"
        stats = run.select_stats(combo)
        if stats is not None:
            frame = pd.DataFrame(stats["clusters"])
            frame = frame.rename(columns={"budget": "budget_allocated"})
            if "budget_allocated" not in frame:
                frame["budget_allocated"] = np.nan
            if unit == "tokens":
                frame["selected"] = frame["selected_tokens"]
            budget_rows = stats["totals"]["budget"]
        else:
            frame = _cluster_sizes(run, seed)
            frame["budget_allocated"] = np.nan
            frame["selected"] = np.nan
            budget_rows = run.combo_record(combo).get("budget_rows")
        frame = frame[["cluster", "size", "mean_cds", "budget_allocated", "selected"]]
        frame = frame.sort_values("cluster", kind="stable").assign(unit=unit)
        frame.insert(0, "budget_rows", budget_rows)
        frame.insert(0, "budget", budget)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["budget_allocated"] = table["budget_allocated"].astype(float)
    table["selected"] = table["selected"].astype(float)
    return table


def _cluster_sizes(run: RunReader, seed: int) -> pd.DataFrame:
    return run.clusters(seed).groupby("cluster").agg(size=("id", "size"), mean_cds=("cds", "mean")).reset_index()


def sample_rows(run: RunReader, cluster: int, n: int = 3, seed: int | None = None) -> pd.DataFrame:
    """The `n` rows of `cluster` (in `seed`'s clustering) with the highest CDS, most degraded first: id,
    cluster, cds, instruction, input, response (text from shared/corpus.parquet). Refuses a cluster the
    clustering does not have and n < 1 (RunError)."""
    if n < 1:
        raise RunError(f"n must be >= 1, got {n}")
    clusters = run.clusters(seed)
    members = clusters[clusters["cluster"] == cluster]
    if members.empty:
        known = sorted(int(label) for label in clusters["cluster"].unique())
        raise RunError(
            f"{run.path}: no cluster {cluster} in seed {run.resolve_seed(seed)}'s clustering; known: {known}"
        )
    top = members.sort_values(["cds", "id"], ascending=[False, True], kind="stable").head(n)
    store = CorpusStore(run.layout.shared.corpus)
    samples = store.samples(top["id"].tolist(), with_raw=False)
    text = pd.DataFrame([{name: getattr(sample, name) for name in TEXT_COLUMNS} for sample in samples])
    return pd.concat([top[["id", "cluster", "cds"]].reset_index(drop=True), text], axis=1)


def overlap(run: RunReader, budget: float | str, seed: int | None = None) -> pd.DataFrame:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of the strategies' selected id sets at `budget` and `seed`
    (default: the first seed), as a square table indexed by strategy. NaN where a selection is missing
    (listed by `RunReader.missing()`) or both are empty. Refuses a budget the run does not have (RunError)."""
    if budget not in run.budgets:
        raise RunError(f"{run.path}: budget {format_budget(budget)} is not one of the run's budgets {run.budgets}")
    seed = run.resolve_seed(seed)
    chosen: dict[str, set[str] | None] = {}
    for strategy in run.strategies:
        combo = combo_name(strategy, budget, seed)
        chosen[strategy] = set(run.selection(combo)["id"]) if run.selection_path(combo).is_file() else None
    table = pd.DataFrame(np.nan, index=run.strategies, columns=run.strategies)
    for first, first_ids in chosen.items():
        for second, second_ids in chosen.items():
            if first_ids is None or second_ids is None:
                continue
            union = len(first_ids | second_ids)
            if union:
                table.loc[first, second] = len(first_ids & second_ids) / union
    table.index.name = "strategy"
    return table


def picks(run: RunReader) -> pd.DataFrame:
    """What each combo's selection is made of, against its pool (the rows it selected from): one row per combo
    with a selection, then one `pool` row per seed. Columns: combo, strategy, budget, seed, rows, tokens
    (prompt + response, as the scorer counted them), mean_prompt_tokens, mean_response_tokens,
    median_response_tokens, mean_cds, cds_rank (the selected rows' mean CDS percentile in the pool: 0.5 for a
    uniform draw, 1 for the top), clusters_covered, cluster_shift (total variation distance between the
    selection's cluster mix and the pool's, in [0, 1]) and ccg_rejected (rows the CCG turned away; NaN for a
    strategy without one)."""
    scores = run.scores().set_index("id")
    combos = run.combos()
    if run.recovery_columns:  # the variants of a combination train on one selection: count it once
        combos = combos[combos["recovery"] == run.recoveries[0]]
    rows = []
    for seed in run.seeds:
        pool = run.clusters(seed).set_index("id")
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
            ids = run.selection(combo.combo)["id"].tolist()
            stats = run.select_stats(combo.combo)
            clusters = pd.DataFrame(stats.get("clusters") or []) if stats is not None else None
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


def _pick_stats(
    tokens: pd.DataFrame, cds: pd.Series, rank: pd.Series, clusters: pd.Series, pool_mix: pd.Series
) -> dict[str, Any]:
    """`picks`'s numbers for one set of rows (see there)."""
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


def cds_vs_gain(run: RunReader, metric: str, recovery: str | None = None) -> tuple[pd.DataFrame, float, float]:
    """Does the degradation signal point where recovery pays? Over the combos that trained on one cluster's
    rows (the strategy with role "per_cluster", `single_cluster`, e.g. variants `cluster_0`, `cluster_1`, ...
    of a sweep), one row per (seed, cluster) (each seed has its own clustering, so a label names different
    rows in different seeds): the combo, size, mean_cds (in that seed's pool), the tokens it trained on
    (train_tokens), its `metric` and gain (the improvement over the pruned model, positive when better).
    Returns (that table, Spearman's rho of mean_cds vs gain over its rows, the two-sided p-value); rho and p
    are NaN with fewer than three rows.
    In a run with `recovery.variants`, `recovery` names the variant whose combos count (each variant trains with
    its own objective or settings, so pooling them would mix recoveries); elsewhere it stays None.
    Refuses an unknown metric and a missing or unknown variant (RunError)."""
    if metric not in run.metrics:
        raise RunError(f"{run.path}: unknown metric {metric!r}; the run has {run.metrics}")
    if recovery not in run.recoveries:
        known = [name for name in run.recoveries if name is not None]
        wanted = "compares recovery variants" if known else "has no recovery variants"
        raise RunError(f"{run.path}: recovery variant {recovery!r}: the run {wanted} {known}")
    pruned = as_float((run.results["baselines"].get("pruned") or {}).get(metric))
    sign = -1.0 if run.results["lower_is_better"].get(metric, True) else 1.0
    values = combo_metrics(run).set_index("combo")[metric]
    tokens = compute_table(run).set_index("combo")["train_tokens"]
    per_cluster = strategy_with_role("per_cluster")
    rows = []
    for combo in run.combos().itertuples(index=False):
        if getattr(combo, "recovery", None) != recovery:
            continue
        stats = run.select_stats(combo.combo)
        if stats is None or math.isnan(values.get(combo.combo, math.nan)):
            continue
        strategy = stats["strategy"]
        if strategy.get("name") != per_cluster:
            continue
        pool = run.clusters(combo.seed)
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
