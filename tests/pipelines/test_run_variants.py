"""`paser run` with recovery variants (`recovery.variants`): each (strategy, budget, seed) is selected once and
trained and evaluated once per variant; token weighting and self-distillation targets inside a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paser.pipelines.analysis.accounting import compute_table
from paser.pipelines.analysis.metrics import results_table, summary_table, versus_random_table
from paser.pipelines.analysis.reader import load_run
from paser.pipelines.analysis.report import write_report
from paser.pipelines.config import ConfigError, load_config
from paser.pipelines.layout import RunLayout
from paser.pipelines.run import Combo, RunConfig, combos, run
from tests.pipelines.test_run import tiny_config

VARIANTS = (
    "recovery.variants={plain: {}, weighted: {token_weighting: jsd}, "
    "self: {targets: original, target_max_new_tokens: 4}}"
)
BASE = ["corpus.path=x.jsonl", "models.pruned=p"]


def _stage_events(run_dir: Path, action: str) -> list[str]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [event["stage"] for event in events if event["action"] == action]


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory, tiny_model_dir, perturbed_model_dir):
    root = tmp_path_factory.mktemp("variants")
    config = tiny_config(root, tiny_model_dir, perturbed_model_dir, [VARIANTS], budgets=[10])
    run(config, root / "run")
    return root / "run", config


def test_a_variant_names_its_combination_after_the_selection():
    assert Combo("paser", 0.1, 0, "kd").name == "paser-b0.1-s0@kd"
    folder = RunLayout("r").combo("paser-b0.1-s0@kd")
    assert folder.select.root == Path("r/combos/paser-b0.1-s0/select")
    assert folder.recover.root == Path("r/combos/paser-b0.1-s0@kd/recover")


def test_without_variants_the_combinations_are_as_before():
    config = load_config(RunConfig, None, BASE)
    assert [combo.name for combo in combos(config)] == ["paser-b0.1-s0", "random-b0.1-s0"]


def test_each_variant_is_the_section_with_its_keys_over_it():
    overrides = ["recovery.epochs=2", "recovery.variants={sft: {}, kd_t2: {objective: distill, temperature: 2.0}}"]
    config = load_config(RunConfig, None, BASE + overrides)
    assert [combo.name for combo in combos(config)][:2] == ["paser-b0.1-s0@sft", "paser-b0.1-s0@kd_t2"]
    kd = config.recovery.training("kd_t2")
    assert (kd.objective, kd.objective_config.temperature, kd.epochs) == ("distill", 2.0, 2)
    assert config.recovery.training("sft").flat_settings() == config.recovery.training().flat_settings()


def test_a_variant_of_another_objective_leaves_the_sections_objective_settings_its_own_lacks():
    overrides = [
        "recovery.padding_free=true",
        "recovery.token_weighting=top_fraction",
        "recovery.token_jsd=scores/token_jsd.npz",
        "recovery.variants={sft: {}, kd: {objective: distill}, op: {objective: on_policy}}",
    ]
    config = load_config(RunConfig, None, BASE + overrides)
    kd, op = config.recovery.training("kd"), config.recovery.training("op")
    # distill has token weighting and padding-free batches too: inherited; on_policy has neither: left out.
    assert kd.objective_config.token_weighting == "top_fraction" and kd.objective_config.padding_free
    assert op.objective == "on_policy" and not {"padding_free", "token_weighting"} & set(op.flat_settings())
    assert config.recovery.training("sft").objective_config.padding_free


@pytest.mark.parametrize(
    "variant, named",
    [
        ("{kd: {objective: distill, tempurature: 2}}", "recovery.variants.kd.tempurature"),
        ("{kd: {temperature: 2}}", "recovery.variants.kd.temperature"),
        ("{kd: {variants: {}}}", "recovery.variants.kd.variants"),
        ("{'a@b': {}}", "recovery.variants.a@b"),
        ("{kd: {objective: distil}}", "recovery.variants.kd.objective"),
    ],
)
def test_a_bad_variant_is_refused_naming_it(variant, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(RunConfig, None, BASE + [f"recovery.variants={variant}"])


@pytest.mark.parametrize("scoring", ["engine=ray", "topk.k=8"])
def test_token_weighting_is_refused_before_any_work_where_scoring_keeps_no_token_jsd(
    tmp_path, tiny_model_dir, perturbed_model_dir, scoring
):
    config = tiny_config(tmp_path, tiny_model_dir, perturbed_model_dir, ["recovery.token_weighting=jsd", scoring])
    with pytest.raises(ValueError, match="recovery.token_weighting needs the per-token JSD"):
        run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_selection_is_made_once_and_trained_once_per_variant(variant_run):
    run_dir, config = variant_run
    ran = _stage_events(run_dir, "ran")
    assert sorted(name for name in ran if name.startswith("select/")) == ["select/paser-b10-s0", "select/random-b10-s0"]
    recovered = sorted(name for name in ran if name.startswith("recover/"))
    assert recovered == [f"recover/{s}-b10-s0@{v}" for s in ("paser", "random") for v in ("plain", "self", "weighted")]
    layout = RunLayout(run_dir)
    assert not (layout.combos / "paser-b10-s0" / "recover").exists()
    assert (layout.combo("paser-b10-s0@self").recover.root / "targets.jsonl").is_file()


def test_the_weighted_variant_trains_on_the_runs_own_token_jsd(variant_run):
    run_dir, _ = variant_run
    layout = RunLayout(run_dir)
    assert list(layout.shared.score_shards.glob("*.token_jsd.npz"))
    weighting = json.loads(layout.combo("paser-b10-s0@weighted").recover.record.read_text())["token_weighting"]
    assert weighting["mode"] == "jsd" and weighting["source"] == str(layout.shared.score_shards)
    assert weighting["rows"] == 10
    assert "token_weighting" not in json.loads(layout.combo("paser-b10-s0@plain").recover.record.read_text())


def test_results_and_tables_carry_the_variant_and_compare_within_it(variant_run):
    run_dir, _ = variant_run
    results = json.loads(RunLayout(run_dir).results.read_text())
    assert results["recoveries"] == ["plain", "weighted", "self"]
    assert {record["recovery"] for record in results["combos"]} == {"plain", "weighted", "self"}
    reader = load_run(run_dir)
    table = results_table(reader)
    assert table["recovery"].tolist()[:6] == ["plain", "weighted", "self"] * 2
    assert table["heldout_nll_mean"].iloc[:6].notna().all()
    versus = versus_random_table(reader)
    assert set(versus["recovery"]) == {"plain", "weighted", "self"} and set(versus["strategy"]) == {"paser"}
    assert set(summary_table(reader)["recovery"]) == {"plain", "weighted", "self"}
    assert compute_table(reader)["flops"].notna().all() and "recovery" in compute_table(reader)
    markdown, _ = write_report(run_dir)
    assert "paser@weighted" in markdown.read_text()


def test_a_second_invocation_recomputes_nothing(variant_run):
    run_dir, config = variant_run
    before = len(_stage_events(run_dir, "ran"))
    run(config, run_dir)
    assert len(_stage_events(run_dir, "ran")) == before
