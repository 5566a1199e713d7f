"""Choosing a setting from a sweep's results, on dev metrics only.

Every choice made from measurements (objective defaults, token-weight settings, hyperparameters, the shipped
recipe, the strategy or budget a study recommends) reads the dev half of the in-distribution held-out rows
(`heldout_<name>_dev_nll` / `_ppl`, `heldout_dev_nll` for the unnamed set; `paser.pipelines.heldout`). The test
half is reported and never chosen on; the out-of-distribution sets, the perplexities, the zero-shot and the
generation tasks are report-only.

`dev_view` is the guard: it copies a `results.json` payload keeping its dev metrics only (those it lists under
`dev_metrics`), so code that picks a setting from the view cannot read a test number, even by mistake.
`best_setting` takes only such a view and refuses a metric that is not one of its dev metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DevResults:
    """A sweep's results reduced to its dev metrics: `metrics` (names), `lower_is_better` for each, and `values`,
    each (strategy, budget, recovery variant)'s values of each dev metric, one per seed with a value (the variant
    is None in a run without `recovery.variants`)."""

    metrics: tuple[str, ...]
    lower_is_better: dict[str, bool]
    values: dict[tuple[str, Any, str | None], dict[str, list[float]]]


@dataclass(frozen=True)
class Choice:
    """The setting `best_setting` picks: its strategy, budget and recovery variant (None: the run has none), the
    metric's mean over `seeds` seeds."""

    strategy: str
    budget: Any
    metric: str
    mean: float
    seeds: int
    recovery: str | None = None


def setting_of(combo: dict[str, Any]) -> tuple[str, Any, str | None]:
    """A `results.json` combination's setting: (strategy, budget, recovery variant or None), the key of
    `DevResults.values`."""
    return combo["strategy"], combo["budget"], combo.get("recovery")


def dev_view(results: dict[str, Any]) -> DevResults:
    """The dev metrics of a `results.json` payload (`paser.pipelines.run.collect_results`), per strategy, budget and
    recovery variant (a combination's `recovery`: each variant trains with its own objective or settings, so two
    variants are two settings, never one), and nothing else: baselines, test metrics and every other metric are
    left out. NaN and missing values are dropped. A payload without `dev_metrics` (a run without an
    in-distribution held-out set, or collected before the split) gives a view with no metric."""
    metrics = tuple(results.get("dev_metrics", []))
    values: dict[tuple[str, Any, str | None], dict[str, list[float]]] = {}
    for combo in results["combos"]:
        recorded = combo.get("metrics") or {}
        setting = values.setdefault(setting_of(combo), {metric: [] for metric in metrics})
        for metric in metrics:
            value = recorded.get(metric)
            if value is not None and not math.isnan(float(value)):
                setting[metric].append(float(value))
    return DevResults(metrics, {metric: bool(results["lower_is_better"][metric]) for metric in metrics}, values)


def best_setting(view: DevResults, metric: str) -> Choice:
    """The (strategy, budget, recovery variant) with the best mean over seeds of dev metric `metric` (lowest where
    lower is better); the first in the sweep's order on a tie. Settings without a value are passed over.

    Refuses: anything but a `DevResults` (TypeError: build one with `dev_view`, so no test metric is in reach), a
    metric that is not one of the view's dev metrics (ValueError naming them: test metrics, out-of-distribution
    sets and tasks are report-only) and a metric no setting has a value of (ValueError).
    """
    if not isinstance(view, DevResults):
        raise TypeError(f"best_setting reads a DevResults (dev_view(results)), not {type(view).__name__}")
    if metric not in view.metrics:
        known = ", ".join(view.metrics) or "none (the run has no in-distribution held-out set)"
        raise ValueError(
            f"{metric!r} is not a dev metric: choices read dev metrics only ({known}); test metrics, "
            "out-of-distribution sets, perplexities, zero-shot and generation tasks are report-only"
        )
    means = {
        setting: (sum(values[metric]) / len(values[metric]), len(values[metric]))
        for setting, values in view.values.items()
        if values[metric]
    }
    if not means:
        raise ValueError(f"no setting has a value of {metric}")
    sign = 1.0 if view.lower_is_better[metric] else -1.0
    (strategy, budget, recovery), (mean, seeds) = min(means.items(), key=lambda item: sign * item[1][0])
    return Choice(strategy, budget, metric, mean, seeds, recovery)
