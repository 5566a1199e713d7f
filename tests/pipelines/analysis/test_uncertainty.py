"""results.json's `summary` and `versus_random` (pipelines/analysis/uncertainty.py) on the fake run of
tests/pipelines/fake_run.py, whose evaluations keep per-item values that give back their metrics (two seeds: too
few for a verdict), and on results.json payloads of five seeds for the verdict rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from paser.pipelines.analysis.metrics import summary_table, versus_random_table
from paser.pipelines.analysis.reader import load_run
from paser.pipelines.analysis.stats import PairedTests
from paser.pipelines.analysis.uncertainty import (
    MIN_SEEDS,
    MetricFormula,
    metric_formula,
    metric_summary,
    read_run_items,
    run_items,
    verdict,
    versus_random,
    write_run_items,
)
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


def test_generation_metrics_have_item_formulas_except_distinct_n():
    assert metric_formula("gen_labels_exact_match", []) == MetricFormula((("gen_labels", "exact_match"),), False)
    assert metric_formula("gen_longform_repeat_3", []) == MetricFormula((("gen_longform", "repeat_3"),), False)
    assert metric_formula("gen_longform_mean_length", []) == MetricFormula((("gen_longform", "mean_length"),), False)
    assert metric_formula("gen_labels_capped", []) == MetricFormula((("gen_labels", "capped"),), False)
    assert metric_formula("gen_longform_distinct_2", []) is None  # across answers: seeds only


# Hand-made generation items of five seeds: paser's and random's greedy answers to the same 8 label prompts and
# 6 long-form prompts; paser matches one label more than random on every seed.
GENERATION_SEEDS = (0, 1, 2, 3, 4)


def generation_items(strategy: str, seed: int) -> dict[str, np.ndarray]:
    matches = np.zeros(8)
    matches[: 3 + seed % 2 + (strategy == "paser")] = 1.0
    repeated_3 = np.array([0.0, 1, 2, 0, 3, 1]) + (seed if strategy == "random" else 0)
    return {
        "gen_labels.exact_match": matches,
        "gen_labels.length": np.array([2.0, 1, 1, 3, 2, 1, 4, 2]),
        "gen_labels.capped": np.zeros(8),
        "gen_longform.repeated_3": repeated_3,
        "gen_longform.ngrams_3": np.full(6, 20.0),
        "gen_longform.length": np.array([22.0, 22, 30, 22, 40, 22]),
    }


def generation_results() -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """A results.json payload recording the metrics the hand-made items give, and the items by combination."""
    items, combos = {}, []
    for strategy in ("paser", "random"):
        for seed in GENERATION_SEEDS:
            name = f"{strategy}-b0.1-s{seed}"
            values = items[name] = generation_items(strategy, seed)
            metrics = {
                "gen_labels_exact_match": values["gen_labels.exact_match"].mean(),
                "gen_labels_mean_length": values["gen_labels.length"].mean(),
                "gen_longform_repeat_3": values["gen_longform.repeated_3"].sum()
                / values["gen_longform.ngrams_3"].sum(),
                "gen_longform_mean_length": values["gen_longform.length"].mean(),
                "gen_longform_distinct_1": 0.5 + 0.01 * seed,
            }
            combos.append({"combo": name, "strategy": strategy, "budget": 0.1, "seed": seed, "metrics": metrics})
    metrics = list(combos[0]["metrics"])
    lower = {metric: not metric.endswith(("exact_match", "distinct_1")) for metric in metrics}
    results = {"metrics": metrics, "lower_is_better": lower, "combos": combos, "seeds": list(GENERATION_SEEDS)}
    return results | {"strategies": ["paser", "random"], "budgets": [0.1]}, items


def test_generation_metrics_get_item_level_intervals_from_hand_made_answers():
    results, items = generation_results()
    block = versus_random(results, items=items)
    match = row_of(block, "paser", 0.1, "gen_labels_exact_match")
    # one more match of 8 on every seed: +0.125, every seed on the same side
    assert match["difference"] == pytest.approx(0.125) and (match["bootstrap"], match["items"]) == ("seeds+items", 8)
    assert match["lo"] <= 0.125 <= match["hi"] and match["verdict"] == "better"
    repeat = row_of(block, "paser", 0.1, "gen_longform_repeat_3")
    # random repeats `seed` more 3-grams per answer, of 20: −(0+1+2+3+4)/5 × 6/120
    assert repeat["difference"] == pytest.approx(-0.1) and (repeat["bootstrap"], repeat["items"]) == ("seeds+items", 6)
    assert repeat["lo"] < 0
    length = row_of(block, "paser", 0.1, "gen_longform_mean_length")
    assert (length["difference"], length["bootstrap"], length["items"]) == (0.0, "seeds+items", 6)
    assert row_of(block, "paser", 0.1, "gen_longform_distinct_1")["bootstrap"] == "seeds"


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
    assert (ppl["bootstrap"], ppl["items"]) == ("seeds+items", 4)
    assert ppl["lo"] < -5.0 < ppl["hi"] < 0
    assert row_of(block, "paser", 0.1, "avg_acc")["items"] == 100  # BoolQ's and PIQA's 50 questions each
    # BoolQ at 0.2: 0.60 and 0.60 against 0.60 and 0.62
    boolq = row_of(block, "paser", 0.2, "boolq_acc")
    assert boolq["difference"] == pytest.approx(-0.01)


def test_paired_differences_carry_both_seed_level_p_values(complete_run):
    ppl = row_of(versus_random(results_of(complete_run), complete_run), "paser", 0.1, "wikitext2_ppl")
    # differences -8 and -2: t = -5 / (sqrt(18) / sqrt(2)) = -1.667 on 1 df; sign flips: |±8 ± 2| >= 10 in 2 of 4
    assert ppl["t_p"] == pytest.approx(0.3440, abs=1e-4)
    assert (ppl["permutation_p"], ppl["permutation"], ppl["sign_flips"]) == (0.5, "exact", 4)
    # Two seeds: an interval clear of 0, but too few seeds for a verdict.
    assert ppl["verdict"] == "too few seeds"


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
    assert row["difference"] == pytest.approx(0.08) and (row["t_p"], row["permutation_p"]) == (None, None)


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


def seed_tests(n: int, mean: float, t_p: float, permutation_p: float) -> PairedTests:
    return PairedTests(n, mean, t_p, permutation_p, "exact", 2**n, 2 / 2**n)


def test_verdict_follows_the_metric_direction():
    assert verdict(seed_tests(5, -0.3, 0.01, 0.0625), lower_is_better=True) == "better"
    assert verdict(seed_tests(5, -0.3, 0.01, 0.0625), lower_is_better=False) == "worse"


def test_verdict_with_five_seeds_needs_the_t_test_and_every_seed_on_one_side():
    assert MIN_SEEDS == 5
    # 0.0625 = 2/32 is the sign-flip test's smallest p with five seeds: the exact level it can reach.
    assert verdict(seed_tests(5, -0.3, 0.049, 0.0625), True) == "better"
    assert verdict(seed_tests(5, -0.3, 0.051, 0.0625), True) == "unclear"  # t-test short
    assert verdict(seed_tests(5, -0.3, 0.001, 0.125), True) == "unclear"  # one seed on the other side


def test_verdict_beyond_five_seeds_needs_both_p_values_under_the_level():
    assert verdict(seed_tests(6, -0.3, 0.01, 0.03125), True) == "better"
    assert verdict(seed_tests(7, -0.3, 0.01, 0.046875), True) == "better"
    assert verdict(seed_tests(7, -0.3, 0.01, 0.0625), True) == "unclear"


def test_verdict_with_fewer_than_five_seeds_is_too_few_seeds_and_none_without_a_pair():
    assert verdict(seed_tests(4, -0.3, 0.001, 0.125), True) == "too few seeds"
    assert verdict(seed_tests(2, -0.3, 0.001, 0.5), True) == "too few seeds"
    assert verdict(PairedTests(1, -0.3, math.nan, math.nan, "exact", 0, math.nan), True) is None


def five_seed_results(strategy_values: list[float], random_values: list[float]) -> dict:
    """A results.json payload of paser and random at one budget and five seeds, one metric (an NLL)."""
    combos = [
        {"combo": f"{name}-b0.1-s{seed}", "strategy": name, "budget": 0.1, "seed": seed, "metrics": {"nll": value}}
        for name, values in (("paser", strategy_values), ("random", random_values))
        for seed, value in enumerate(values)
    ]
    return {
        "metrics": ["nll"],
        "lower_is_better": {"nll": True},
        "strategies": ["paser", "random"],
        "budgets": [0.1],
        "seeds": list(range(5)),
        "combos": combos,
    }


def test_a_planted_five_seed_difference_is_better_and_a_null_one_unclear():
    random_values = [2.80, 2.82, 2.79, 2.81, 2.83]
    # paser 0.016 to 0.023 nats lower at every seed
    planted = [value - shift for value, shift in zip(random_values, [0.018, 0.023, 0.020, 0.016, 0.021], strict=True)]
    (row,) = versus_random(five_seed_results(planted, random_values))["rows"]
    assert row["verdict"] == "better" and row["permutation_p"] == 2 / 32 and row["t_p"] < 0.001
    assert row["bootstrap"] == "seeds"  # no run folder, no items: the interval resamples seeds
    # paser within ±0.012 of random, on both sides
    null = [value + shift for value, shift in zip(random_values, [0.010, -0.012, 0.004, -0.006, 0.003], strict=True)]
    (row,) = versus_random(five_seed_results(null, random_values))["rows"]
    assert row["verdict"] == "unclear" and row["t_p"] > 0.5 and row["permutation_p"] > 0.5


def test_the_block_states_its_verdict_rule(complete_run):
    block = versus_random(results_of(complete_run), complete_run)
    assert (block["alpha"], block["min_seeds"]) == (0.05, 5)
    assert "paired t p < 0.05" in block["rule"] and "sign-flip" in block["rule"]


def test_a_committed_items_file_gives_back_the_run_folders_comparisons(complete_run, tmp_path):
    results = results_of(complete_run)
    items = run_items(results, complete_run)
    assert len(items) == 8 and set(items["paser-b0.1-s0"]) >= {"wikitext2.nll_sum", "heldout.tokens"}
    path = write_run_items(items, tmp_path / "study" / "items.npz")
    committed = read_run_items(path)
    assert versus_random(results, items=committed) == versus_random(results, complete_run)
    assert {row["bootstrap"] for row in versus_random(results, items=committed)["rows"]} == {"seeds+items"}


def test_a_run_without_items_writes_an_items_file_of_what_it_has(tmp_path):
    run_dir = build_fake_run(tmp_path / "run", without_items=("random-b0.1-s1",), missing_evals=("paser-b0.2-s1",))
    items = run_items(results_of(run_dir), run_dir)
    assert "random-b0.1-s1" not in items and "paser-b0.2-s1" not in items and len(items) == 6


def test_the_tables_read_the_blocks_results_json_has(tmp_path):
    run = load_run(build_fake_run(tmp_path / "run"))
    computed = versus_random_table(run)
    assert computed.loc[0, "bootstrap"] == "seeds+items" and computed.loc[0, "verdict"] == "too few seeds"
    assert {"t_p", "permutation_p", "permutation", "sign_flips"} <= set(computed.columns)
    path = run.path / "results.json"
    results = json.loads(path.read_text())
    results["summary"] = metric_summary(results)
    results["summary"]["rows"][0]["mean"] = 99.0
    path.write_text(json.dumps(results))
    assert summary_table(load_run(run.path)).loc[0, "mean"] == 99.0


def test_a_results_json_from_before_the_seed_level_tests_is_recomputed(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    # The older block: verdicts from the bootstrap interval, no p-values, no rule.
    results["versus_random"] = {"baseline": "random", "rows": [{"strategy": "paser", "verdict": "better"}]}
    path.write_text(json.dumps(results))
    table = versus_random_table(load_run(run_dir))
    assert len(table) == 12 and set(table["verdict"]) == {"too few seeds"} and table["t_p"].notna().all()
