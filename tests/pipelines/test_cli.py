import json

import pytest

from pipelines.cli import main


def test_prune_command_writes_a_checkpoint_with_its_record(tiny_model_dir, tmp_path, capsys):
    status = main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(tmp_path / "p")])
    assert status == 0
    record = json.loads((tmp_path / "p" / "pruning.json").read_text())
    assert record["method"] == "magnitude" and record["total_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert "total sparsity 0.5000" in capsys.readouterr().out


def test_prune_command_refuses_a_missing_model_in_one_line(tmp_path, capsys):
    status = main(["prune", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "p")])
    assert status == 2
    assert capsys.readouterr().err.strip().endswith(f"model path does not exist: {tmp_path / 'missing'}")


def test_prune_command_runs_wanda_at_two_four_with_demo_calibration(tiny_model_dir, tmp_path, capsys):
    args = ["prune", "--model", str(tiny_model_dir), "--method", "wanda", "--pattern", "2:4", "--out", str(tmp_path)]
    status = main(args + ["--calibration", "demo", "--calibration-samples", "4", "--seqlen", "32"])
    assert status == 0
    record = json.loads((tmp_path / "pruning.json").read_text())
    assert record["target"]["pattern"] == "2:4" and record["calibration"]["source"] == "demo"
    assert record["calibration_shape"] == [4, 32]
    assert "wanda 2:4: total sparsity 0.5000; calibration 4 x 32 tokens from demo" in capsys.readouterr().out


def test_prune_command_drops_layers(tiny_model_dir, tmp_path, capsys):
    args = ["prune", "--model", str(tiny_model_dir), "--method", "layer_drop", "--drop", "0.5", "--out", str(tmp_path)]
    assert main(args + ["--calibration", "demo", "--calibration-samples", "2", "--seqlen", "16"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert "(2 -> 1)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "wanda"], "method 'wanda' needs calibration data"),
        (["--method", "pruneit"], "unknown pruning method 'pruneit'; known: layer_drop, magnitude, sparsegpt, wanda"),
        (["--sparsity", "1.5"], "sparsity must be in (0, 1), got 1.5"),
        (["--pattern", "2:5"], "its input width 48 is not a multiple of 5"),
        (["--method", "layer_drop", "--calibration", "demo"], "give exactly one of sparsity, pattern or drop"),
    ],
)
def test_prune_command_refuses_bad_input_in_one_line(tiny_model_dir, tmp_path, capsys, extra, message):
    assert main(["prune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "p"), *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_run_without_config_is_the_builtin_demo(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "built-in demo" in printed and "report:" in printed
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [row["combo"] for row in results["combos"]] == ["paser-b60-s0", "random-b60-s0"]
    assert all(row["metrics"]["heldout_nll"] > 0 for row in results["combos"])


def _shared_data_or_skip():
    from data.paths import data_dir

    try:
        return data_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))


def test_eval_command_writes_metrics_and_prints_the_table(tiny_model_dir, tmp_path, capsys):
    _shared_data_or_skip()
    out = tmp_path / "eval"
    status = main(
        ["eval", "--model", str(tiny_model_dir), "--tasks", "wikitext2,piqa", "--limit", "2", "--out", str(out)]
    )
    assert status == 0
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["tasks"]) == {"wikitext2", "piqa"} and record["limit"] == 2
    assert 0.0 <= record["tasks"]["piqa"]["metrics"]["acc"] <= 1.0
    printed = capsys.readouterr().out
    assert "WikiText-2 PPL" in printed and str(out / "metrics.json") in printed


def test_eval_command_refuses_an_unknown_task_in_one_line(tiny_model_dir, capsys):
    status = main(["eval", "--model", str(tiny_model_dir), "--tasks", "wikitext2,mmlu"])
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "unknown task 'mmlu'" in error


def test_eval_command_names_a_missing_data_file(tiny_model_dir, tmp_path, capsys):
    status = main(["eval", "--model", str(tiny_model_dir), "--tasks", "ptb", "--data-dir", str(tmp_path)])
    assert status == 2
    assert str(tmp_path / "eval" / "ptb.test.txt") in capsys.readouterr().err


def _subset(tmp_path, count=8):
    path = tmp_path / "selection.jsonl"
    rows = [
        {"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}.", "id": i}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_recover_command_trains_merges_and_prints_the_summary(tiny_model_dir, tmp_path, capsys):
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(pruned)]) == 0
    out = tmp_path / "recovered"
    argv = ["recover", "--pruned", str(pruned), "--subset", str(_subset(tmp_path)), "--out", str(out)]
    argv += ["--max-steps", "2", "--batch-size", "4", "--remask-eval", "none", "--device", "cpu", "--dtype", "fp32"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "recover sft: 8 rows" in printed and "2 steps" in printed
    assert "0.5000 after re-masking" in printed
    record = json.loads((out / "recovery.json").read_text())
    assert record["hyperparameters"]["batch_size"] == 4


def test_recover_command_refuses_distill_without_the_original_in_one_line(tiny_model_dir, tmp_path, capsys):
    argv = ["recover", "--pruned", str(tiny_model_dir), "--subset", str(_subset(tmp_path)), "--out", str(tmp_path)]
    assert main(argv + ["--objective", "distill"]) == 2
    assert capsys.readouterr().err.strip() == (
        "paser recover: error: objective 'distill' needs the original model as teacher (--original)"
    )


def test_data_command_normalises_a_dolly_file(tmp_path, capsys):
    source = tmp_path / "dolly.jsonl"
    rows = [
        {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "open_qa"},
        {"instruction": "Summarise.", "context": "A long text.", "response": "", "category": "summarization"},
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "corpus.jsonl"
    assert main(["data", "dolly", "--source", str(source), "--out", str(out)]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == [{"instruction": "Name a colour.", "input": "", "output": "Blue.", "category": "open_qa"}]
    assert "empty_response" in capsys.readouterr().out
