"""`paser run` end to end on tiny models: every combination runs once, reruns are cached stage by stage."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from paser.data.demo import write_demo_corpus
from paser.pipelines.config import ConfigError, load_config
from paser.pipelines.run import Combo, RunConfig, combos, gap_recovered, load_run_config, run
from paser.pipelines.run_stages import select_config
from paser.recovery.items import read_items
from tests.pipelines.conftest import execute_notebook

RUN_CONFIGS = sorted((Path(__file__).parents[2] / "pipelines" / "configs" / "run").glob("*.yaml"))
STRATEGIES = ["paser", "random"]
BUDGETS = [10, 0.25]


def _wikitext_dir(root: Path) -> Path:
    """A data folder with a small WikiText-2-shaped test file, so the run needs no shared data."""
    folder = root / "data" / "eval"
    folder.mkdir(parents=True)
    words = [
        "the",
        "model",
        "reads",
        "a",
        "short",
        "line",
        "of",
        "text",
        "and",
        "predicts",
        "the",
        "next",
        "word",
        "in",
        "the",
        "line",
    ]
    lines = [json.dumps({"text": " ".join(words[(i + j) % len(words)] for j in range(12))}) for i in range(60)]
    (folder / "wikitext2_raw_v1_test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "data"


def tiny_overrides(root: Path, original: Path, pruned: Path, budgets=BUDGETS) -> list[str]:
    corpus = write_demo_corpus(root / "corpus.jsonl", rows_per_skill=17)
    return [
        f"corpus.path={corpus}",
        f"models.original={original}",
        f"models.pruned={pruned}",
        "models.dtype=fp32",
        "models.device=cpu",
        "formatting.max_length=96",
        "clustering.n_clusters=3",
        f"selection.strategies={json.dumps(STRATEGIES)}",
        f"selection.budgets={json.dumps(budgets)}",
        "selection.seeds=[0]",
        "recovery.max_steps=2",
        "recovery.batch_size=4",
        "recovery.max_length=96",
        "recovery.remask_eval=none",
        "recovery.device=cpu",
        "recovery.dtype=fp32",
        "recovery.show_progress=false",
        "evaluation.tasks=[wikitext2]",
        "evaluation.limit=2",
        "evaluation.seqlen=32",
        "evaluation.heldout_rows=12",
        f"evaluation.data_dir={_wikitext_dir(root)}",
    ]


def tiny_config(root: Path, original: Path, pruned: Path, extra: list[str] = (), **kwargs) -> RunConfig:
    return load_config(RunConfig, None, tiny_overrides(root, original, pruned, **kwargs) + list(extra))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir, perturbed_model_dir):
    root = tmp_path_factory.mktemp("run")
    config = tiny_config(root, tiny_model_dir, perturbed_model_dir)
    runner = run(config, root / "run")
    return root, config, runner


def _stages(run_dir: Path, invocation: int, action: str) -> set[str]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return {event["stage"] for event in events if event["invocation"] == invocation and event["action"] == action}


def test_every_shipped_run_config_loads():
    assert RUN_CONFIGS
    for path in RUN_CONFIGS:
        config = load_run_config(path)
        assert combos(config)


def test_no_config_is_the_builtin_demo():
    config = load_run_config(None)
    assert config.corpus.path == "builtin:demo" and config.models.prune.method == "wanda"
    assert [combo.strategy for combo in combos(config)] == ["paser", "random"]


def test_config_refuses_both_or_neither_pruned_model():
    with pytest.raises(ConfigError, match="exactly one of models.pruned"):
        load_config(RunConfig, None, ["corpus.path=x.jsonl", "models.pruned=p", "models.prune.method=wanda"])
    with pytest.raises(ConfigError, match="exactly one of models.pruned"):
        load_config(RunConfig, None, ["corpus.path=x.jsonl", "models.dtype=fp32"])
    with pytest.raises(ConfigError, match="repeats a value"):
        load_config(RunConfig, None, ["corpus.path=x.jsonl", "models.pruned=p", "selection.budgets=[0.1, 0.1]"])


def test_combo_names_are_stable():
    assert Combo("paser", 0.1, 0).name == "paser-b0.1-s0"
    assert Combo("random", 30.0, 2).name == "random-b30-s2"


def test_a_sweep_mixes_row_and_token_budgets_and_names_token_combos_by_tokens():
    overrides = ["corpus.path=x.jsonl", "models.pruned=p", "selection.budgets=[0.1, 200000t]"]
    config = load_config(RunConfig, None, overrides)
    assert [combo.name for combo in combos(config)] == [
        "paser-b0.1-s0",
        "paser-t200000-s0",
        "random-b0.1-s0",
        "random-t200000-s0",
    ]
    assert [combo.budget for combo in combos(config)][:2] == [0.1, "200000t"]


def test_a_sweep_keeps_the_row_count_1_apart_from_the_fraction_1_0():
    from paser.pipelines.analysis.reader import format_budget

    chosen = []
    for budgets in ("[1, 30]", "[1.0]"):
        config = load_config(
            RunConfig, None, ["corpus.path=x.jsonl", "models.pruned=p", f"selection.budgets={budgets}"]
        )
        chosen += [combo for combo in combos(config) if combo.strategy == "paser"]
    assert [combo.name for combo in chosen] == ["paser-b1row-s0", "paser-b30-s0", "paser-b1-s0"]
    assert [repr(combo.budget) for combo in chosen] == ["1", "30.0", "1.0"]
    assert [format_budget(combo.budget) for combo in chosen] == ["1 row", "30", "1.0"]
    with pytest.raises(ConfigError, match=r"both 1 \(one row\) and 1\.0 \(every row\)"):
        load_config(RunConfig, None, ["corpus.path=x.jsonl", "models.pruned=p", "selection.budgets=[1, 1.0]"])


@pytest.mark.parametrize(("budgets", "message"), [("[0.1, 2e5t]", "is not a budget"), ("[0.1, 0]", "must be >= 1")])
def test_a_malformed_sweep_budget_is_refused_naming_its_key(budgets, message):
    with pytest.raises(ConfigError, match=rf"selection\.budgets\[1\]: .*{message}"):
        load_config(RunConfig, None, ["corpus.path=x.jsonl", "models.pruned=p", f"selection.budgets={budgets}"])


def test_a_token_budget_written_twice_is_refused():
    with pytest.raises(ConfigError, match="repeats a value"):
        load_config(RunConfig, None, ["corpus.path=x.jsonl", "models.pruned=p", "selection.budgets=[500t, 0500t]"])


def test_gap_recovered_formula():
    assert gap_recovered(recovered=3.0, pruned=4.0, original=2.0) == pytest.approx(0.5)
    assert gap_recovered(recovered=0.55, pruned=0.5, original=0.6) == pytest.approx(0.5)
    assert gap_recovered(1.0, 2.0, 2.0) != gap_recovered(1.0, 2.0, 2.0)  # NaN without a gap


def test_tiny_run_completes_every_combination(tiny_run):
    root, config, runner = tiny_run
    run_dir = runner.dir
    results = json.loads((run_dir / "results.json").read_text())
    names = [row["combo"] for row in results["combos"]]
    assert names == ["paser-b10-s0", "paser-b0.25-s0", "random-b10-s0", "random-b0.25-s0"]
    import pandas as pd

    pool = len(pd.read_parquet(run_dir / "shared" / "scores.parquet")) - 12
    assert [row["budget_rows"] for row in results["combos"]] == [10, int(0.25 * pool + 0.5)] * 2  # half-up
    halves = [f"heldout_{split}_{kind}" for split in ("dev", "test") for kind in ("nll", "ppl")]
    for row in results["combos"]:
        assert set(row["metrics"]) == {"wikitext2_ppl", "heldout_nll", "heldout_ppl", *halves}
        selected = (run_dir / "combos" / row["combo"] / "select" / "selection.jsonl").read_text().splitlines()
        assert len(selected) == row["budget_rows"]
        assert (run_dir / "combos" / row["combo"] / "recover" / "merged" / "config.json").exists()
    assert set(results["baselines"]) == {"original", "pruned"}
    items = read_items(run_dir / "combos" / "paser-b10-s0" / "eval")
    assert {"wikitext2.nll_sum", "wikitext2.tokens", "heldout.nll_sum", "heldout.tokens"} <= set(items)
    assert len(items["heldout.tokens"]) == 12
    # one seed: the paired differences resample the test items alone
    assert {row["bootstrap"] for row in results["versus_random"]["rows"]} == {"items"}
    assert len(results["summary"]["rows"]) == 2 * 2 * 7  # strategies × budgets × metrics
    compute = {row["combo"]: row for row in results["compute"]["rows"]}
    assert 0 < compute["paser-b10-s0"]["rows_trained"] <= 10 and compute["paser-b10-s0"]["train_tokens"] > 0
    assert results["shared_cost"]["selection_seconds"] > 0
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert all(entry["status"] == "done" for entry in manifest.values())
    # score, heldout, embed, embed_response, cluster, 2 baselines, 3 per combo
    assert len(manifest) == 1 + 1 + 1 + 1 + 1 + 2 + 3 * 4
    assert set(runner.ran) == set(manifest)


def test_heldout_rows_are_never_selected(tiny_run):
    _, _, runner = tiny_run
    held = {json.loads(line)["id"] for line in (runner.dir / "shared" / "heldout.jsonl").read_text().splitlines()}
    assert len(held) == 12
    for folder in (runner.dir / "combos").iterdir():
        chosen = {json.loads(line)["id"] for line in (folder / "select" / "selection.jsonl").read_text().splitlines()}
        assert not chosen & held


def test_the_heldout_rows_split_into_dev_and_test_halves_and_choices_read_dev_only(tiny_run):
    from paser.pipelines.choose import best_setting, dev_view
    from paser.pipelines.heldout import row_split

    _, _, runner = tiny_run
    held = [json.loads(line)["id"] for line in (runner.dir / "shared" / "heldout.jsonl").read_text().splitlines()]
    dev = {row_id for row_id in held if row_split(row_id) == "dev"}
    test = set(held) - dev
    assert dev and test  # both halves have rows, and together they are the held-out rows
    for folder in (runner.dir / "combos").iterdir():
        chosen = {json.loads(line)["id"] for line in (folder / "select" / "selection.jsonl").read_text().splitlines()}
        assert not chosen & dev and not chosen & test
    results = json.loads((runner.dir / "results.json").read_text())
    assert results["dev_metrics"] == ["heldout_dev_nll", "heldout_dev_ppl"]
    assert results["test_metrics"] == ["heldout_test_nll", "heldout_test_ppl"]
    items = read_items(runner.dir / "combos" / "paser-b10-s0" / "eval")
    assert len(items["heldout_dev.tokens"]) == len(dev) and len(items["heldout_test.tokens"]) == len(test)
    record = json.loads((runner.dir / "combos" / "paser-b10-s0" / "eval" / "metrics.json").read_text())
    assert record["heldout_dev"]["rows"] + record["heldout_test"]["rows"] == record["heldout"]["rows"] == 12
    choice = best_setting(dev_view(results), "heldout_dev_nll")
    assert (choice.strategy, choice.budget) in {(row["strategy"], row["budget"]) for row in results["combos"]}
    with pytest.raises(ValueError, match="not a dev metric"):
        best_setting(dev_view(results), "heldout_test_nll")


def test_second_invocation_recomputes_nothing(tiny_run):
    root, config, first = tiny_run
    before = {p: p.stat().st_mtime_ns for p in first.dir.rglob("metrics.json")}
    second = run(config, first.dir)
    assert second.ran == []
    assert set(second.cached) == set(first.ran)
    assert _stages(first.dir, second.manifest.invocation, "ran") == set()
    assert {p: p.stat().st_mtime_ns for p in first.dir.rglob("metrics.json")} == before


def test_adding_a_budget_recomputes_only_its_stages(tiny_run, tiny_model_dir, perturbed_model_dir):
    root, _, first = tiny_run
    same_data = [f"evaluation.data_dir={root / 'data'}"]
    config = tiny_config(root / "again", tiny_model_dir, perturbed_model_dir, same_data, budgets=[*BUDGETS, 20])
    # Same corpus content, another file: the score stage is keyed by content, not by path.
    runner = run(config, first.dir)
    assert set(runner.ran) == {f"{stage}/{s}-b20-s0" for stage in ("select", "recover", "eval") for s in STRATEGIES}
    results = json.loads((first.dir / "results.json").read_text())
    assert len(results["combos"]) == 6 and all(row["metrics"] for row in results["combos"])


def test_changed_recovery_setting_reruns_recovery_and_eval_only(tmp_path, tiny_model_dir, perturbed_model_dir):
    config = tiny_config(tmp_path, tiny_model_dir, perturbed_model_dir, budgets=[10])
    run(config, tmp_path / "run")
    extra = ["recovery.lora_r=4", f"evaluation.data_dir={tmp_path / 'data'}"]
    changed = tiny_config(tmp_path / "b", tiny_model_dir, perturbed_model_dir, extra, budgets=[10])
    runner = run(changed, tmp_path / "run")
    assert set(runner.ran) == {f"{stage}/{s}-b10-s0" for stage in ("recover", "eval") for s in STRATEGIES}


def test_interrupted_run_resumes_where_it_stopped(tmp_path, tiny_model_dir, perturbed_model_dir, monkeypatch):
    from paser.recovery import train

    config = tiny_config(tmp_path, tiny_model_dir, perturbed_model_dir, budgets=[10])
    real_recover, calls = train.recover, []

    def recover_then_crash(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real_recover(*args, **kwargs)

    monkeypatch.setattr(train, "recover", recover_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "run")
    monkeypatch.setattr(train, "recover", real_recover)
    runner = run(config, tmp_path / "run")
    assert set(runner.ran) == {"recover/random-b10-s0", "eval/random-b10-s0"}
    assert "recover/paser-b10-s0" in runner.cached


def test_report_and_notebook_on_the_tiny_run(tiny_run, tmp_path, monkeypatch, python3_kernel):
    from paser.pipelines.analysis.report import format_results, write_report

    _, config, runner = tiny_run
    markdown, html = write_report(runner.dir)
    names = [combo.name for combo in combos(config)]
    for path in (markdown, html):
        text = path.read_text()
        assert all(name in text for name in names)
    summary = format_results(runner.dir)
    assert "paser" in summary and "random" in summary
    notebook = execute_notebook(runner.dir, tmp_path, monkeypatch)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert outputs and not [output for output in outputs if output.output_type == "error"]


def test_cli_run_prints_the_summary_and_the_report(tmp_path, tiny_model_dir, perturbed_model_dir, capsys):
    from paser.pipelines.cli import main

    sets = [
        item
        for override in tiny_overrides(tmp_path, tiny_model_dir, perturbed_model_dir, budgets=[10])
        for item in ("--set", override)
    ]
    config = tmp_path / "run.yaml"
    config.write_text("corpus: {path: unused.jsonl}\nmodels: {pruned: unused}\n")
    assert main(["run", str(config), "--out", str(tmp_path / "run"), *sets]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and (tmp_path / "run" / "report.html").exists()
    lines = [line for line in printed.splitlines() if line.startswith(("paser ", "random ", "original", "pruned"))]
    assert len(lines) == 4  # the summary table: two strategies and the two baselines
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "report.md").exists()


def test_cli_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from paser.pipelines.cli import main

    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "manifest.json" in error


def test_a_second_run_on_a_locked_folder_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from paser.pipelines.cli import main
    from paser.pipelines.lock import folder_lock

    monkeypatch.setattr("paser.pipelines.run.Run.execute", lambda self: pytest.fail("a locked run executed"))
    from paser.data.paths import data_dir

    try:  # the demo's inputs are checked before the lock is taken: without the shared data that refusal comes first
        data_dir()
    except FileNotFoundError:
        pytest.skip("shared data directory absent")
    with folder_lock(tmp_path, "run"):
        assert main(["run", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"paser run: error: {tmp_path} is in use by paser run (pid {os.getpid()}), which holds {tmp_path / '.lock'}; "
        "wait for it to finish or choose another --out"
    )


def test_without_heldout_rows_there_is_no_heldout_metric(tmp_path, tiny_model_dir, perturbed_model_dir):
    extra = ["evaluation.heldout_rows=0", "selection.strategies=[random]"]
    config = tiny_config(tmp_path, tiny_model_dir, perturbed_model_dir, extra, budgets=[10])
    runner = run(config, tmp_path / "run")
    results = json.loads((runner.dir / "results.json").read_text())
    assert results["metrics"] == ["wikitext2_ppl"]
    assert not (runner.dir / "shared" / "heldout.jsonl").exists()


def test_a_recipe_normalises_the_corpus_inside_the_run(tmp_path, tiny_model_dir, perturbed_model_dir):
    demo = [json.loads(line) for line in write_demo_corpus(tmp_path / "demo.jsonl", 17).read_text().splitlines()]
    dolly = tmp_path / "dolly.jsonl"
    dolly.write_text(
        "".join(
            json.dumps({"instruction": r["instruction"], "context": r["input"], "response": r["output"]}) + "\n"
            for r in demo
        )
    )
    extra = [f"corpus.path={dolly}", "recipe=dolly", "selection.strategies=[random]"]
    config = tiny_config(tmp_path, tiny_model_dir, perturbed_model_dir, extra, budgets=[10])
    runner = run(config, tmp_path / "run")
    assert "recipe" in runner.ran and (runner.dir / "shared" / "recipe_corpus.jsonl").exists()
    first = json.loads((runner.dir / "shared" / "recipe_corpus.jsonl").read_text().splitlines()[0])
    assert first["input"] == demo[0]["input"] and first["output"] == demo[0]["output"]
    assert run(config, tmp_path / "run").ran == []
    with pytest.raises(ConfigError, match="unknown"):
        tiny_config(tmp_path / "x", tiny_model_dir, perturbed_model_dir, ["recipe=nope"])


def test_named_heldout_sets_are_each_reported_and_only_evaluations_rerun(
    tiny_run, tmp_path, tiny_model_dir, perturbed_model_dir
):
    from paser.pipelines.analysis.report import write_report

    _, _, first = tiny_run
    run_dir = shutil.copytree(first.dir, tmp_path / "run")
    labelled = tmp_path / "labelled.json"  # a JSON array, a category per row
    rows = [{"instruction": f"Repeat {word}.", "input": "", "output": word, "category": "Echo Words"} for word in "abc"]
    rows += [
        {"instruction": f"Count from {n}.", "input": "", "output": f"{n + 1}", "category": "Count-Up"} for n in (1, 2)
    ]
    labelled.write_text(json.dumps(rows))
    named = [
        "selection.strategies=[random]",
        "evaluation.heldout_rows=null",
        "evaluation.heldout.corpus=12",  # the same split as heldout_rows: 12, so selection and training stay cached
        f"evaluation.heldout.skills={labelled}",
        "evaluation.heldout.gsm8k=builtin:gsm8k:3",
    ]
    config = tiny_config(tmp_path, tiny_model_dir, perturbed_model_dir, named, budgets=[10])
    gsm8k = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(4)]
    (tmp_path / "data" / "eval" / "gsm8k_test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in gsm8k))
    runner = run(config, run_dir)
    evals = {"eval/original", "eval/pruned", "eval/random-b10-s0"}
    assert set(runner.ran) == {"heldout/skills", "heldout/gsm8k", *evals}
    assert len((run_dir / "shared" / "heldout" / "gsm8k.jsonl").read_text().splitlines()) == 3
    results = json.loads((run_dir / "results.json").read_text())
    skills = ["heldout_skills_nll_count_up", "heldout_skills_nll_echo_words"]
    totals = [f"heldout_{name}_{kind}" for name in ("corpus", "skills", "gsm8k") for kind in ("nll", "ppl")]
    halves = [f"heldout_corpus_{split}_{kind}" for split in ("dev", "test") for kind in ("nll", "ppl")]
    assert results["metrics"] == ["wikitext2_ppl", *totals[:2], *halves, *totals[2:4], *skills, *totals[4:]]
    assert results["dev_metrics"] == halves[:2]
    assert results["category_metrics"] == skills
    for metrics in [*results["baselines"].values(), results["combos"][0]["metrics"]]:
        assert set(metrics) == set(results["metrics"]) and all(value > 0 for value in metrics.values())
    items = read_items(run_dir / "baselines" / "original" / "eval")  # per row, for the intervals
    per_row = items["heldout_skills.nll_sum"].sum() / items["heldout_skills.tokens"].sum()
    assert len(items["heldout_skills.tokens"]) == 5
    assert per_row == pytest.approx(results["baselines"]["original"]["heldout_skills_nll"], rel=1e-9)
    before = json.loads((first.dir / "results.json").read_text())["baselines"]["original"]["heldout_nll"]
    assert results["baselines"]["original"]["heldout_corpus_nll"] == pytest.approx(before, rel=1e-5)
    report = write_report(run_dir)[0].read_text()
    assert "Held-out NLL per category" in report and skills[0] in report
    fewer = [*named[:-1], "evaluation.heldout.gsm8k=builtin:gsm8k:2", f"evaluation.data_dir={tmp_path / 'data'}"]
    changed = tiny_config(tmp_path / "again", tiny_model_dir, perturbed_model_dir, fewer, budgets=[10])
    assert set(run(changed, run_dir).ran) == {"heldout/gsm8k", *evals}


def test_generation_tasks_in_a_run_leave_out_the_pool_and_only_evaluations_rerun(
    tiny_run, tmp_path, tiny_model_dir, perturbed_model_dir
):
    import gzip

    root, _, first = tiny_run
    run_dir = shutil.copytree(first.dir, tmp_path / "run")
    from paser.pipelines.layout import RunLayout
    from paser.pipelines.run_stages import load_scored

    held = [json.loads(line) for line in (run_dir / "shared" / "heldout.jsonl").read_text().splitlines()]
    scored = load_scored(RunLayout(run_dir).shared)
    pool_ids = set(scored.scores["id"].astype(str)) - {row["id"] for row in held}
    pooled = [{"instruction": s.instruction, "input": s.input} for s in scored.corpus.samples if s.id in pool_ids]
    long_answer = "A long answer. " * 50
    # Four rows of the pool first, then two held-out rows and three new prompts: only the last five may be asked.
    prompts = [(row["instruction"], row["input"]) for row in pooled[:4] + held[:2]]
    prompts += [(f"Describe place {i}.", "") for i in range(3)]
    data_dir = shutil.copytree(root / "data", tmp_path / "generation_data")
    (data_dir / "recovery").mkdir()
    alpaca = [{"instruction": instruction, "input": text, "output": long_answer} for instruction, text in prompts]
    t0 = [
        {"id": f"t0-{i}", "instruction": f"Is review {i} positive?", "input": "", "output": "yes"}
        | {"category": "Sentiment", "dataset": "imdb", "task": "t"}
        for i in range(4)
    ]
    for name, rows in (("alpaca_52k.jsonl.gz", alpaca), ("t0_labelled_dev.jsonl.gz", t0)):
        with gzip.open(data_dir / "recovery" / name, "wt", encoding="utf-8") as stream:
            stream.write("".join(json.dumps(row) + "\n" for row in rows))
    extra = [
        "selection.strategies=[random]",
        "evaluation.tasks=[wikitext2, gen_labels, gen_longform]",
        "evaluation.limit=null",
        f"evaluation.data_dir={data_dir}",
    ]
    config = tiny_config(tmp_path / "config", tiny_model_dir, perturbed_model_dir, extra, budgets=[10])
    runner = run(config, run_dir)
    assert set(runner.ran) == {"eval/original", "eval/pruned", "eval/random-b10-s0"}
    record = json.loads((run_dir / "combos" / "random-b10-s0" / "eval" / "metrics.json").read_text())
    longform = record["tasks"]["gen_longform"]
    assert longform["n"] == 5 and [example["id"] for example in longform["examples"]] == [
        "alpaca/4",
        "alpaca/5",
        "alpaca/6",
    ]
    assert record["tasks"]["gen_labels"]["n"] == 4
    assert (run_dir / "combos" / "random-b10-s0" / "eval" / "generations" / "gen_longform.json").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert {"gen_labels_exact_match", "gen_longform_repeat_3", "gen_longform_distinct_2"} <= set(results["metrics"])
    lower = results["lower_is_better"]
    assert lower["gen_longform_repeat_3"] and not lower["gen_labels_exact_match"]
    assert "gen_labels_exact_match" not in results["dev_metrics"]


def test_variants_of_a_strategy_run_in_one_sweep_under_their_own_names(tmp_path):
    from paser.pipelines.run import Run

    variants = "{paser_no_ccg: {strategy: paser, ccg: false}, paser_cds: {strategy: paser, ranking: cds}}"
    overrides = [
        "corpus.path=x.jsonl",
        "models.pruned=p",
        "selection.strategies=[paser, paser_no_ccg, paser_cds, ifd]",
        f"selection.variants={variants}",
        "selection.options={paser_cds: {ccg: false}}",
    ]
    config = load_config(RunConfig, None, overrides)
    assert [combo.name for combo in combos(config)][:3] == [
        "paser-b0.1-s0",
        "paser_no_ccg-b0.1-s0",
        "paser_cds-b0.1-s0",
    ]
    runner = Run(config, tmp_path / "run")
    by_name = {combo.strategy: select_config(runner, combo).selection for combo in combos(config)}
    assert by_name["paser_no_ccg"].strategy == "paser" and by_name["paser_no_ccg"].options == {"ccg": False}
    assert by_name["paser_cds"].options == {"ranking": "cds", "ccg": False}
    assert by_name["paser"].options == {}
    assert select_config(runner, combos(config)[0]).scoring.unconditioned_nll  # ifd is in the sweep


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ("{v: {ccg: false}}", "needs `strategy"),
        ("{v: {strategy: paser}, w: {strategy: v}}", "registered strategy"),
    ],
)
def test_malformed_variants_are_refused(variants, message):
    overrides = [
        "corpus.path=x.jsonl",
        "models.pruned=p",
        "selection.strategies=[v, w]",
        f"selection.variants={variants}",
    ]
    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, None, overrides)


def test_the_pool_leaves_out_the_rows_the_pruning_calibrated_on_when_it_is_the_corpus_file(tmp_path, monkeypatch):
    from paser.pipelines.run import Run
    from paser.pipelines.run_stages import calibration_rows_path, write_calibration_rows

    corpus = write_demo_corpus(tmp_path / "corpus.jsonl", rows_per_skill=3)
    overrides = [f"corpus.path={corpus}", f"models.prune={{method: wanda, calibration: {corpus}}}"]
    runner = Run(load_config(RunConfig, None, overrides), tmp_path / "run")
    listed = calibration_rows_path(runner)
    assert listed == str(runner.layout.shared.calibration_rows)
    assert select_config(runner).corpus.exclude_rows == listed
    pruned = Path(runner.pruned_path)
    pruned.mkdir(parents=True)
    (pruned / "pruning.json").write_text(json.dumps({"calibration": {"rows_used_positions": [4, 1]}}))
    monkeypatch.setattr(Run, "prune", lambda self: "pruned")
    write_calibration_rows(runner)
    assert Path(listed).read_text() == "4\n1\n"
    (pruned / "pruning.json").write_text(json.dumps({"calibration": {}}))
    with pytest.raises(RuntimeError, match="rows_used_positions"):
        write_calibration_rows(runner)
    # Another calibration source, or the switch off: nothing is excluded.
    other = load_config(RunConfig, None, [*overrides[:1], "models.prune={method: wanda, calibration: demo}"])
    assert calibration_rows_path(Run(other, tmp_path / "other")) is None
    off = load_config(RunConfig, None, [*overrides, "models.exclude_calibration_rows=false"])
    assert select_config(Run(off, tmp_path / "off")).corpus.exclude_rows is None


def test_the_run_class_only_composes_stages_and_stays_under_150_lines():
    import inspect

    from paser.pipelines.run import Run

    assert len(inspect.getsource(Run).splitlines()) < 150
