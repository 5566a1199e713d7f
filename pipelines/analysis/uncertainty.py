"""results.json's `summary` and `versus_random` blocks: how sure a sweep's numbers are
(`paser.pipelines.analysis.stats`).

- `metric_summary`: per (strategy, budget, metric), the mean, sample sd and 95% t-interval of the mean over the
  seeds with a value: run-to-run variation only, the test items held fixed.
- `versus_random`: per strategy other than random, budget and metric, the mean over seeds of (strategy −
  random), each seed paired with random's same seed; the seed-level paired t-test and sign-flip permutation
  test of that difference (`paser.pipelines.analysis.stats.paired_tests`), on which the verdict rests; and, as a
  secondary interval, a seeded percentile bootstrap. Where both sides' evaluations kept per-item values
  (eval/items.npz, `paser.recovery.items`) the bootstrap resamples seeds and test items (`bootstrap`
  "seeds+items"; "items" with one seed); else seeds only ("seeds"; "none" with one seed and no items: no
  interval).

The verdict rule (`verdict`): "better" or "worse" (in the metric's direction) needs at least `MIN_SEEDS` paired
seeds, the paired t-test's p < `ALPHA` and the sign-flip test at its exact level: p < `ALPHA`, or, where the
test cannot go that low (five seeds: its smallest two-sided p is 2/2^5 = 0.0625), p at its smallest, i.e.
every seed's difference on the same side. Otherwise "unclear", or "too few seeds" with two to four pairs; None
with fewer than two. Both p-values are in every row, whatever the verdict. What five seeds can and cannot show
is in `paser.pipelines.analysis.stats`.

Per-item values come from the run folder (every evaluated combination's eval/items.npz) or from one committed
file holding them all (`write_run_items` / `read_run_items`: what a study commits so that its verdicts and
intervals can be recomputed without the run folder).

A metric is recomputed from item sums by its name:
- `{source}_nll`: Σ nll_sum / Σ tokens over the source's items (held-out rows: nats per response token);
- `{source}_ppl`: exp of that (perplexity windows, or a held-out set's perplexity);
- `{source}_acc`: Σ acc / questions;
- `avg_acc`: the mean of the run's other `{task}_acc`, each task's questions resampled on their own;
- the generation tasks' `{task}_{metric}` (`paser.recovery.generation`: items are the greedy answers):
  `exact_match`, `mean_length` and `capped` are the mean of each answer's value (0/1 match, generated tokens,
  0/1 capped): Σ value / answers; `repeat_<n>` is Σ repeated_<n> / Σ ngrams_<n> (repeated n-grams over all
  n-grams, each answer counted within itself). `distinct_<n>` counts n-grams across all answers together, which
  per-answer values cannot give back: seeds only.
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

from paser.common.io import write_atomic
from paser.pipelines.analysis.stats import (
    CONFIDENCE,
    RESAMPLES,
    PairedTests,
    bootstrap_paired_difference,
    item_totals,
    paired_tests,
    t_interval,
)
from paser.pipelines.layout import RunLayout
from paser.recovery.items import read_items
from paser.selection.strategies import strategy_with_role

# What every strategy is compared against (`random`): declared by the strategy's role.
BASELINE_STRATEGY = strategy_with_role("baseline")
BOOTSTRAP_SEED = 0
# The verdict rule (module docstring): the level both seed-level tests are held to, and the fewest paired seeds
# a verdict is given on.
ALPHA = 0.05
MIN_SEEDS = 5
VERDICT_RULE = (
    f"better/worse: at least {MIN_SEEDS} paired seeds, paired t p < {ALPHA} and the sign-flip test at its exact "
    f"level (p < {ALPHA}, or its smallest p, 2/2^n, where that is larger: every seed on the same side); else "
    'unclear; "too few seeds" under the minimum'
)
# Item sums must give back the recorded metric this closely; the recorded value sums the same floats in
# another order.
_MATCH = 1e-6
# A part's (numerator, denominator) item arrays by the metric name's suffix; None: every item counts 1. The
# generation tasks' names are `paser.recovery.generation`'s metrics and item arrays.
_RATIO_COMPONENTS = {
    "nll": ("nll_sum", "tokens"),
    "ppl": ("nll_sum", "tokens"),
    "acc": ("acc", None),
    "exact_match": ("exact_match", None),
    "mean_length": ("length", None),
    "capped": ("capped", None),
    "repeat_3": ("repeated_3", "ngrams_3"),
    "repeat_4": ("repeated_4", "ngrams_4"),
}


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
    every evaluation of the same source and item count (`paser.pipelines.analysis.stats.item_totals`, one call per
    source: every evaluation a column). `items`: each evaluation's arrays (`paser.recovery.items` names) by its name."""

    def __init__(self, items: dict[str, dict[str, np.ndarray]], metrics: list[str], resamples: int, seed: int) -> None:
        self.metrics = metrics
        self.resamples = resamples
        self.seed = seed
        self._items = items
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


def run_items(results: dict[str, Any], run_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The per-item values of every evaluated combination of `results` (a results.json payload) in the run
    folder `run_dir` (combos/{combo}/eval/items.npz), by combination, in results.json's order; a combination
    whose evaluation kept none is absent."""
    items = {}
    for record in results["combos"]:
        if record.get("metrics"):
            arrays = read_items(RunLayout(run_dir).combo(record["combo"]).eval.root)
            if arrays:
                items[record["combo"]] = arrays
    return items


def write_run_items(items: dict[str, dict[str, np.ndarray]], path: str | Path) -> Path:
    """Write `items` (from `run_items`) to one compressed .npz file at `path`, atomically: each array under
    `{combo}/{source}.{component}`, as float64 (the item sums must give back the recorded metrics to 1e-6).
    Returns the path. Refuses a combination name holding "/" (ValueError)."""
    arrays = {}
    for combo, values in items.items():
        if "/" in combo:
            raise ValueError(f"combination name {combo!r} holds '/', which separates it from the array name")
        arrays.update({f"{combo}/{name}": np.asarray(array, dtype=np.float64) for name, array in values.items()})

    def write(target: Path) -> None:
        with target.open("wb") as stream:
            np.savez_compressed(stream, **arrays)

    return write_atomic(Path(path), write)


def read_run_items(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The per-item values `write_run_items` wrote to `path`, by combination (in the file's order)."""
    items: dict[str, dict[str, np.ndarray]] = {}
    with np.load(Path(path)) as stored:
        for key in stored.files:
            combo, name = key.split("/", 1)
            items.setdefault(combo, {})[name] = stored[key]
    return items


def _recorded(results: dict[str, Any]) -> dict[tuple[str, Any, int, str | None], dict[str, Any]]:
    """results.json's combo records by (strategy, budget, seed, recovery variant or None)."""
    return {
        (record["strategy"], record["budget"], int(record["seed"]), record.get("recovery")): record
        for record in results["combos"]
    }


def recoveries(results: dict[str, Any]) -> list[str | None]:
    """The run's recovery variants (`recovery.variants`, results.json's `recoveries`); [None] for a run without."""
    return list(results.get("recoveries") or [None])


def _with_recovery(recovery: str | None) -> dict[str, str]:
    """A block row's `recovery` entry: the variant, or nothing for a run without variants (its rows as before)."""
    return {} if recovery is None else {"recovery": recovery}


def _metric(record: dict[str, Any] | None, metric: str) -> float | None:
    """A combo's recorded metric; None where the combo, its evaluation or the metric is missing, or NaN."""
    value = ((record or {}).get("metrics") or {}).get(metric)
    return None if value is None or math.isnan(float(value)) else float(value)


def _number(value: float) -> float | None:
    """A float for JSON: NaN as None (JSON has no NaN)."""
    return None if math.isnan(value) else float(value)


def metric_summary(results: dict[str, Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The `summary` block of a results.json payload (`paser.pipelines.run.collect_results`): {"confidence",
    "interval", "rows": one per strategy × budget × metric (× recovery variant, after the strategy, where the run
    has `recoveries`), in that order, each {"strategy", ("recovery",) "budget", "metric",
    "seeds" (seeds with a value), "mean", "sd", "lo", "hi"}} (None where undefined: sd, lo and hi with one seed)."""
    recorded = _recorded(results)
    rows = []
    for strategy in results["strategies"]:
        for recovery in recoveries(results):
            for budget in results["budgets"]:
                for metric in results["metrics"]:
                    values = [
                        _metric(recorded.get((strategy, budget, seed, recovery)), metric) for seed in results["seeds"]
                    ]
                    summary = t_interval([value for value in values if value is not None], confidence)
                    rows.append(
                        {
                            "strategy": strategy,
                            **_with_recovery(recovery),
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


def verdict(
    tests: PairedTests, lower_is_better: bool, *, alpha: float = ALPHA, min_seeds: int = MIN_SEEDS
) -> str | None:
    """The verdict on strategy − baseline from its seed-level `tests` (module docstring): "better" or "worse" (in
    the metric's direction) where at least `min_seeds` seeds are paired, the paired t-test's p < `alpha` and
    the sign-flip test's p < `alpha` or at its smallest (`tests.smallest_p`, where that exceeds `alpha`);
    "unclear" where a test falls short; "too few seeds" with 2 to `min_seeds` − 1 pairs; None with fewer than
    two (no test)."""
    if tests.n < 2:
        return None
    if tests.n < min_seeds:
        return "too few seeds"
    # The sign-flip p is a count over 2^n patterns, so at its smallest it equals `smallest_p` exactly.
    permutation_level = max(alpha, tests.smallest_p)
    if not (tests.t_p < alpha and tests.permutation_p <= permutation_level):
        return "unclear"
    return "better" if (tests.mean < 0) == lower_is_better else "worse"


def versus_random(
    results: dict[str, Any],
    run_dir: str | Path | None = None,
    *,
    items: dict[str, dict[str, np.ndarray]] | None = None,
    baseline: str = BASELINE_STRATEGY,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """The `versus_random` block of a results.json payload: {"baseline", "confidence", "resamples", "seed",
    "alpha", "min_seeds", "rule" (`VERDICT_RULE`), "rows": one per strategy (other than the baseline) × budget
    × metric (× recovery variant where the run has `recoveries`: "recovery", each compared with the baseline
    trained the same way), each {"strategy", "budget", "metric", "pairs" (seeds both sides have), "difference"
    (mean over pairs of strategy − baseline), "t_p" (paired t-test), "permutation_p" (sign-flip test), "permutation"
    ("exact" or "monte carlo"), "sign_flips" (sign patterns counted), "lo", "hi" (the bootstrap interval),
    "bootstrap" ("seeds+items", "items", "seeds" or "none"), "items" (test items resampled, None without),
    "lower_is_better", "verdict" (`verdict`)}}; p-values are None with fewer than two pairs.

    Per-item values are `items` (by combination, e.g. `read_run_items` of a committed file) where given, else
    those of the run folder `run_dir` (`run_items`); with neither, the bootstrap resamples the seeds only. A
    run without the baseline strategy gets no rows and a "note" saying so."""
    block: dict[str, Any] = {"baseline": baseline, "confidence": confidence, "resamples": resamples, "seed": seed}
    block |= {"alpha": ALPHA, "min_seeds": MIN_SEEDS, "rule": VERDICT_RULE}
    if baseline not in results["strategies"]:
        return {**block, "rows": [], "note": f"the run has no {baseline} strategy to compare with"}
    recorded = _recorded(results)
    if items is None:
        items = run_items(results, run_dir) if run_dir is not None else {}
    resampled_items = ItemResamples(items, list(results["metrics"]), resamples, seed)
    lower_is_better = results.get("lower_is_better", {})
    rows = []
    for strategy in results["strategies"]:
        if strategy == baseline:
            continue
        for recovery in recoveries(results):  # within a variant: random trained the same way
            for budget in results["budgets"]:
                for metric in results["metrics"]:
                    ours = [(strategy, budget, run_seed, recovery) for run_seed in results["seeds"]]
                    pairs = [
                        (recorded[key], recorded[(baseline, *key[1:])])
                        for key in ours
                        if _metric(recorded.get(key), metric) is not None
                        and _metric(recorded.get((baseline, *key[1:])), metric) is not None
                    ]
                    row, tests = _comparison(pairs, metric, resampled_items, resamples, seed, confidence)
                    lower = bool(lower_is_better.get(metric, not metric.endswith("_acc")))
                    rows.append(
                        {
                            "strategy": strategy,
                            **_with_recovery(recovery),
                            "budget": budget,
                            "metric": metric,
                            **row,
                            "lower_is_better": lower,
                            "verdict": verdict(tests, lower),
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
) -> tuple[dict[str, Any], PairedTests]:
    """One row's numbers (the paired difference, its seed-level tests, and its bootstrap interval, over items
    too where both sides allow) and the tests themselves."""
    first = [_metric(record, metric) for record, _ in pairs]
    second = [_metric(record, metric) for _, record in pairs]
    tests = paired_tests(first, second)
    numbers = {
        "pairs": len(pairs),
        "difference": _number(tests.mean),
        "t_p": _number(tests.t_p),
        "permutation_p": _number(tests.permutation_p),
        "permutation": tests.permutation,
        "sign_flips": tests.sign_flips,
    }
    if not pairs:
        return {**numbers, "lo": None, "hi": None, "bootstrap": "none", "items": None}, tests
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
    interval_numbers = {"lo": _number(interval.lo), "hi": _number(interval.hi), "bootstrap": method}
    return {**numbers, **interval_numbers, "items": item_count}, tests
