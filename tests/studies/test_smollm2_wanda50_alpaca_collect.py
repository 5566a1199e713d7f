"""studies/smollm2-wanda50-alpaca/collect.py's per-item file, its recomputation of the comparisons, and its dev/test
reading (tables and verdicts on test, choices on dev, results from before the split labelled as such), on the fake
run of tests/pipelines/fake_run.py (eval/items.npz in every finished evaluation; its unnamed held-out set has no
halves, so the tests add them); and that recomputing every committed folder of the study gives back its committed
files."""

from __future__ import annotations

import json
import shutil

import pytest

from paser.pipelines.analysis.reader import combo_name, load_run
from paser.pipelines.analysis.uncertainty import versus_random
from tests.pipelines.fake_run import BUDGETS, SEEDS, STRATEGIES, build_fake_run
from tests.studies.scripts import STUDIES, load_script


@pytest.fixture(scope="module")
def collect():
    return load_script("smollm2-wanda50-alpaca", "collect.py")


@pytest.fixture
def collected(collect, tmp_path):
    """A fake run and a study folder holding what collect.py copies for the comparisons: results.json and the
    per-item file."""
    run_dir = build_fake_run(tmp_path / "run")
    here = tmp_path / "study"
    here.mkdir()
    shutil.copyfile(run_dir / "results.json", here / "results.json")
    results = json.loads((run_dir / "results.json").read_text())
    return run_dir, here, collect.collect_items(run_dir, results, here)


@pytest.fixture
def fake_metrics(collect, monkeypatch):
    """The study's metric names as the fake run spells them: its unnamed in-distribution set, one other metric."""
    monkeypatch.setattr(collect, "IN_DISTRIBUTION", "heldout")
    monkeypatch.setattr(collect, "OUT_OF_DISTRIBUTION", ("wikitext2_ppl",))


# Dev values planted so that the dev choice (paser at 0.1) is not the test's best (paser at 0.2: 2.3 and 2.4).
DEV_NLL = {"paser-b0.1": 2.0, "paser-b0.2": 2.6, "random-b0.1": 2.8, "random-b0.2": 2.7}


def with_split(results: dict) -> dict:
    """`results` as a run after the dev/test split records it: every combination's test half is its whole set's
    value, its dev half the planted `DEV_NLL`."""
    results = json.loads(json.dumps(results))
    for combo in results["combos"]:
        whole = combo["metrics"]["heldout_nll"]
        setting = combo["combo"].rsplit("-s", 1)[0]
        combo["metrics"] |= {"heldout_dev_nll": DEV_NLL[setting], "heldout_test_nll": whole}
    results["metrics"] += ["heldout_dev_nll", "heldout_test_nll"]
    results["lower_is_better"] |= {"heldout_dev_nll": True, "heldout_test_nll": True}
    return results | {"dev_metrics": ["heldout_dev_nll"], "test_metrics": ["heldout_test_nll"]}


def test_the_per_item_values_of_every_evaluation_go_into_one_compressed_file(collected):
    _, here, items = collected
    assert (here / "items.npz").is_file() and len(items) == 8
    assert set(items["random-b0.2-s1"]) == {
        "wikitext2.nll_sum",
        "wikitext2.tokens",
        "heldout.nll_sum",
        "heldout.tokens",
        "boolq.acc",
        "piqa.acc",
    }


def test_a_folder_without_items_leaves_the_committed_file_alone(collect, collected, tmp_path):
    _, here, _ = collected
    before = (here / "items.npz").read_bytes()
    every_combo = tuple(
        combo_name(strategy, budget, seed) for strategy in STRATEGIES for budget in BUDGETS for seed in SEEDS
    )
    bare = build_fake_run(tmp_path / "bare", without_items=every_combo)
    assert collect.collect_items(bare, json.loads((bare / "results.json").read_text()), here) == {}
    assert (here / "items.npz").read_bytes() == before


def test_recompute_gives_back_the_run_folders_comparisons_from_the_committed_files(collect, collected, fake_metrics):
    run_dir, here, _ = collected
    (here / "tables.md").write_text("## results\n\n| a |\n\n## versus_random\n\n| stale |\n\n## picks\n\n| b |\n\n")
    named = collect.recompute(here)
    results = json.loads((run_dir / "results.json").read_text())
    committed = json.loads((here / "results.json").read_text())
    assert committed["versus_random"] == versus_random(results, run_dir)
    assert {row["bootstrap"] for row in committed["versus_random"]["rows"]} == {"seeds+items"}
    # paser − random on the held-out NLL: -0.4 and -0.1 over two seeds, t p 0.344, sign flips 2 of 4
    assert "| paser | 0.1 | heldout_nll | 2 | -0.2500 | 0.344 | 0.500 | [" in "\n".join(named["versus_random"])
    text = (here / "tables.md").read_text()
    assert "stale" not in text and text.startswith("## results\n\n| a |") and "## picks\n\n| b |\n\n" in text
    # sections the file did not have go where a fresh collection writes them
    assert text.index("## results") < text.index("## headline") < text.index("## versus_random")
    assert text.index("## versus_random") < text.index("## choices") < text.index("## picks")
    assert "| too few seeds |" in text
    assert "## choices\n\nNo choice: no `heldout_dev_nll`" in text


def test_a_sweep_without_random_has_no_comparison_with_it_and_recomputes(collect, collected, fake_metrics):
    _, here, _ = collected
    results = json.loads((here / "results.json").read_text())
    results["strategies"] = ["paser"]
    results["combos"] = [combo for combo in results["combos"] if combo["strategy"] == "paser"]
    (here / "results.json").write_text(json.dumps(results))
    named = collect.recompute(here)
    assert "headline" not in named and "versus_random" not in named
    assert json.loads((here / "results.json").read_text())["versus_random"]["rows"] == []


def test_results_from_before_the_split_report_the_whole_set_and_say_so(collect, fake_metrics, tmp_path):
    run = load_run(build_fake_run(tmp_path / "run"))
    named = collect.tables(run, {})
    assert collect.reported_metrics(run.results) == ("heldout_nll", "wikitext2_ppl")
    assert named["results"][0].endswith("| heldout_nll | wikitext2_ppl |")
    assert named["results"][-1] == f"heldout_nll: {collect.BEFORE_SPLIT}."
    assert named["headline"][0].startswith("- 0.1: paser − random on heldout_nll (whole held-out set, before the")
    assert named["choices"] == [f"No choice: no `heldout_dev_nll` in these results, {collect.BEFORE_SPLIT}."]


def test_verdicts_and_headline_are_on_the_test_half_once_the_results_have_it(collect, fake_metrics, tmp_path):
    results = with_split(json.loads((build_fake_run(tmp_path / "run") / "results.json").read_text()))
    assert collect.reported_metrics(results) == ("heldout_test_nll", "wikitext2_ppl")
    named = collect.comparison_tables(results, {})
    table = "\n".join(named["versus_random"])
    assert "| heldout_test_nll |" in table
    assert "| heldout_nll |" not in table and "heldout_dev_nll" not in table
    assert named["headline"][0].startswith("- 0.1: paser − random on heldout_test_nll -0.2500 over 2 seeds")


def test_choices_read_the_dev_half_only(collect, fake_metrics, tmp_path):
    results = with_split(json.loads((build_fake_run(tmp_path / "run") / "results.json").read_text()))
    lines = collect.choice_table(results)
    # dev picks paser at 0.1 (2.0), reported with its test mean (2.5, 2.7), though paser at 0.2 is better on test
    assert lines[2] == "| best setting | paser | 0.1 | 2 | 2.0000 | 2.6000 |"
    assert lines[3:] == [
        "| best budget of paser | paser | 0.1 | 2 | 2.0000 | 2.6000 |",
        "| best budget of random | random | 0.2 | 2 | 2.7000 | 2.5500 |",
    ]
    # the same test values under other dev values move the choice: only dev is read
    for combo in results["combos"]:
        combo["metrics"]["heldout_dev_nll"] = combo["metrics"]["heldout_test_nll"]
    assert collect.choice_table(results)[2] == "| best setting | paser | 0.2 | 2 | 2.3500 | 2.3500 |"


def test_choices_keep_recovery_variants_apart(collect, fake_metrics, tmp_path):
    """Each combination trained two ways (`recovery.variants`): the choice names its variant, and its test mean
    is that variant's alone."""
    results = with_split(json.loads((build_fake_run(tmp_path / "run") / "results.json").read_text()))
    combos = []
    for combo in results["combos"]:
        for recovery, shift in (("sft", 0.0), ("kd", 1.0)):
            metrics = {key: value + shift for key, value in combo["metrics"].items()}
            combos.append({**combo, "combo": f"{combo['combo']}@{recovery}", "recovery": recovery, "metrics": metrics})
    lines = collect.choice_table({**results, "combos": combos, "recoveries": ["sft", "kd"]})
    assert lines[0].startswith("| choice (on dev) | strategy | recovery | budget |")
    assert lines[2] == "| best setting | paser | sft | 0.1 | 2 | 2.0000 | 2.6000 |"


def test_recompute_of_split_results_rewrites_the_choices(collect, collected, fake_metrics):
    _, here, _ = collected
    results = with_split(json.loads((here / "results.json").read_text()))
    (here / "results.json").write_text(json.dumps(results))
    named = collect.recompute(here)
    assert named["choices"][2] == "| best setting | paser | 0.1 | 2 | 2.0000 | 2.6000 |"
    assert "| best setting | paser | 0.1 |" in (here / "tables.md").read_text()


def test_the_generation_metrics_the_run_evaluated_are_reported_after_the_likelihoods(collect, fake_metrics):
    results = {"metrics": ["heldout_test_nll", "wikitext2_ppl", "gen_longform_repeat_3", "gen_labels_exact_match"]}
    assert collect.reported_metrics(results) == (
        "heldout_test_nll",
        "wikitext2_ppl",
        "gen_labels_exact_match",
        "gen_longform_repeat_3",
    )


STUDY = STUDIES / "smollm2-wanda50-alpaca"
# Every committed folder of the study, as `--recompute --into` names it ("" the study folder itself).
COMMITTED = sorted(
    "" if path.parent == STUDY else path.parent.relative_to(STUDY).as_posix() for path in STUDY.glob("**/results.json")
)


@pytest.mark.parametrize("into", COMMITTED, ids=lambda into: into or "main")
def test_recompute_of_every_committed_folder_gives_back_its_committed_files_byte_for_byte(collect, into, tmp_path):
    committed = STUDY / into
    for name in ("results.json", "tables.md", collect.ITEMS_FILE):
        if (committed / name).is_file():
            shutil.copyfile(committed / name, tmp_path / name)
    shutil.copyfile(STUDY / "README.md", tmp_path / "README.md")
    named = collect.recompute(tmp_path)
    collect.splice(tmp_path / "README.md", into or "main", named)
    for name in ("results.json", "tables.md"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), f"{into or 'main'}/{name}"
    assert (tmp_path / "README.md").read_bytes() == (STUDY / "README.md").read_bytes()


def test_each_length_control_is_compared_with_its_own_reference(collect, fake_metrics, tmp_path):
    # paser_density's control is length_matched_density (and paser's length_matched): planted as copies of the
    # fake run's paser and random combinations, so the density pair has the paser − random differences.
    results = json.loads((build_fake_run(tmp_path / "run") / "results.json").read_text())
    renamed = {"paser": "paser_density", "random": "length_matched_density"}
    copies = []
    for combo in results["combos"]:
        if combo["strategy"] in renamed:
            name = renamed[combo["strategy"]]
            copies.append(combo | {"strategy": name, "combo": name + combo["combo"][len(combo["strategy"]) :]})
    results["combos"] += copies
    results["strategies"] = [*results["strategies"], "paser_density", "length_matched_density"]
    named = collect.comparison_tables(results, {})
    assert "versus_length_matched" not in named  # no length_matched for paser here
    table = named["versus_length_matched_density"]
    assert table[0].startswith("| strategy | budget | metric | pairs | strategy − length_matched_density |")
    rows = table[2:]
    assert rows and all(row.startswith("| paser_density |") for row in rows)
    versus = "\n".join(named["versus_random"])
    paser_row = next(row for row in named["versus_random"] if row.startswith("| paser | 0.1 | heldout_nll |"))
    density_row = next(row for row in rows if row.startswith("| paser_density | 0.1 | heldout_nll |"))
    assert paser_row.split("|")[5] == density_row.split("|")[5]  # the same planted difference
    assert "paser_density" in versus
