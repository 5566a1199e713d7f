"""results.json's `summary` and `versus_random` blocks: how sure a sweep's numbers are (`paser.pipelines.stats`).

- `metric_summary`: per (strategy, budget, metric), the mean, sample sd and 95% t-interval of the mean over the
  seeds with a value: run-to-run variation only, the test items held fixed.
- `versus_random`: per strategy other than random, budget and metric, the mean over seeds of (strategy −
  random), each seed paired with random's same seed, and a seeded percentile bootstrap interval. Where both
  sides' evaluations kept per-item values (eval/items.npz, `paser.recovery.items`) the bootstrap resamples seeds and
  test items (`bootstrap` "seeds+items"; "items" with one seed); else seeds only ("seeds"; "none" with one
  seed and no items: no interval).

A metric is recomputed from item sums by its name:
- `{source}_nll`: Σ nll_sum / Σ tokens over the source's items (held-out rows: nats per response token);
- `{source}_ppl`: exp of that (perplexity windows, or a held-out set's perplexity);
- `{source}_acc`: Σ acc / questions;
- `avg_acc`: the mean of the run's other `{task}_acc`, each task's questions resampled on their own.
Items are used for a comparison only when every paired evaluation has them, they give back the recorded
value (else they belong to another evaluation) and the item counts agree between the paired evaluations (the
same test items); otherwise that row falls back to seeds only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paser.pipelines.stats import CONFIDENCE, RESAMPLES, bootstrap_paired_difference, item_totals, t_interval
from paser.recovery.items import read_items
from paser.selection.strategies import strategy_with_role

# What every strategy is compared against (`random`): declared by the strategy's role.
BASELINE_STRATEGY = strategy_with_role("baseline")
BOOTSTRAP_SEED = 0
# Item sums must give back the recorded metric this closely; the recorded value sums the same floats in
# another order.
_MATCH = 1e-6
# A part's (numerator, denominator) item arrays; None: every item counts 1.
_RATIO_COMPONENTS = {"nll": ("nll_sum", "tokens"), "ppl": ("nll_sum", "tokens"), "acc": ("acc", None)}


@dataclass(frozen=True)
class MetricFormula:
    """A metric as item sums: the mean over `parts` ((source, kind): Σ numerator / Σ denominator of that
    source's items), exponentiated when `exponent`."""

    parts: tuple[tuple[str, str], ...]
    exponent: bool

    def combine(self, ratios: list[Any]) -> Any:
        """The metric from each part's ratio (floats, or arrays of one value per bootstrap draw)."""
        value = np.mean(np.stack(ratios), axis=0)
        return np.exp(value) if self.exponent else value


def metric_formula(metric: str, metrics: list[str]) -> MetricFormula | None:
    """How `metric` follows from item sums (see the module docstring); `metrics` are the run's, for avg_acc's
    tasks. None for a metric of another shape (it gets seeds-only intervals)."""
    if metric == "avg_acc":
        tasks = [name[: -len("_acc")] for name in metrics if name.endswith("_acc") and name != "avg_acc"]
        return MetricFormula(tuple((task, "acc") for task in tasks), exponent=False) if tasks else None
    for kind in _RATIO_COMPONENTS:
        suffix = f"_{kind}"
        if metric.endswith(suffix) and len(metric) > len(suffix):
            return MetricFormula(((metric[: -len(suffix)], kind),), exponent=kind == "ppl")
    return None


class ItemResamples:
    """Evaluations' metrics recomputed from their per-item values, under bootstrap draws of the items shared by
    every evaluation of the same source and item count (`paser.pipelines.stats.item_totals`, one call per source:
    every evaluation a column)."""

    def __init__(self, eval_dirs: dict[str, Path], metrics: list[str], resamples: int, seed: int) -> None:
        self.metrics = metrics
        self.resamples = resamples
        self.seed = seed
        self._items = {name: read_items(folder) for name, folder in eval_dirs.items()}
        self._resampled: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def _sums(self, name: str, source: str, kind: str) -> np.ndarray | None:
        """(items × 2): each item's numerator and denominator, or None where the evaluation lacks them."""
        numerator, denominator = _RATIO_COMPONENTS[kind]
        items = self._items.get(name, {})
        top = items.get(f"{source}.{numerator}")
        if top is None or len(top) == 0:
            return None
        bottom = np.ones_like(top) if denominator is None else items.get(f"{source}.{denominator}")
        return None if bottom is None else np.column_stack([top, bottom])

    def _resampled_sums(self, source: str, kind: str) -> dict[str, np.ndarray]:
        """Every evaluation's (resamples × 2) resampled sums of this source's items."""
        key = (source, _RATIO_COMPONENTS[kind][0])
        if key not in self._resampled:
            by_count: dict[int, list[tuple[str, np.ndarray]]] = {}
            for name in self._items:
                sums = self._sums(name, source, kind)
                if sums is not None:
                    by_count.setdefault(len(sums), []).append((name, sums))
            resampled: dict[str, np.ndarray] = {}
            for group in by_count.values():
                totals = item_totals(np.hstack([sums for _, sums in group]), self.resamples, self.seed)
                for column, (name, _) in enumerate(group):
                    resampled[name] = totals[:, 2 * column : 2 * column + 2]
            self._resampled[key] = resampled
        return self._resampled[key]

    def values(self, name: str, metric: str, recorded: float) -> tuple[tuple[int, ...], np.ndarray] | None:
        """(items per part, the metric under each bootstrap draw) for evaluation `name`; None where its items
        cannot give `metric`: none kept, a metric of another shape, or item sums that miss `recorded`."""
        formula = metric_formula(metric, self.metrics)
        if formula is None:
            return None
        counts, full, resampled = [], [], []
        for source, kind in formula.parts:
            sums = self._sums(name, source, kind)
            if sums is None:
                return None
            numerator, denominator = sums.sum(axis=0)
            full.append(numerator / denominator)
            drawn = self._resampled_sums(source, kind)[name]
            with np.errstate(divide="ignore", invalid="ignore"):
                resampled.append(drawn[:, 0] / drawn[:, 1])
            counts.append(len(sums))
        if not math.isclose(float(formula.combine(full)), recorded, rel_tol=_MATCH, abs_tol=1e-12):
            return None
        return tuple(counts), formula.combine(resampled)


def _recorded(results: dict[str, Any]) -> dict[tuple[str, Any, int], dict[str, Any]]:
    """results.json's combo records by (strategy, budget, seed)."""
    return {(record["strategy"], record["budget"], int(record["seed"])): record for record in results["combos"]}


def _metric(record: dict[str, Any] | None, metric: str) -> float | None:
    """A combo's recorded metric; None where the combo, its evaluation or the metric is missing, or NaN."""
    value = ((record or {}).get("metrics") or {}).get(metric)
    return None if value is None or math.isnan(float(value)) else float(value)


def _number(value: float) -> float | None:
    """A float for JSON: NaN as None (JSON has no NaN)."""
    return None if math.isnan(value) else float(value)


def metric_summary(results: dict[str, Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The `summary` block of a results.json payload (`paser.pipelines.run.collect_results`): {"confidence",
    "interval", "rows": one per strategy × budget × metric, in that order, each {"strategy", "budget", "metric",
    "seeds" (seeds with a value), "mean", "sd", "lo", "hi"}} (None where undefined: sd, lo and hi with one seed)."""
    recorded = _recorded(results)
    rows = []
    for strategy in results["strategies"]:
        for budget in results["budgets"]:
            for metric in results["metrics"]:
                values = [_metric(recorded.get((strategy, budget, seed)), metric) for seed in results["seeds"]]
                summary = t_interval([value for value in values if value is not None], confidence)
                rows.append(
                    {
                        "strategy": strategy,
                        "budget": budget,
                        "metric": metric,
                        "seeds": summary.n,
                        "mean": _number(summary.mean),
                        "sd": _number(summary.sd),
                        "lo": _number(summary.lo),
                        "hi": _number(summary.hi),
                    }
                )
    return {"confidence": confidence, "interval": "Student t over seeds: mean ± t·sd/√n", "rows": rows}


def verdict(lo: float | None, hi: float | None, lower_is_better: bool) -> str | None:
    """ "better" or "worse" (than the baseline) where the interval of strategy − baseline excludes 0, "unclear"
    where it covers 0, None without an interval."""
    if lo is None or hi is None:
        return None
    if lo <= 0 <= hi:
        return "unclear"
    return "better" if (hi < 0) == lower_is_better else "worse"


def versus_random(
    results: dict[str, Any],
    run_dir: str | Path,
    *,
    baseline: str = BASELINE_STRATEGY,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """The `versus_random` block of a results.json payload for the run at `run_dir`: {"baseline", "confidence",
    "resamples", "seed", "rows": one per strategy (other than the baseline) × budget × metric, each {"strategy",
    "budget", "metric", "pairs" (seeds both sides have), "difference" (mean over pairs of strategy − baseline),
    "lo", "hi" (the bootstrap interval), "bootstrap" ("seeds+items", "items", "seeds" or "none"), "items"
    (test items resampled, None without), "lower_is_better", "verdict" (`verdict`)}}. A run without the
    baseline strategy gets no rows and a "note" saying so."""
    block: dict[str, Any] = {"baseline": baseline, "confidence": confidence, "resamples": resamples, "seed": seed}
    if baseline not in results["strategies"]:
        return {**block, "rows": [], "note": f"the run has no {baseline} strategy to compare with"}
    recorded = _recorded(results)
    evaluated = {
        record["combo"]: Path(run_dir) / "combos" / record["combo"] / "eval"
        for record in results["combos"]
        if record.get("metrics")
    }
    items = ItemResamples(evaluated, list(results["metrics"]), resamples, seed)
    lower_is_better = results.get("lower_is_better", {})
    rows = []
    for strategy in results["strategies"]:
        if strategy == baseline:
            continue
        for budget in results["budgets"]:
            for metric in results["metrics"]:
                pairs = [
                    (recorded[(strategy, budget, run_seed)], recorded[(baseline, budget, run_seed)])
                    for run_seed in results["seeds"]
                    if _metric(recorded.get((strategy, budget, run_seed)), metric) is not None
                    and _metric(recorded.get((baseline, budget, run_seed)), metric) is not None
                ]
                row = _comparison(pairs, metric, items, resamples, seed, confidence)
                lower = bool(lower_is_better.get(metric, not metric.endswith("_acc")))
                rows.append(
                    {
                        "strategy": strategy,
                        "budget": budget,
                        "metric": metric,
                        **row,
                        "lower_is_better": lower,
                        "verdict": verdict(row["lo"], row["hi"], lower),
                    }
                )
    return {**block, "rows": rows}


def _comparison(
    pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    metric: str,
    items: ItemResamples,
    resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    """One row's numbers: the paired difference and its interval, over items too where both sides allow."""
    if not pairs:
        return {"pairs": 0, "difference": None, "lo": None, "hi": None, "bootstrap": "none", "items": None}
    first = [_metric(record, metric) for record, _ in pairs]
    second = [_metric(record, metric) for _, record in pairs]
    drawn = [
        items.values(record["combo"], metric, value)
        for side, values in ((0, first), (1, second))
        for record, value in zip((pair[side] for pair in pairs), values, strict=True)
    ]
    counts = {None if entry is None else entry[0] for entry in drawn}
    if None not in counts and len(counts) == 1:
        resampled = np.column_stack([entry[1] for entry in drawn])
        interval = bootstrap_paired_difference(
            first,
            second,
            first_items=resampled[:, : len(pairs)],
            second_items=resampled[:, len(pairs) :],
            seed=seed,
            confidence=confidence,
        )
        method = "seeds+items" if len(pairs) > 1 else "items"
        item_count: int | None = sum(counts.pop())
    else:
        interval = bootstrap_paired_difference(first, second, resamples=resamples, seed=seed, confidence=confidence)
        method = "seeds" if len(pairs) > 1 else "none"
        item_count = None
    return {
        "pairs": len(pairs),
        "difference": _number(interval.estimate),
        "lo": _number(interval.lo),
        "hi": _number(interval.hi),
        "bootstrap": method,
        "items": item_count,
    }
