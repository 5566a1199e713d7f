import errno
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from paser.pipelines.cli import main


def test_prune_command_writes_a_checkpoint_with_its_record(tiny_model_dir, tmp_path, capsys, monkeypatch):
    devices = []  # the default device comes from the one rule every command follows (cuda when visible, else cpu)
    monkeypatch.setattr("paser.recovery.models.default_device", lambda: devices.append("cpu") or "cpu")
    argv = ["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--sparsity", "0.5"]
    status = main([*argv, "--out", str(tmp_path / "p")])
    assert status == 0 and devices == ["cpu"]
    record = json.loads((tmp_path / "p" / "pruning.json").read_text())
    assert record["method"] == "magnitude" and record["total_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert "total sparsity 0.5000" in capsys.readouterr().out


def test_prune_command_defaults_are_paser_prune_s_wanda_which_asks_for_calibration(monkeypatch, capsys):
    from paser.recovery.config import PruneSpec

    applied = []

    def apply(spec, model, out):
        applied.append(spec)
        raise ValueError("stop")

    monkeypatch.setattr(PruneSpec, "apply", apply)
    assert main(["prune", "--model", "m", "--out", "o"]) == 2
    assert applied == [PruneSpec()] and PruneSpec().method == "wanda"
    capsys.readouterr()
    monkeypatch.undo()
    assert main(["prune", "--model", "m", "--out", "o"]) == 2
    assert _one_line_refusal(capsys).startswith("paser prune: error: method 'wanda' needs calibration data")


def test_prune_command_refuses_a_missing_model_in_one_line(tmp_path, capsys):
    status = main(
        ["prune", "--model", str(tmp_path / "missing"), "--method", "magnitude", "--out", str(tmp_path / "p")]
    )
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
        (
            ["--method", "pruneit"],
            "unknown pruning method 'pruneit'; known: layer_drop, magnitude, sparsegpt, wanda, width",
        ),
        (["--method", "magnitude", "--sparsity", "1.5"], "sparsity must be in (0, 1), got 1.5"),
        (["--method", "magnitude", "--pattern", "2:5"], "its input width 48 is not a multiple of 5"),
        (["--method", "layer_drop", "--calibration", "demo"], "give exactly one of sparsity, pattern, drop or ratio"),
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
    from paser.data.paths import data_dir

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
    argv = ["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--sparsity", "0.5"]
    assert main([*argv, "--out", str(pruned)]) == 0
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


def _one_line_refusal(capsys) -> str:
    """The refusal `main` printed: exactly one line on stderr, no traceback."""
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    return error


def _select_argv(tiny_model_dir, tmp_path, out, *extra):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}."}) + "\n" for i in range(4)))
    models = ["--original", str(tiny_model_dir), "--pruned", str(tiny_model_dir)]
    return ["select", *models, "--corpus", str(corpus), "--out", str(out), *extra]


def _recover_argv(tiny_model_dir, tmp_path, out):
    return ["recover", "--pruned", str(tiny_model_dir), "--subset", str(_subset(tmp_path)), "--out", str(out)]


@pytest.mark.parametrize("command", ["select", "recover"])
def test_an_out_that_is_a_file_is_refused_in_one_line(tiny_model_dir, tmp_path, capsys, command):
    out = tmp_path / "taken"
    out.write_text("")
    argv = (_select_argv if command == "select" else _recover_argv)(tiny_model_dir, tmp_path, out)
    assert main(argv) == 2
    assert _one_line_refusal(capsys) == f"paser {command}: error: {out} is a file, not a folder; choose another --out"


@pytest.mark.parametrize("command", ["select", "recover"])
def test_an_out_under_a_file_is_refused_in_one_line(tiny_model_dir, tmp_path, capsys, command):
    blocker = tmp_path / "taken"
    blocker.write_text("")
    out = blocker / "run"
    argv = (_select_argv if command == "select" else _recover_argv)(tiny_model_dir, tmp_path, out)
    assert main(argv) == 2
    assert _one_line_refusal(capsys) == (
        f"paser {command}: error: {out} cannot be created: {blocker} is a file, not a folder; choose another --out"
    )


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.EACCES, "permission denied writing to {out}; make it writable or choose another --out"),
        (errno.EROFS, "{out} is on a read-only file system; choose another --out"),
    ],
)
def test_an_out_that_cannot_be_written_is_refused_in_one_line(
    tiny_model_dir, tmp_path, capsys, monkeypatch, code, message
):
    out = tmp_path / "out"

    def refuse(rows, path, **options):  # what writing into a read-only folder raises, even as root
        raise OSError(code, os.strerror(code), str(path.parent / f".{path.name}-host-1-x.tmp"))

    monkeypatch.setattr("paser.pipelines.select.write_corpus_store", refuse)
    assert main(_select_argv(tiny_model_dir, tmp_path, out)) == 2
    assert _one_line_refusal(capsys) == "paser select: error: " + message.format(out=out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_out_folder_is_refused_in_one_line(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    assert main(_select_argv(tiny_model_dir, tmp_path, out)) == 2
    assert _one_line_refusal(capsys).startswith(f"paser select: error: permission denied writing to {out};")


@pytest.mark.parametrize("command", ["select", "recover", "eval", "prune"])
def test_cuda_on_a_torch_without_cuda_is_refused_before_loading(tiny_model_dir, tmp_path, capsys, monkeypatch, command):
    monkeypatch.setattr("torch.version.cuda", None)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    argv = {
        "select": _select_argv(tiny_model_dir, tmp_path, tmp_path / "out"),
        "recover": _recover_argv(tiny_model_dir, tmp_path, tmp_path / "out"),
        "eval": ["eval", "--model", str(tiny_model_dir), "--tasks", "wikitext2"],
        "prune": ["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--out", str(tmp_path / "out")],
    }[command]
    monkeypatch.setattr(
        "paser.pipelines.select.score_stage", lambda *args: pytest.fail("scored on a device it refuses")
    )
    assert main([*argv, "--device", "cuda"]) == 2
    assert _one_line_refusal(capsys) == (
        f"paser {command}: error: device 'cuda' cannot be used: this torch ({torch.__version__}) is built without "
        "CUDA; use cpu, or leave the device unset"
    )


@pytest.mark.parametrize("offline", [True, False])
def test_a_hub_model_that_cannot_be_reached_is_refused_at_once(tmp_path, capsys, monkeypatch, offline):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", offline)
    monkeypatch.setattr("paser.recovery.models.hub_reachable", lambda endpoint: False)
    started = time.perf_counter()
    assert (
        main(["prune", "--model", "paser-tests/no-such-model", "--method", "magnitude", "--out", str(tmp_path / "out")])
        == 2
    )
    assert time.perf_counter() - started < 10  # no download retries
    why = "the hub is offline (HF_HUB_OFFLINE is set)" if offline else "https://huggingface.co cannot be reached"
    assert _one_line_refusal(capsys) == (
        "paser prune: error: model 'paser-tests/no-such-model' is neither a local folder nor in the Hugging Face "
        f"cache, and {why}: give the path of a checkpoint folder (one with config.json)"
    )


class _RunsCode:
    """Unpickles into a call of `print`: what a malicious checkpoint does with `os.system`."""

    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_a_checkpoint_whose_pickle_runs_code_is_refused_naming_the_file(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(tiny_model_dir / "config.json", model)
    torch.save({"model.embed_tokens.weight": _RunsCode()}, model / "pytorch_model.bin")
    assert main(["prune", "--model", str(model), "--method", "magnitude", "--out", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr()
    assert "unpickling ran code" not in printed.out
    error = printed.err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert error.startswith(f"paser prune: error: {model}: refused to unpickle pytorch_model.bin: Unsupported global:")
    assert error.endswith("use a safetensors checkpoint from a source you trust")


@pytest.mark.parametrize("command", ["select", "run"])
def test_a_config_file_that_is_not_yaml_is_refused_naming_the_file_and_line(tmp_path, capsys, command):
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  original: [smollm2\n")
    argv = ["select", "--config", str(config)] if command == "select" else ["run", str(config)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    error = _one_line_refusal(capsys)
    assert error.startswith(f"paser {command}: error: {config}, line 3, column 1: not valid YAML (")
    assert error.endswith("); fix the file")


def test_a_select_on_a_folder_another_process_holds_is_refused_before_any_model_loads(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    from paser.pipelines.lock import folder_lock

    monkeypatch.setattr("paser.pipelines.engines.load_model", lambda *args: pytest.fail("loaded a model"))
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, "select"):
        assert main(_select_argv(tiny_model_dir, tmp_path, out)) == 2
    assert _one_line_refusal(capsys) == (
        f"paser select: error: {out} is in use by paser select (pid {os.getpid()}), which holds {out / '.lock'}; "
        "wait for it to finish or choose another --out"
    )
    assert [path.name for path in out.iterdir()] == [".lock"]


def test_a_select_takes_over_the_lock_of_a_dead_process(tiny_model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "command": "select"}))

    def score_stage(config, work_dir):
        raise ValueError(f"scoring under the lock of {json.loads((work_dir / '.lock').read_text())['pid']}")

    monkeypatch.setattr("paser.pipelines.select.score_stage", score_stage)
    assert main(_select_argv(tiny_model_dir, tmp_path, out)) == 2
    assert _one_line_refusal(capsys) == f"paser select: error: scoring under the lock of {os.getpid()}"


def test_recover_flags_are_generated_from_the_train_config_fields():
    import dataclasses

    from paser.pipelines.cli import build_parser
    from paser.recovery.config import TrainConfig, setting_owners

    args = build_parser().parse_args(
        [
            "recover",
            "--pruned",
            "p",
            "--subset",
            "s",
            "--out",
            "o",
            "--padding-free",
            "--epochs",
            "2",
            "--no-group-by-length",
        ]
    )
    assert (args.padding_free, args.epochs, args.group_by_length, args.lora_r) == (True, 2.0, False, None)
    flags = {action.dest for action in build_parser()._subparsers._group_actions[0].choices["recover"]._actions}
    assert {field.name for field in dataclasses.fields(TrainConfig)} - {"target_modules", "objective_config"} <= flags
    assert set(setting_owners()) <= flags  # every objective's settings too


def test_an_objective_flag_names_its_objectives_in_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["recover", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--dpo-beta DPO_BETA [objective dpo, sft+dpo] DPO beta" in help_text
    assert "--temperature TEMPERATURE [objective distill] KD temperature" in help_text


def test_recover_command_refuses_a_flag_of_another_objective_in_one_line(tiny_model_dir, tmp_path, capsys):
    argv = ["recover", "--pruned", str(tiny_model_dir), "--subset", str(_subset(tmp_path)), "--out", str(tmp_path)]
    assert main([*argv, "--objective", "sft", "--dpo-beta", "0.3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "paser recover: error: dpo_beta is a setting of objective dpo and sft+dpo, not of 'sft'"
    )


@pytest.mark.parametrize(
    ("typed", "value"), [("1.0", 1.0), ("1", 1), ("1e0", 1.0), ("1e3", 1000), ("0.5", 0.5), ("200000t", "200000t")]
)
def test_a_budget_flag_keeps_the_fraction_1_0_apart_from_the_row_count_1(typed, value):
    from paser.pipelines.cli import budget_value

    parsed = budget_value(typed)
    assert parsed == value and type(parsed) is type(value)


def _counting_corpus(tmp_path, rows=6):
    """A corpus whose rows share some words and differ in others (what clustering's lexical features need)."""
    corpus = tmp_path / "counting.jsonl"
    lines = [
        json.dumps({"instruction": f"Count to {i + 10}.", "output": " ".join(map(str, range(10, i + 12)))})
        for i in range(rows)
    ]
    corpus.write_text("\n".join(lines) + "\n")
    return corpus


def test_a_budget_of_1_0_selects_every_row_and_1_selects_one(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        *_select_argv(tiny_model_dir, tmp_path, out),
        "--corpus",
        str(_counting_corpus(tmp_path)),
        "--clusters",
        "2",
    ]
    for budget, rows in (("1.0", 6), ("1", 1)):  # the second reuses the first one's scores
        assert main([*argv, "--budget", budget, "--set", "models.dtype=fp32"]) == 0
        assert len((out / "selection.jsonl").read_text().splitlines()) == rows
        assert repr(json.loads((out / "stats.json").read_text())["totals"]["budget_requested"]) == budget


def _every_help_argv() -> list[list[str]]:
    """The argv of every `--help` paser has: the top level, each command, each data recipe and held-out set."""
    from paser.data.recipes import RECIPES
    from paser.pipelines.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    data = [["data", recipe, "--help"] for recipe in RECIPES] + [["data", "heldout", "--help"]]
    return [["--help"], *([command, "--help"] for command in commands), *data]


def test_every_help_prints_its_text_as_written(capsys):
    rendered = {}
    for argv in _every_help_argv():
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0, argv
        rendered[" ".join(argv)] = capsys.readouterr().out
    for argv, text in rendered.items():
        assert text.startswith("usage: "), argv
        assert "%(" not in text and "{'option_strings'" not in text and "%%" not in text, argv
    # a field help is printed as written, e.g. gradient checkpointing's, which names its memory saving
    assert "activation memory ~30x smaller" in " ".join(rendered["recover --help"].split())
    assert "sharegpt" in rendered["data --help"] and "gsm8k" in rendered["data --help"]


# Libraries the `paser` command must not import before a command runs: each costs a second or more to import
# (torch several), which --help and a refusal of the arguments would pay for nothing.
HEAVY_LIBRARIES = (
    "torch",
    "transformers",
    "sklearn",
    "scipy",
    "pandas",
    "pyarrow",
    "datasets",
    "sentence_transformers",
    "umap",
    "igraph",
    "trl",
    "peft",
    "lm_eval",
    "ray",
    "yake",
    "matplotlib",
)


@pytest.mark.parametrize(
    "argv", [*_every_help_argv(), ["select", "--corpus", "missing.jsonl", "--out", "out"]], ids=" ".join
)
def test_every_help_and_an_early_refusal_import_no_heavy_library(argv, tmp_path):
    code = (
        "import sys\nfrom paser.pipelines.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(set({HEAVY_LIBRARIES!r}) & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


def test_a_percent_sign_in_a_config_fields_help_or_default_prints_as_written(capsys):
    import argparse
    import dataclasses

    from paser.pipelines.cli import add_dataclass_flags

    @dataclasses.dataclass
    class Settings:
        share: str = dataclasses.field(default="50%", metadata={"help": "keep 100% of %(prog)s %d rows"})

    parser = argparse.ArgumentParser(prog="demo")
    add_dataclass_flags(parser, Settings)
    assert "keep 100% of %(prog)s %d rows (default 50%)" in " ".join(parser.format_help().split())


@pytest.mark.parametrize(
    ("argv", "resume"),
    [
        (["select"], "resume from the finished shards"),
        (["run"], "resume from the finished stages and shards"),
        (["prune", "--model", "m", "--out", "o"], "start it again"),
        (["eval", "--model", "m"], "start it again"),
        (["recover", "--pruned", "p", "--subset", "s", "--out", "o"], "start it again"),
        (["report", "r"], "start it again"),
        (["data", "dolly"], "start it again"),
    ],
)
def test_ctrl_c_in_any_command_is_one_line_and_exit_130(monkeypatch, capsys, argv, resume):
    from paser.pipelines import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"{argv[0]}_command", interrupted)
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert captured.err == f"paser {argv[0]}: interrupted; rerun the same command to {resume}\n"


def test_a_refusal_after_a_progress_bar_started_is_still_one_line(tiny_model_dir, tmp_path, capsys):
    corpus = _counting_corpus(tmp_path, rows=30)
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join([*lines[:20], "{not json", *lines[20:]]) + "\n")  # the corpus bar is at row 20
    argv = [*_select_argv(tiny_model_dir, tmp_path, tmp_path / "out"), "--corpus", str(corpus)]
    assert main(argv) == 2
    assert _one_line_refusal(capsys).startswith(f"paser select: error: {corpus}:21: invalid JSON")
