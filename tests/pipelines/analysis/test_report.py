"""The run reader (pipelines/analysis/reader.py), the analyses that take it (metrics.py, selections.py), the report
(pipelines/analysis/report.py) and the cluster-budgets notebook, on the fake run of tests/pipelines/fake_run.py (its
numbers are the golden values here)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from paser.pipelines.analysis.metrics import combo_metrics, gap_notes, results_table
from paser.pipelines.analysis.reader import RunError, load_run
from paser.pipelines.analysis.report import _sweep_table, format_results, write_report
from paser.pipelines.analysis.selections import cds_vs_gain, cluster_budgets, overlap, picks, sample_rows
from tests.pipelines.conftest import NOTEBOOK, execute_notebook
from tests.pipelines.fake_run import build_fake_run, paser_selection

ALL_COMBOS = [
    f"{strategy}-b{budget}-s{seed}" for strategy in ("paser", "random") for budget in ("0.1", "0.2") for seed in (0, 1)
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The fake run with random-b0.2-s1's evaluation unfinished, its raw rows carrying a category."""
    return build_fake_run(tmp_path_factory.mktemp("report") / "run", missing_evals=("random-b0.2-s1",), labelled=True)


@pytest.fixture(scope="module")
def report(run_dir):
    return write_report(run_dir)


def narrow_run(run_dir: Path, budgets: list[float], seeds: list[int]) -> Path:
    """Rewrite results.json as if the run had only these budgets and seeds (the other combos' folders stay)."""
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    results["budgets"], results["seeds"] = budgets, seeds
    results["combos"] = [c for c in results["combos"] if c["budget"] in budgets and c["seed"] in seeds]
    path.write_text(json.dumps(results))
    return run_dir


def row_of(table, strategy, budget=None):
    rows = table[table["strategy"] == strategy]
    if budget is not None:
        rows = rows[rows["budget"] == budget]
    assert len(rows) == 1
    return rows.iloc[0]


def test_a_folder_without_a_manifest_is_refused_naming_the_file(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RunError, match=r"no .*manifest\.json"):
        load_run(tmp_path)


def test_a_folder_without_results_is_refused_naming_the_file(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(RunError, match=r"no .*results\.json"):
        load_run(tmp_path)


def test_results_table_has_mean_and_sample_std_over_seeds(run_dir):
    table = results_table(load_run(run_dir))
    paser = row_of(table, "paser", 0.1)
    # wikitext2_ppl 30 and 34: mean 32, std sqrt(((30-32)^2 + (34-32)^2) / 1) = sqrt(8)
    assert paser["seeds"] == 2 and paser["budget_rows"] == 5
    assert paser["wikitext2_ppl_mean"] == pytest.approx(32.0)
    assert paser["wikitext2_ppl_std"] == pytest.approx(math.sqrt(8))
    # piqa_acc 0.60 and 0.64
    assert paser["piqa_acc_mean"] == pytest.approx(0.62)
    assert paser["piqa_acc_std"] == pytest.approx(math.sqrt(0.0008))


def test_gap_recovered_is_the_same_formula_whatever_the_direction(run_dir):
    table = results_table(load_run(run_dir))
    paser = row_of(table, "paser", 0.1)
    # ppl (lower is better): (32 - 40) / (20 - 40); accuracy: (0.62 - 0.50) / (0.70 - 0.50); NLL: (2.6 - 3) / (2 - 3)
    assert paser["wikitext2_ppl_gap_recovered"] == pytest.approx(0.4)
    assert paser["piqa_acc_gap_recovered"] == pytest.approx(0.6)
    assert paser["heldout_nll_gap_recovered"] == pytest.approx(0.4)
    assert row_of(table, "paser", 0.2)["avg_acc_gap_recovered"] == pytest.approx((0.635 - 0.55) / (0.65 - 0.55))
    assert row_of(table, "original")["wikitext2_ppl_gap_recovered"] == pytest.approx(1.0)
    assert row_of(table, "pruned")["wikitext2_ppl_gap_recovered"] == 0.0


def test_gap_is_nan_and_stated_when_original_equals_pruned(run_dir):
    run = load_run(run_dir)
    table = results_table(run)
    assert table["boolq_acc_gap_recovered"].isna().all()
    assert any(note.startswith("boolq_acc: gap recovered undefined") for note in gap_notes(run))


def test_baselines_are_rows_of_the_results_table(run_dir):
    table = results_table(load_run(run_dir))
    assert row_of(table, "original")["piqa_acc_mean"] == 0.70
    assert row_of(table, "pruned")["heldout_nll_mean"] == 3.0
    assert math.isnan(row_of(table, "pruned")["heldout_nll_std"])


def test_a_missing_eval_is_missing_and_listed(run_dir):
    run = load_run(run_dir)
    random = row_of(results_table(run), "random", 0.2)
    # only seed 0 (ppl 33) is evaluated: the mean is its value, the std undefined
    assert random["seeds"] == 1
    assert random["wikitext2_ppl_mean"] == 33.0
    assert math.isnan(random["wikitext2_ppl_std"])
    combos = run.combos().set_index("combo")
    assert not combos.loc["random-b0.2-s1", "has_metrics"]
    assert combos["has_metrics"].sum() == 7
    assert math.isnan(combo_metrics(run).set_index("combo").loc["random-b0.2-s1", "piqa_acc"])
    assert run.missing() == [
        "combos/random-b0.2-s1/eval/metrics.json (file missing)",
        "results.json: combo random-b0.2-s1 has no metrics (evaluation not finished)",
    ]


def test_a_combo_absent_from_results_json_is_listed_not_dropped(tmp_path):
    run = load_run(build_fake_run(tmp_path / "run", unrecorded=("paser-b0.1-s1",)))
    assert "paser-b0.1-s1" in run.combos()["combo"].tolist()
    assert "results.json: combo paser-b0.1-s1 is not recorded" in run.missing()
    paser = row_of(results_table(run), "paser", 0.1)
    assert paser["seeds"] == 1 and paser["wikitext2_ppl_mean"] == 30.0


def test_a_complete_run_has_nothing_missing(tmp_path):
    assert load_run(build_fake_run(tmp_path / "run")).missing() == []


def test_overlap_of_identical_sets_is_one_and_of_others_their_jaccard(run_dir):
    jaccard = overlap(load_run(run_dir), 0.1, 0)
    assert jaccard.loc["paser", "paser"] == 1.0 and jaccard.loc["random", "random"] == 1.0
    # random-b0.1-s0 shares 3 of its 5 rows with paser-b0.1-s0: 3 / (5 + 5 - 3)
    assert jaccard.loc["paser", "random"] == pytest.approx(3 / 7)
    assert jaccard.loc["random", "paser"] == pytest.approx(3 / 7)


def test_overlap_with_a_missing_selection_is_nan(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    (run_dir / "combos" / "random-b0.2-s0" / "select" / "selection.jsonl").unlink()
    run = load_run(run_dir)
    jaccard = overlap(run, 0.2, 0)
    assert jaccard.loc["paser", "paser"] == 1.0
    assert jaccard["random"].isna().all()
    assert "combos/random-b0.2-s0/select/selection.jsonl (file missing)" in run.missing()
    with pytest.raises(RunError, match="random-b0.2-s0 has no selection"):
        run.selection("random-b0.2-s0")


def test_cluster_budgets_per_budget_from_the_selection_stats(run_dir):
    run = load_run(run_dir)
    paser = cluster_budgets(run, "paser")
    allocated = paser.pivot(index="cluster", columns="budget", values="budget_allocated")
    assert allocated[0.1].tolist() == [1, 2, 2] and allocated[0.2].tolist() == [3, 4, 4]
    assert paser.groupby("budget")["selected"].sum().tolist() == [5, 11]
    assert paser["size"].tolist() == [18] * 6
    # cluster 0 holds rows 0, 3, ..., 51: CDS 0.1 + 0.001 * row, mean row 25.5
    assert paser.loc[0, "mean_cds"] == pytest.approx(0.1255)
    random = cluster_budgets(run, "random")
    assert random["budget_allocated"].isna().all() and random.groupby("budget")["selected"].sum().tolist() == [5, 11]


def test_unknown_names_are_refused_listing_the_known_ones(run_dir):
    run = load_run(run_dir)
    with pytest.raises(RunError, match="unknown strategy 'ifd'"):
        cluster_budgets(run, "ifd")
    with pytest.raises(RunError, match="seed 7 is not one of the run's seeds"):
        run.clusters(7)
    with pytest.raises(RunError, match="unknown combo 'paser-b0.5-s0'; known: paser-b0.1-s0"):
        run.selection("paser-b0.5-s0")


def test_selection_is_in_selection_order(run_dir):
    assert load_run(run_dir).selection("paser-b0.2-s1")["id"].tolist() == paser_selection(0.2)


def test_clusters_join_each_rows_cds(run_dir):
    clusters = load_run(run_dir).clusters(1)
    assert len(clusters) == 54
    row = clusters.set_index("id").loc["row07"]
    assert row["cluster"] == 1 and row["cds"] == pytest.approx(0.207)


def test_sample_rows_are_the_most_degraded_rows_of_the_cluster_with_their_text(run_dir):
    rows = sample_rows(load_run(run_dir), 2, n=3)
    assert rows["id"].tolist() == ["row53", "row50", "row47"]
    assert rows.loc[0, "instruction"] == "Explain topic 2 case 53."
    assert rows.loc[0, "response"] == "Case 53 of topic 2 is explained here."


def test_report_names_every_combo(report):
    for path in report:
        text = path.read_text()
        for combo in ALL_COMBOS:
            assert combo in text, f"{combo} not in {path.name}"


def test_report_lists_the_missing_artifacts(report):
    markdown = report[0].read_text()
    assert "## Missing artifacts (2)" in markdown
    assert "- combos/random-b0.2-s1/eval/metrics.json (file missing)" in markdown


def test_report_results_table_has_mean_std_cells_baselines_and_gaps(report):
    markdown = report[0].read_text()
    assert "| paser | 0.1 | 5 | 2 | 32.00 ± 2.83 |" in markdown
    assert "| random | 0.2 | 11 | 1 | 33.00 | 0.6000 |" in markdown
    assert re.search(r"\| original \|.*\| 100\.0% \|", markdown)
    assert "wikitext2_ppl gap recovered" in markdown


def test_report_says_choices_read_the_dev_half_only(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    assert "Choices are made on dev only" not in write_report(run_dir)[0].read_text()  # no halves listed
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    results["dev_metrics"], results["test_metrics"] = ["heldout_dev_nll"], ["heldout_test_nll"]
    path.write_text(json.dumps(results))
    markdown = write_report(run_dir)[0].read_text()
    assert "Choices are made on dev only (heldout_dev_nll); heldout_test_nll and every other column" in markdown


def test_report_markdown_links_plots_that_exist(report):
    markdown_path = report[0]
    links = re.findall(r"\]\((report_files/[^)]+\.png)\)", markdown_path.read_text())
    assert sorted(links) == [
        "report_files/budget_per_cluster_paser.png",
        "report_files/budget_sweep.png",
        "report_files/cds_per_cluster.png",
        "report_files/cluster_purity.png",
        "report_files/corpus_map.png",
        "report_files/response_tokens.png",
        "report_files/strategy_overlap.png",
        "report_files/versus_random.png",
    ]
    for link in links:
        assert (markdown_path.parent / link).read_bytes().startswith(b"\x89PNG")


def test_report_html_is_self_contained(report):
    page = report[1].read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 8 and all(source.startswith("data:image/png;base64,") for source in sources)
    # base64 can spell "http" by chance: look for external references outside the data URIs only
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "http" not in text and "<link" not in text and "<script" not in text and "url(" not in text


def test_report_shows_intervals_over_seeds_and_paired_differences_from_random(report):
    markdown = report[0].read_text()
    assert "## Uncertainty" in markdown
    # 30 and 34 against random's 38 and 36: t-interval 32 ± 12.706 · sqrt(8) / sqrt(2); difference -5
    assert re.search(
        r"\| paser \| 0\.1 \| wikitext2_ppl \| 2 \| 32\.00 ± 2\.83 \| \[6\.59, 57\.41\] \| -5\.00 \| 0\.344 \| "
        r"0\.500 \| \[-\d+\.\d\d, -\d+\.\d\d\] \| seeds \+ 4 items \| too few seeds \|",
        markdown,
    )
    # random-b0.2-s1 is not evaluated: one pair, resampled over the items alone
    assert "| paser | 0.2 | piqa_acc | 2 | 0.6700 ± 0.0141 | [0.5429, 0.7971] | +0.0800 |" in markdown
    assert "| – | – | [0.0" in markdown and "| 50 items (1 seed) | – |" in markdown  # one pair: no test, no verdict
    assert "| random | 0.2 | piqa_acc | 1 | 0.5800 | – | – | – | – | – | – | – |" in markdown
    assert "the percentile bootstrap (2000 seeded resamples)" in markdown and "2/2^n" in markdown


def test_report_shows_compute_per_combo_and_the_shared_stages_once(report):
    markdown = report[0].read_text()
    assert "| paser-b0.1-s0 | 5 | 2 | 100 | 300 | 400 | 1.62e+06 | 4.5 | 5.5 | 0.2 | – | – | – |" in markdown
    assert "No full combo trained in this run" in markdown
    assert "- score: 12.0 s" in markdown
    assert "- selection (scoring + embedding + clustering): 17.5 s, once for all 8 combos" in markdown
    assert "- scoring compute: 8.86e+06 FLOPs (estimated: both models forward over 2,214 tokens)" in markdown


def test_report_without_random_has_intervals_and_no_paired_differences(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    results = json.loads((run_dir / "results.json").read_text())
    results["strategies"] = ["paser"]
    results["combos"] = [combo for combo in results["combos"] if combo["strategy"] == "paser"]
    (run_dir / "results.json").write_text(json.dumps(results))
    markdown_path, _ = write_report(run_dir, tmp_path / "out")
    markdown = markdown_path.read_text()
    assert "| paser | 0.1 | wikitext2_ppl | 2 | 32.00 ± 2.83 | [6.59, 57.41] | – | – | – | – |" in markdown
    assert "No random strategy in this run: no paired differences." in markdown
    assert not (tmp_path / "out" / "report_files" / "versus_random.png").exists()


def test_report_shows_training_cost_as_a_share_of_full(tmp_path):
    markdown_path, _ = write_report(build_fake_run(tmp_path / "run", full=True), tmp_path / "out")
    markdown = markdown_path.read_text()
    # 5 of 54 rows; 4.5 of 29 seconds; FLOPs scale with the tokens trained (same model, same objective)
    assert "| paser-b0.1-s0 | 5 | 2 | 100 | 300 | 400 | 1.62e+06 | 4.5 | 5.5 | 0.2 | 9.3% | 15.5% | 9.3% |" in markdown
    assert (
        "| full-b0.1-s0 | 54 | 2 | 1,080 | 3,240 | 4,320 | 1.75e+07 | 29.0 | 30.0 | 0.2 | 100.0% | 100.0% | 100.0% |"
        in markdown
    )


def test_report_without_coordinates_says_so(tmp_path):
    markdown_path, _ = write_report(build_fake_run(tmp_path / "run", coordinates=False), tmp_path / "out")
    markdown = markdown_path.read_text()
    assert "No corpus map: shared/clusters-s0.parquet has no coordinate_0/coordinate_1" in markdown
    assert not (tmp_path / "out" / "report_files" / "corpus_map.png").exists()


def test_label_field_is_the_category_the_raw_rows_carry(run_dir):
    run = load_run(run_dir)
    assert run.label_field() == "category"
    labels = run.labels("category")
    assert len(labels) == 60 and labels["row05"] == "gamma" and labels["row03"] == "alpha"


def test_label_field_set_in_the_config_is_taken_over_the_category(tmp_path):
    run = load_run(build_fake_run(tmp_path / "run", labelled=True, label_field="dataset"))
    assert run.label_field() == "dataset"
    assert run.labels("dataset")["row07"] == "set1"


def test_rows_without_a_label_field_have_none(tmp_path):
    run = load_run(build_fake_run(tmp_path / "run"))
    assert run.label_field() is None
    assert run.labels("category").empty


def test_report_shows_cluster_purity_against_the_category(report):
    markdown = report[0].read_text()
    assert "### Cluster purity against category" in markdown
    # fake_run.row_category: clusters 0, 1, 2 hold 14 alpha + 4 gamma, 15 beta + 3 gamma, 14 beta + 4 gamma
    assert (
        "Overall purity 0.796 (the share of rows carrying their cluster's majority category), NMI 0.479, " in markdown
    )
    assert "ARI 0.380, over 54 pool rows." in markdown
    assert "| cluster | size | majority category | purity |" in markdown
    assert "| 0 | 18 | alpha | 0.778 |" in markdown and "| 1 | 18 | beta | 0.833 |" in markdown


def test_report_without_a_label_field_has_no_purity_section(tmp_path):
    markdown_path, _ = write_report(build_fake_run(tmp_path / "run"), tmp_path / "out")
    assert "purity" not in markdown_path.read_text()
    assert not (tmp_path / "out" / "report_files" / "cluster_purity.png").exists()


def test_report_says_when_no_row_has_the_configured_label_field(tmp_path):
    markdown_path, _ = write_report(build_fake_run(tmp_path / "run", label_field="topic"), tmp_path / "out")
    markdown = markdown_path.read_text()
    assert "### Cluster purity against topic" in markdown
    assert "No pool row has a 'topic' field in its raw row: no purity to show." in markdown


def test_format_results_is_a_fixed_width_table(run_dir):
    lines = format_results(run_dir).splitlines()
    assert lines[0].split() == [
        "strategy", "budget", "rows", "seeds", "wikitext2_ppl", "avg_acc", "heldout_nll",
        "wikitext2_ppl", "gap", "avg_acc", "gap", "heldout_nll", "gap",
    ]  # fmt: skip
    assert len({len(line) for line in lines[:2]}) == 1
    assert lines[2].split() == ["paser", "0.1", "5", "2", "32.00", "±", "2.83", "0.6150", "±", "0.0212", "2.6000"] + [
        "±", "0.1414", "40.0%", "65.0%", "40.0%",
    ]  # fmt: skip
    assert lines[-2].startswith("2 missing artifact(s), e.g. combos/random-b0.2-s1/eval/metrics.json")
    assert lines[-1].startswith("boolq_acc: gap recovered undefined")


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_executes_on_a_run(run_dir, tmp_path, monkeypatch, python3_kernel):
    notebook = execute_notebook(run_dir, tmp_path, monkeypatch)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 4
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "54 rows by category: purity 0.796, NMI 0.479, ARI 0.380" in printed
    shares = notebook.cells[-1].outputs[-1]["data"]["text/plain"]
    assert "0.273" in shares  # cluster 0's share at budget 0.2: 3 of 11 rows


def test_notebook_executes_on_one_budget_and_one_seed(tmp_path, monkeypatch, python3_kernel):
    run_dir = narrow_run(build_fake_run(tmp_path / "run"), budgets=[0.2], seeds=[1])
    notebook = execute_notebook(run_dir, tmp_path, monkeypatch)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]


def test_report_on_one_budget_and_one_seed_shows_means_alone(tmp_path):
    run_dir = narrow_run(build_fake_run(tmp_path / "run"), budgets=[0.1], seeds=[0])
    markdown_path, _ = write_report(run_dir)
    markdown = markdown_path.read_text()
    assert "| paser | 0.1 | 5 | 1 | 30.00 | 0.6000 |" in markdown
    assert "paser-b0.2-s1" not in markdown
    assert "## Budget sweep" not in markdown  # one budget: nothing to sweep


def test_the_budget_sweep_shows_each_budgets_gap_closed_against_compute(run_dir, report):
    markdown = report[0].read_text()
    assert "## Budget sweep" in markdown and "report_files/budget_sweep.png" in markdown
    assert (run_dir / "report_files" / "budget_sweep.png").stat().st_size > 0
    table, metrics, x = _sweep_table(load_run(run_dir))
    assert x == "flops" and "wikitext2_ppl" in metrics
    # The gap closed of each seed, averaged, is the gap closed of the mean (the formula is linear): the results
    # table's number, per strategy and budget.
    results = results_table(load_run(run_dir)).set_index(["strategy", "budget"])
    for row in table.to_dict("records"):
        expected = results.loc[(row["strategy"], row["budget"]), "wikitext2_ppl_gap_recovered"]
        assert row["wikitext2_ppl_mean"] == pytest.approx(expected)
        assert row["seeds"] == results.loc[(row["strategy"], row["budget"]), "seeds"]
    assert (
        table["flops"].notna().all()
        and (table.groupby("strategy")["flops"].apply(lambda f: f.is_monotonic_increasing)).all()
    )


def test_picks_describe_each_selection_against_its_pool(run_dir):
    picked = picks(load_run(run_dir)).set_index("combo")
    pool = picked.loc["pool-s0"]
    assert (pool["rows"], pool["clusters_covered"], pool["cluster_shift"]) == (54, 3, 0.0)
    assert pool["cds_rank"] == pytest.approx(55 / 108)  # the mean percentile rank of 54 distinct values
    assert math.isnan(pool["ccg_rejected"])
    paser = picked.loc["paser-b0.1-s0"]
    assert paser["rows"] == 5 and paser["clusters_covered"] == 3 and paser["ccg_rejected"] == 0
    # paser's mix is 1, 2, 2 rows of three equal clusters: total variation 1/2 (|1/5 - 1/3| + 2 |2/5 - 1/3|)
    assert paser["cluster_shift"] == pytest.approx(2 / 15)
    assert paser["cds_rank"] > 0.7  # the most degraded rows of each cluster
    assert (
        paser["tokens"] == paser["rows"] * paser["mean_prompt_tokens"] + paser["rows"] * paser["mean_response_tokens"]
    )
    assert math.isnan(picked.loc["random-b0.1-s0", "ccg_rejected"])
    assert set(picked["strategy"]) == {"pool", "paser", "random"}


def test_cds_vs_gain_over_single_cluster_combos(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    # Pretend four random combos trained on one cluster each (as single_cluster variants do).
    for combo, cluster in (("random-b0.1-s0", 0), ("random-b0.1-s1", 1), ("random-b0.2-s0", 2), ("random-b0.2-s1", 2)):
        path = run_dir / "combos" / combo / "select" / "stats.json"
        stats = json.loads(path.read_text())
        stats["strategy"] = {"name": "single_cluster", "cluster": cluster}
        path.write_text(json.dumps(stats))
    table, rho, p_value = cds_vs_gain(load_run(run_dir), "wikitext2_ppl")
    # wikitext2_ppl 38, 36, 33 and 31 against the pruned model's 40: gains 2, 4, 7 and 9, one row per seed and
    # cluster (each seed's clustering is its own).
    assert table[["seed", "cluster"]].values.tolist() == [[0, 0], [0, 2], [1, 1], [1, 2]]
    assert table["gain"].tolist() == [2.0, 7.0, 4.0, 9.0] and table["size"].tolist() == [18] * 4
    assert table["combo"].tolist() == ["random-b0.1-s0", "random-b0.2-s0", "random-b0.1-s1", "random-b0.2-s1"]
    assert table["train_tokens"].notna().all()
    # mean CDS ranks 1, 3.5, 2, 3.5 against gain ranks 1, 3, 2, 4
    assert rho == pytest.approx(0.9486833) and 0 < p_value < 0.1
    assert "Does the degradation signal point where recovery pays?" in write_report(run_dir)[0].read_text()
    with pytest.raises(RunError, match="unknown metric"):
        cds_vs_gain(load_run(run_dir), "bleu")
    with pytest.raises(RunError, match="recovery variant 'kd': the run has no recovery variants"):
        cds_vs_gain(load_run(run_dir), "wikitext2_ppl", "kd")
    # A run comparing recovery variants names the one whose combos count: pooling them would mix objectives.
    results = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps({**results, "recoveries": ["sft", "kd"]}))
    with pytest.raises(RunError, match=r"recovery variant None: the run compares recovery variants \['sft', 'kd'\]"):
        cds_vs_gain(load_run(run_dir), "wikitext2_ppl")
    table, _, _ = cds_vs_gain(load_run(run_dir), "wikitext2_ppl", "kd")
    assert table.empty  # this fake run's folders hold no `@kd` combos


def test_report_shows_what_each_strategy_picks(report):
    markdown = report[0].read_text()
    assert "## What each strategy picks" in markdown and "response_tokens.png" in markdown
    assert "| pool |  | 2 | 54 |" in markdown and "| paser | 0.1 | 2 | 5 |" in markdown
    assert "Does the degradation signal" not in markdown  # no single_cluster combos in this run


def test_a_comparison_without_a_verdict_is_shown_as_missing(run_dir, monkeypatch):
    # Per-category metrics have no per-item values to resample: their verdict is None in results.json, which
    # pandas turns into NaN beside the text verdicts of the other rows.
    from paser.pipelines.analysis import report
    from paser.pipelines.analysis.report import MISSING, build_report

    real = report.versus_random_table

    def without_verdicts(run):
        table = real(run)
        table.loc[table.index[:2], "verdict"] = None
        return table

    monkeypatch.setattr(report, "versus_random_table", without_verdicts)
    tables = [block for block in build_report(load_run(run_dir)) if getattr(block, "header", None)]
    cells = [cell for table in tables for row in table.rows for cell in row]
    assert all(isinstance(cell, str) for cell in cells) and MISSING in cells


def test_the_run_section_names_the_pruned_model_once_with_only_the_pruning_settings_given(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["models"]["prune"] |= {"pattern": None, "drop": None, "calibration": "demo"}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    markdown = write_report(run_dir)[0].read_text()
    run_section = markdown.split("## Run")[1].split("## ")[0]
    assert "- pruned model: the original pruned by this run (method=magnitude, sparsity=0.5, calibration=demo)\n" in (
        run_section
    )
    assert "None" not in run_section and "none" not in run_section and "pruning:" not in run_section


def test_counts_and_budgets_print_as_written_not_as_floats(report):
    markdown = report[0].read_text()
    picks = markdown.split("## What each strategy picks")[1].split("## ")[0]
    # three clusters covered, the mean of whole counts over two seeds: "3", not "3.0"
    assert re.search(r"^\| pool \|  \| 2 \| 54 \| [\d,]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 3 \|", picks, re.M)
    assert not re.search(r"\b\d+\.0\b", markdown.split("## Run")[1].split("## Results")[0])


def test_the_budget_plot_says_that_what_a_cluster_cannot_give_is_redistributed(report):
    markdown = report[0].read_text()
    assert "what a cluster could not give (rows the CCG turned away, or a cluster too small) is redistributed" in (
        markdown
    )


def _relabel(run_dir: Path, field: str, value) -> None:
    """Rewrite the fake run's corpus store with `field` (value(row)) in place of the raw rows' category."""
    from paser.selection.store import write_corpus_store
    from tests.pipelines.fake_run import N_ROWS, _sample

    samples = []
    for row in range(N_ROWS):
        sample = _sample(row, labelled=True)
        raw = {key: item for key, item in sample.raw.items() if key not in ("category", "dataset")}
        samples.append(dataclasses.replace(sample, raw={**raw, field: value(row)}))
    write_corpus_store(samples, run_dir / "shared" / "corpus.parquet", show_progress=False)


def test_a_skill_field_like_the_demo_corpus_s_gets_a_purity_section(tmp_path):
    from tests.pipelines.fake_run import row_category

    run_dir = build_fake_run(tmp_path / "run")
    _relabel(run_dir, "skill", row_category)
    assert load_run(run_dir).label_field() == "skill"
    assert "### Cluster purity against skill" in write_report(run_dir)[0].read_text()


def test_a_common_label_name_whose_values_are_not_categories_is_passed_over(tmp_path):
    run_dir = build_fake_run(tmp_path / "run")
    _relabel(run_dir, "task", lambda row: f"free text of row {row}")
    assert load_run(run_dir).label_field() is None


def test_any_field_the_config_names_is_the_label_field(tmp_path):
    from tests.pipelines.fake_run import row_category

    run_dir = build_fake_run(tmp_path / "run", label_field="family")
    _relabel(run_dir, "family", row_category)
    assert "### Cluster purity against family" in write_report(run_dir)[0].read_text()
