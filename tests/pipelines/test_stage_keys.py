"""A stage's cache key is derived from what the stage declares (`paser.pipelines.stages.stage_key`): a setting it
reads changes its key and those of the stages after it; a section it does not read changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from paser.pipelines.config import load_config
from paser.pipelines.run import Run, RunConfig, combos
from paser.pipelines.stages import Executor, Stage, model_identity, source_identity
from paser.recovery.models import ModelLoadError
from tests.pipelines.test_run import tiny_overrides

SHARED = {"score", "heldout", "embed", "eval/original", "eval/pruned"}


@pytest.fixture(scope="module")
def stage_keys(tmp_path_factory, tiny_model_dir, perturbed_model_dir):
    """`stage_keys(*overrides, run_dir=...)`: every stage of the tiny sweep, by name, with its key under those
    overrides."""
    root = tmp_path_factory.mktemp("keys")
    base = tiny_overrides(root, tiny_model_dir, perturbed_model_dir)

    def keys(*overrides: str, run_dir: Path = root / "run") -> dict[str, str]:
        config = load_config(RunConfig, None, [*base, *overrides])
        runner = Run(config, run_dir)
        tops = [runner.baseline_stage("original"), runner.baseline_stage("pruned")]
        tops += [runner.combo_stage(combo) for combo in combos(config)]
        return {stage.name: stage.digest for stage in walk(tops)}

    return keys


def walk(stages: list[Stage]) -> list[Stage]:
    """The stages and every stage they take as input."""
    found: dict[str, Stage] = {}
    pending = list(stages)
    while pending:
        stage = pending.pop()
        if stage.name not in found:
            found[stage.name] = stage
            pending += stage.inputs.values()
    return list(found.values())


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def prefixed(keys: dict[str, str], *prefixes: str) -> set[str]:
    return {name for name in keys if name.startswith(prefixes)}


def test_the_keys_are_the_same_for_the_same_config(stage_keys):
    assert stage_keys() == stage_keys()


def test_a_recovery_setting_changes_recover_and_eval_of_every_combination_only(stage_keys):
    before = stage_keys()
    after = stage_keys("recovery.learning_rate=0.0005")
    assert changed(before, after) == prefixed(before, "recover/") | (prefixed(before, "eval/") - SHARED)


def test_a_clustering_setting_changes_the_clusters_and_everything_after_them(stage_keys):
    before = stage_keys()
    after = stage_keys("clustering.n_clusters=2")
    after_clusters = prefixed(before, "cluster/", "select/", "recover/") | (prefixed(before, "eval/") - SHARED)
    assert changed(before, after) == after_clusters


def test_a_scoring_setting_changes_every_stage_after_the_scores(stage_keys):
    # The baselines' evaluations too: they measure the held-out rows, which are split off the scored corpus.
    before = stage_keys()
    assert changed(before, stage_keys("formatting.max_length=64")) == set(before)


def test_an_evaluation_setting_changes_the_evaluations_only(stage_keys):
    before = stage_keys()
    assert changed(before, stage_keys("evaluation.limit=3")) == prefixed(before, "eval/")


def test_a_section_no_stage_reads_changes_no_key(stage_keys):
    before = stage_keys()
    assert changed(before, stage_keys("report.label_field=skill")) == set()
    # Where progress is shown, and which trackers watch, change nothing a stage writes.
    assert changed(before, stage_keys("recovery.show_progress=true", "scoring.show_progress=true")) == set()


def test_a_strategy_option_counts_whether_written_or_left_at_its_default(stage_keys):
    # The options hashed are the strategy's own, defaults included: a default that changes reruns its selections.
    before = stage_keys()
    assert stage_keys("selection.options={paser: {ccg: true}}") == before
    after = stage_keys("selection.options={paser: {ccg: false}}")
    paser = {name for name in before if "paser-" in name and name.split("/")[0] in ("select", "recover", "eval")}
    assert changed(before, after) == paser


def test_each_combination_has_its_own_select_key(stage_keys):
    keys = stage_keys()
    selects = [keys[name] for name in prefixed(keys, "select/")]
    assert len(set(selects)) == len(selects) == len(prefixed(keys, "recover/"))


def test_the_run_folder_is_not_part_of_any_key(stage_keys, tmp_path):
    assert stage_keys(run_dir=tmp_path / "elsewhere") == stage_keys()


def test_a_relative_source_not_found_from_another_directory_is_refused_and_the_cache_kept(tmp_path, monkeypatch):
    """A run config names its corpus relative to where it is run from. From another directory that path does not
    exist: it is refused, naming it, before the stage's key is taken. Keyed as a hub id it would change the
    key, and the executor clears a stage's artifacts (hours of scoring) before it reruns a stage whose key
    changed."""
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "corpus.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    run_dir = tmp_path / "run"
    scores = run_dir / "shared" / "scores.parquet"

    def stage() -> Stage:
        def compute(values) -> None:
            scores.parent.mkdir(parents=True, exist_ok=True)
            scores.write_text("hours of scoring")

        return Stage("score", compute, [scores], sources={"corpus": lambda: source_identity("data/corpus.jsonl")})

    monkeypatch.chdir(home)
    Executor(run_dir).ensure(stage())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(
        FileNotFoundError, match=r"data/corpus.jsonl: no such file or directory \(relative to .*elsewhere"
    ):
        Executor(run_dir).ensure(stage())
    assert scores.read_text() == "hours of scoring"
    monkeypatch.chdir(home)
    executor = Executor(run_dir)
    executor.ensure(stage())
    assert executor.cached == ["score"]


def test_a_hub_id_is_keyed_by_its_name_and_a_missing_local_source_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert source_identity("tatsu-lab/alpaca") == "hub:tatsu-lab/alpaca"
    for missing in ("../data/alpaca.jsonl.gz", "corpus.parquet", "/nowhere/rows", "~/rows.jsonl"):
        with pytest.raises(FileNotFoundError, match="no such file or directory"):
            source_identity(missing)
    with pytest.raises(ModelLoadError, match=r"model path does not exist: \.\./runs/pruned"):
        model_identity("../runs/pruned")  # a checkpoint's path, likewise (resolve_model)
