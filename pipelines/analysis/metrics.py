"""The tables of a run's metrics, each a function of the run's reader (`paser.pipelines.analysis.reader`): every
combo's metrics (`combo_metrics`), the results table with the gap recovered (`results_table`, `gap_metrics`,
`gap_notes`), the summary over seeds (`summary_table`) and each strategy against random (`versus_random_table`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from paser.pipelines.analysis.reader import BASELINES, RunError, RunReader, as_float, block_table, format_budget
from paser.pipelines.analysis.uncertainty import metric_summary, versus_random


def gap_recovered(recovered: Any, pruned: float, original: float) -> Any:
    """(recovered − pruned) / (original − pruned) for a value or a Series: 1 = the pruning damage undone, 0 =
    none, the same formula whatever the metric's direction; NaN without a gap."""
    gap = original - pruned
    return (recovered - pruned) / gap if gap != 0 and math.isfinite(gap) else math.nan


def combo_metrics(run: RunReader) -> pd.DataFrame:
    """One row per expected combo: combo, strategy, recovery (where the run has variants), budget, seed,
    evaluated and every metric (NaN where missing)."""
    rows = []
    for combo in run.combos().itertuples(index=False):
        metrics = run.combo_record(combo.combo).get("metrics") or {}
        rows.append(
            {
                "combo": combo.combo,
                "strategy": combo.strategy,
                **{column: getattr(combo, column) for column in run.recovery_columns},
                "budget": combo.budget,
                "seed": combo.seed,
                "evaluated": bool(metrics),
                **{metric: as_float(metrics.get(metric)) for metric in run.metrics},
            }
        )
    return pd.DataFrame(rows)


def results_table(run: RunReader) -> pd.DataFrame:
    """One row per (strategy, budget) (per (strategy, recovery variant, budget) where the run has variants), then
    the baselines as rows "original" and "pruned".

    Columns: strategy, recovery (the variant, where the run has any; None on the baselines), budget,
    budget_rows, seeds (combos of the row with metrics), then for each metric
    `{metric}_mean` and `{metric}_std` (sample standard deviation over seeds, ddof=1: NaN with one seed),
    then `{metric}_gap_recovered` for each metric both baselines have (`gap_metrics`): (mean − pruned) /
    (original − pruned), a fraction (1 = the original's value, 0 = no better than the pruned model), the same
    formula whatever the metric's direction. It is NaN where original == pruned (stated in `gap_notes`).
    Because the formula is linear, the gap of the mean equals the mean of the per-seed gaps. A baseline
    row has its value as the mean, NaN std and seeds. Missing metrics are NaN and listed by
    `RunReader.missing()`. Refuses a strategy and budget whose seeds record different budget_rows (RunError).
    """
    per_combo = combo_metrics(run)
    budget_rows = run.combos().set_index("combo")["budget_rows"]
    rows = []
    for strategy, recovery, budget in _groups(run):
        group = per_combo[(per_combo["strategy"] == strategy) & (per_combo["budget"] == budget)]
        if recovery is not None:
            group = group[group["recovery"] == recovery]
        known_rows = budget_rows[group["combo"]].dropna().unique()
        if len(known_rows) > 1:
            raise RunError(
                f"{run.layout.results}: {strategy} at budget {format_budget(budget)} has different "
                f"budget_rows across seeds ({sorted(int(value) for value in known_rows)})"
            )
        row: dict[str, Any] = {
            "strategy": strategy,
            **{column: recovery for column in run.recovery_columns},
            "budget": budget,
            "budget_rows": known_rows[0] if len(known_rows) else pd.NA,
            "seeds": int(group["evaluated"].sum()),
        }
        for metric in run.metrics:
            values = group[metric].dropna()
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    baselines = run.results["baselines"]
    for name in BASELINES:
        values = baselines.get(name) or {}
        row = {"strategy": name, **dict.fromkeys(run.recovery_columns), "budget": math.nan}
        row |= {"budget_rows": pd.NA, "seeds": pd.NA}
        for metric in run.metrics:
            row[f"{metric}_mean"] = as_float(values.get(metric))
            row[f"{metric}_std"] = math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    for metric in gap_metrics(run):
        original, pruned = (as_float(baselines[name][metric]) for name in BASELINES)
        # + 0.0 turns the pruned row's -0.0 (0 / a negative gap) into 0.0.
        table[f"{metric}_gap_recovered"] = gap_recovered(table[f"{metric}_mean"], pruned, original) + 0.0
    table["budget_rows"] = table["budget_rows"].astype("Int64")
    table["seeds"] = table["seeds"].astype("Int64")
    return table


def _groups(run: RunReader) -> list[tuple[str, str | None, float | str]]:
    """The (strategy, recovery variant or None, budget) of each row of the results table, in its order."""
    return [
        (strategy, recovery, budget)
        for strategy in run.strategies
        for recovery in run.recoveries
        for budget in run.budgets
    ]


def gap_metrics(run: RunReader) -> list[str]:
    """The metrics both baselines have a value for: those that get a gap-recovered column."""
    baselines = run.results["baselines"]
    return [
        metric
        for metric in run.metrics
        if all(not math.isnan(as_float((baselines.get(name) or {}).get(metric))) for name in BASELINES)
    ]


def gap_notes(run: RunReader) -> list[str]:
    """Statements about the results table a reader needs: metrics whose pruning gap is undefined
    (original == pruned) and metrics without a gap column (a baseline lacks them)."""
    baselines = run.results["baselines"]
    notes = []
    with_gap = gap_metrics(run)
    for metric in run.metrics:
        if metric not in with_gap:
            absent = [name for name in BASELINES if math.isnan(as_float((baselines.get(name) or {}).get(metric)))]
            notes.append(f"{metric}: no gap recovered (no {' and no '.join(absent)} baseline value)")
            continue
        original, pruned = (as_float(baselines[name][metric]) for name in BASELINES)
        if original == pruned:
            notes.append(
                f"{metric}: gap recovered undefined (NaN): original and pruned are equal ({original:g}), "
                "pruning left nothing to recover"
            )
    return notes


def summary_table(run: RunReader) -> pd.DataFrame:
    """Per strategy × budget × metric (× recovery variant, column `recovery`, where the run has variants): seeds
    (with a value), mean, sd (ddof=1) and the 95% t-interval [lo, hi]
    of the mean over seeds (NaN where undefined). results.json's `summary`; computed from the combos'
    metrics for a run written before it had one (`paser.pipelines.analysis.uncertainty.metric_summary`)."""
    block = run.results.get("summary") or metric_summary(run.results)
    numeric = ("mean", "sd", "lo", "hi")
    labels = ("strategy", *run.recovery_columns, "budget", "metric", "seeds")
    return block_table(block["rows"], (*labels, *numeric), numeric)


def versus_random_table(run: RunReader) -> pd.DataFrame:
    """Per strategy other than random × budget × metric (× recovery variant, column `recovery`, where the run
    has variants: each compared with random trained the same way): pairs (seeds both have), difference (mean over
    pairs of strategy − random), t_p and permutation_p (the paired t-test's and the sign-flip test's
    two-sided p-values over seeds; permutation: "exact" or "monte carlo", sign_flips: the sign patterns
    counted), the secondary bootstrap interval [lo, hi], bootstrap (what it resampled: seeds+items, items,
    seeds or none), items, lower_is_better and verdict (better, worse, unclear, too few seeds, or None
    with fewer than two pairs; the rule is `paser.pipelines.analysis.uncertainty.VERDICT_RULE`). results.json's
    `versus_random`; computed from the run folder for a run written before it had one, or before its
    verdicts rested on the seed-level tests (`paser.pipelines.analysis.uncertainty.versus_random`). Empty without a
    random strategy."""
    block = run.results.get("versus_random") or {}
    if "rule" not in block:
        block = versus_random(run.results, run.path)
    numeric = ("difference", "t_p", "permutation_p", "sign_flips", "lo", "hi", "items")
    labels = ("strategy", *run.recovery_columns, "budget", "metric", "pairs")
    columns = (*labels, *numeric, "permutation", "bootstrap", "lower_is_better")
    return block_table(block["rows"], (*columns, "verdict"), numeric)
