"""Choosing a setting reads dev metrics only: the view holds no other number and every other metric is refused."""

from __future__ import annotations

import math

import pytest

from paser.pipelines.choose import Choice, DevResults, best_setting, dev_view

DEV_METRICS = ["heldout_alpaca_dev_nll", "heldout_alpaca_dev_ppl"]
REPORT_ONLY = [
    "heldout_alpaca_test_nll",
    "heldout_alpaca_nll",
    "heldout_t0_nll",
    "wikitext2_ppl",
    "gen_labels_exact_match",
]


def _results() -> dict:
    """Two settings, two seeds: `paser` is better on dev, `random` on test and every report-only metric."""
    dev = {("paser", 0.1): [2.0, 2.2], ("random", 0.1): [2.5, 2.5]}
    test = {("paser", 0.1): [3.0, 3.0], ("random", 0.1): [1.0, 1.0]}
    combos = []
    for (strategy, budget), values in dev.items():
        for seed, value in enumerate(values):
            metrics = {"heldout_alpaca_dev_nll": value, "heldout_alpaca_dev_ppl": math.exp(value)}
            metrics |= {metric: test[(strategy, budget)][seed] for metric in REPORT_ONLY}
            combos.append({"strategy": strategy, "budget": budget, "seed": seed, "metrics": metrics})
    names = DEV_METRICS + REPORT_ONLY
    return {
        "metrics": names,
        "dev_metrics": DEV_METRICS,
        "test_metrics": ["heldout_alpaca_test_nll"],
        "lower_is_better": {name: name != "gen_labels_exact_match" for name in names},
        "baselines": {"original": {name: 0.0 for name in names}, "pruned": {name: 9.0 for name in names}},
        "combos": combos,
    }


def test_the_best_setting_is_chosen_on_the_dev_metric():
    assert best_setting(dev_view(_results()), "heldout_alpaca_dev_nll") == Choice(
        "paser", 0.1, "heldout_alpaca_dev_nll", pytest.approx(2.1), 2
    )


@pytest.mark.parametrize("metric", REPORT_ONLY)
def test_a_test_or_report_only_metric_is_refused(metric):
    with pytest.raises(ValueError, match="not a dev metric"):
        best_setting(dev_view(_results()), metric)


def test_the_view_holds_dev_values_only():
    view = dev_view(_results())
    assert view.metrics == tuple(DEV_METRICS)
    assert set(view.values) == {("paser", 0.1, None), ("random", 0.1, None)}  # no baseline
    for values in view.values.values():
        assert set(values) == set(DEV_METRICS)
    test_values = {1.0, 3.0}
    assert not test_values & {value for values in view.values.values() for value in values["heldout_alpaca_dev_nll"]}


def test_raw_results_are_refused_so_no_test_number_is_in_reach():
    with pytest.raises(TypeError, match="dev_view"):
        best_setting(_results(), "heldout_alpaca_dev_nll")


def test_results_without_an_in_distribution_set_leave_nothing_to_choose_on():
    results = {**_results(), "dev_metrics": []}
    with pytest.raises(ValueError, match="no in-distribution held-out set"):
        best_setting(dev_view(results), "heldout_alpaca_dev_nll")


def test_missing_values_are_passed_over_and_higher_is_better_is_respected():
    results = _results()
    results["combos"][0]["metrics"]["heldout_alpaca_dev_nll"] = math.nan
    view = dev_view(results)
    assert view.values[("paser", 0.1, None)]["heldout_alpaca_dev_nll"] == [2.2]
    flipped = DevResults(view.metrics, {metric: False for metric in view.metrics}, view.values)
    assert best_setting(flipped, "heldout_alpaca_dev_nll").strategy == "random"


def test_recovery_variants_are_settings_of_their_own():
    """With `recovery.variants` each combination names its variant: the same selections trained two ways are two
    settings (pooling them would average objectives), and the choice names its variant."""
    results = _results()
    combos = []
    for combo in results["combos"]:
        for recovery, shift in (("sft", 0.0), ("kd", -0.5 if combo["strategy"] == "random" else 0.3)):
            metrics = {**combo["metrics"], "heldout_alpaca_dev_nll": combo["metrics"]["heldout_alpaca_dev_nll"] + shift}
            combos.append({**combo, "recovery": recovery, "metrics": metrics})
    view = dev_view({**results, "combos": combos})
    assert set(view.values) == {(s, 0.1, r) for s in ("paser", "random") for r in ("sft", "kd")}
    assert best_setting(view, "heldout_alpaca_dev_nll") == Choice(
        "random", 0.1, "heldout_alpaca_dev_nll", pytest.approx(2.0), 2, "kd"
    )
