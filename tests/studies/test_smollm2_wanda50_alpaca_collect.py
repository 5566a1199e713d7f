"""studies/smollm2-wanda50-alpaca/collect.py's per-item file and its recomputation of the comparisons, on the fake
run of tests/pipelines/fake_run.py (eval/items.npz in every finished evaluation)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from paser.pipelines.analysis.results import combo_name
from paser.pipelines.analysis.uncertainty import versus_random
from tests.pipelines.fake_run import BUDGETS, SEEDS, STRATEGIES, build_fake_run

COLLECT = Path(__file__).resolve().parents[2] / "studies" / "smollm2-wanda50-alpaca" / "collect.py"


@pytest.fixture(scope="module")
def collect():
    spec = importlib.util.spec_from_file_location("smollm2_collect", COLLECT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_recompute_gives_back_the_run_folders_comparisons_from_the_committed_files(collect, collected, monkeypatch):
    run_dir, here, _ = collected
    monkeypatch.setattr(collect, "METRICS", ("heldout_nll", "wikitext2_ppl"))
    (here / "tables.md").write_text("## results\n\n| a |\n\n## versus_random\n\n| stale |\n\n## picks\n\n| b |\n\n")
    named = collect.recompute(here)
    results = json.loads((run_dir / "results.json").read_text())
    committed = json.loads((here / "results.json").read_text())
    assert committed["versus_random"] == versus_random(results, run_dir)
    assert {row["bootstrap"] for row in committed["versus_random"]["rows"]} == {"seeds+items"}
    # paser − random on the held-out NLL: -0.4 and -0.1 over two seeds, t p 0.344, sign flips 2 of 4
    assert "| paser | 0.1 | heldout_nll | 2 | -0.2500 | 0.344 | 0.500 | [" in "\n".join(named["versus_random"])
    text = (here / "tables.md").read_text()
    assert "stale" not in text and text.startswith("## results\n\n| a |") and text.endswith("## picks\n\n| b |\n\n")
    assert "| too few seeds |" in text
