"""results.json's `summary` and `versus_random` (pipelines/uncertainty.py) on the fake run of
tests/pipelines/fake_run.py, whose evaluations keep per-item values that give back their metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from paser.pipelines.results import load_run
from paser.pipelines.uncertainty import MetricFormula, metric_formula, metric_summary, verdict, versus_random
from paser.recovery.items import ITEMS_FILE
from tests.pipelines.fake_run import build_fake_run, item_values


def results_of(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def row_of(block, strategy, budget, metric):
    (row,) = [r for r in block["rows"] if (r["strategy"], r["budget"], r["metric"]) == (strategy, budget, metric)]
    return row


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory):
    return build_fake_run(tmp_path_factory.mktemp("uncertainty") / "run")


def test_metric_formulas_follow_the_metric_names():
    metrics = ["wikitext2_ppl", "boolq_acc", "piqa_acc", "avg_acc", "heldout_t0_nll", "heldout_t0_nll_sentiment"]
    assert metric_formula("wikitext2_ppl", metrics) == MetricFormula((("wikitext2", "ppl"),), exponent=True)
    assert metric_formula("heldout_t0_nll", metrics) == MetricFormula((("heldout_t0", "nll"),), exponent=False)
    assert metric_formula("avg_acc", metrics) == MetricFormula((("boolq", "acc"), ("piqa", "acc")), exponent=False)
    assert metric_formula("heldout_t0_nll_sentiment", metrics) is None  # per category: seeds only


def test_summary_is_mean_sd_and_t_interval_over_seeds(complete_run):
    row = row_of(metric_summary(results_of(complete_run)), "paser", 0.1, "wikitext2_ppl")
    # 30 and 34: sd sqrt(8); t(0.975, 1 df) = 12.7062
    half = 12.7062047 * math.sqrt(8) / math.sqrt(2)
    assert (row["seeds"], row["mean"]) == (2, 32.0) and row["sd"] == pytest.approx(math.sqrt(8))
    assert row["lo"] == pytest.approx(32 - half) and row["hi"] == pytest.approx(32 + half)


def test_a_single_seed_has_a_mean_and_no_interval(tmp_path):
    results = results_of(build_fake_run(tmp_path / "run", missing_evals=("random-b0.2-s1",)))
    row = row_of(metric_summary(results), "random", 0.2, "piqa_acc")
    assert (row["seeds"], row["mean"], row["sd"], row["lo"], row["hi"]) == (1, 0.58, None, None, None)


def test_paired_differences_resample_seeds_and_items_where_both_sides_kept_them(complete_run):
    block = versus_random(results_of(complete_run), complete_run)
    assert {row["strategy"] for row in block["rows"]} == {"paser"}
    ppl = row_of(block, "paser", 0.1, "wikitext2_ppl")
    # paser 30, 34 against random 38, 36
    assert ppl["difference"] == pytest.approx(-5.0) and ppl["pairs"] == 2
    assert (ppl["bootstrap"], ppl["items"], ppl["verdict"]) == ("seeds+items", 4, "better")
    assert ppl["lo"] < -5.0 < ppl["hi"] < 0
    assert row_of(block, "paser", 0.1, "avg_acc")["items"] == 100  # BoolQ's and PIQA's 50 questions each
    assert row_of(block, "paser", 0.1, "piqa_acc")["verdict"] == "better"
    # BoolQ at 0.2: 0.60 and 0.60 against 0.60 and 0.62
    boolq = row_of(block, "paser", 0.2, "boolq_acc")
    assert boolq["difference"] == pytest.approx(-0.01) and boolq["verdict"] == "unclear"


def test_a_combo_without_items_leaves_its_comparison_to_the_seeds(tmp_path):
    run_dir = build_fake_run(tmp_path / "run", without_items=("random-b0.1-s1",))
    block = versus_random(results_of(run_dir), run_dir)
    fallback = row_of(block, "paser", 0.1, "heldout_nll")
    assert (fallback["bootstrap"], fallback["items"]) == ("seeds", None)
    # two seeds alone: the interval spans their differences, -0.4 and -0.1
    assert (fallback["lo"], fallback["hi"]) == pytest.approx((-0.4, -0.1))
    assert row_of(block, "paser", 0.2, "heldout_nll")["bootstrap"] == "seeds+items"


def test_items_that_do_not_give_back_the_recorded_metric_are_not_used(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    stale = item_values({"wikitext2_ppl": 50.0, "boolq_acc": 0.6, "piqa_acc": 0.6, "heldout_nll": 2.5})
    np.savez(run_dir / "combos" / "paser-b0.1-s0" / "eval" / ITEMS_FILE, **stale)
    block = versus_random(results_of(run_dir), run_dir)
    assert row_of(block, "paser", 0.1, "wikitext2_ppl")["bootstrap"] == "seeds"
    assert row_of(block, "paser", 0.1, "boolq_acc")["bootstrap"] == "seeds+items"  # its items still match


def test_one_pair_without_items_has_no_interval(tmp_path):
    run_dir = build_fake_run(tmp_path / "run", missing_evals=("random-b0.2-s1",), without_items=("paser-b0.2-s0",))
    row = row_of(versus_random(results_of(run_dir), run_dir), "paser", 0.2, "piqa_acc")
    assert (row["pairs"], row["bootstrap"], row["lo"], row["hi"], row["verdict"]) == (1, "none", None, None, None)
    assert row["difference"] == pytest.approx(0.08)


def test_one_pair_with_items_gets_an_item_interval(tmp_path):
    run_dir = build_fake_run(tmp_path / "run", missing_evals=("random-b0.2-s1",))
    row = row_of(versus_random(results_of(run_dir), run_dir), "paser", 0.2, "piqa_acc")
    assert (row["pairs"], row["bootstrap"], row["items"]) == (1, "items", 50)
    assert row["lo"] < row["difference"] < row["hi"]


def test_paired_differences_are_the_same_on_every_call(complete_run):
    results = results_of(complete_run)
    assert versus_random(results, complete_run) == versus_random(results, complete_run)


def test_a_run_without_random_has_no_comparison(complete_run):
    results = {**results_of(complete_run), "strategies": ["paser"]}
    block = versus_random(results, complete_run)
    assert block["rows"] == [] and "no random strategy" in block["note"]


def test_verdict_follows_the_metric_direction():
    assert verdict(-0.3, -0.1, lower_is_better=True) == "better"
    assert verdict(-0.3, -0.1, lower_is_better=False) == "worse"
    assert verdict(-0.3, 0.1, lower_is_better=True) == "unclear"
    assert verdict(None, None, lower_is_better=True) is None


def test_run_results_reads_the_blocks_results_json_has(tmp_path):
    run = load_run(build_fake_run(tmp_path / "run"))
    computed = run.versus_random()
    assert computed.loc[0, "bootstrap"] == "seeds+items"
    path = run.path / "results.json"
    results = json.loads(path.read_text())
    results["summary"] = metric_summary(results)
    results["summary"]["rows"][0]["mean"] = 99.0
    path.write_text(json.dumps(results))
    assert load_run(run.path).summary().loc[0, "mean"] == 99.0
