"""Refusals: one line on stderr and exit 2, checked before the command makes anything, and never a file left behind.

Each case here is a hostile input a command must refuse before it writes: a checkpoint cut short wherever one is
loaded (`paser select`, `eval`, `prune`, `recover`, `run`), a corpus that is not there, a corpus whose only rows are
duplicates.
"""

from __future__ import annotations

import json
import os

import pytest

from paser.pipelines.cli import main
from tests.pipelines.test_run import tiny_overrides

QUIET = ["--set", "scoring.show_progress=false"]  # no progress bar on stderr beside the refusal


def _one_line_refusal(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    return error


def _corpus(tmp_path, rows=None):
    path = tmp_path / "corpus.jsonl"
    rows = rows or [{"instruction": f"Say {i}.", "output": f"{i}."} for i in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _wikitext(tmp_path):
    folder = tmp_path / "data" / "eval"
    folder.mkdir(parents=True)
    (folder / "wikitext2_raw_v1_test.jsonl").write_text(json.dumps({"text": "the model reads a line"}) + "\n")
    return tmp_path / "data"


def _argv(command, good, bad, tmp_path, out):
    if command == "select --pruned":
        return ["select", "--original", good, "--pruned", bad, "--corpus", str(_corpus(tmp_path)), "--out", out]
    if command == "select --original":
        return ["select", "--original", bad, "--pruned", good, "--corpus", str(_corpus(tmp_path)), "--out", out]
    if command == "eval":
        return ["eval", "--model", bad, "--tasks", "wikitext2", "--data-dir", str(_wikitext(tmp_path)), "--out", out]
    if command == "prune":
        return ["prune", "--model", bad, "--method", "magnitude", "--sparsity", "0.5", "--out", out]
    if command == "recover":
        return ["recover", "--pruned", bad, "--subset", str(_corpus(tmp_path)), "--out", out]
    return _run_argv(tiny_overrides(tmp_path, good, bad), tmp_path, out)


def _run_argv(overrides, tmp_path, out):
    config = tmp_path / "run.yaml"
    config.write_text("corpus: {path: unused.jsonl}\nmodels: {pruned: unused}\n")
    return ["run", str(config), "--out", str(out), *(item for override in overrides for item in ("--set", override))]


@pytest.mark.parametrize(
    "command", ["select --pruned", "select --original", "eval", "prune", "recover", "run --set models.pruned"]
)
def test_an_unreadable_checkpoint_is_one_line_naming_the_file_before_anything_is_written(
    tiny_model_dir, truncated_model_dir, tmp_path, capsys, monkeypatch, command
):
    monkeypatch.setattr("paser.pipelines.engines.load_model", lambda *args: pytest.fail("loaded a model"))
    out = tmp_path / "out"
    argv = _argv(command, str(tiny_model_dir), str(truncated_model_dir), tmp_path, str(out))
    assert main(argv) == 2
    error = _one_line_refusal(capsys)
    assert error.startswith(f"paser {command.split()[0]}: error: {truncated_model_dir / 'model.safetensors'}: ")
    assert error.endswith("truncated or corrupt; copy or save the checkpoint again")
    assert not out.exists()


def test_an_unreadable_adapter_is_refused_naming_the_file_before_the_model_loads(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"')
    monkeypatch.setattr("paser.recovery.models.load_model", lambda *args, **kwargs: pytest.fail("loaded a model"))
    argv = ["eval", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--tasks", "wikitext2"]
    assert main([*argv, "--data-dir", str(_wikitext(tmp_path))]) == 2
    assert _one_line_refusal(capsys).startswith(
        f"paser eval: error: {adapter / 'adapter_config.json'}: not valid JSON ("
    )


def test_a_run_with_a_missing_corpus_is_refused_before_its_folder_is_made(
    tiny_model_dir, perturbed_model_dir, tmp_path, capsys
):
    overrides = [*tiny_overrides(tmp_path, tiny_model_dir, perturbed_model_dir), "corpus.path=absent.jsonl"]
    out = tmp_path / "run"
    assert main(_run_argv(overrides, tmp_path, out)) == 2
    assert _one_line_refusal(capsys) == "paser run: error: absent.jsonl: no such file or directory"
    assert not out.exists()


@pytest.mark.parametrize("existed", [False, True])
def test_a_refusal_after_the_folder_is_made_leaves_it_as_it_was_found(
    tiny_model_dir, perturbed_model_dir, tmp_path, capsys, existed
):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"instruction": "Say 1.", "output": "1."}\n{"instruction": "Say 2.", "output"\n')
    out = tmp_path / "parent" / "out"
    if existed:
        out.mkdir(parents=True)
        (out / "notes.txt").write_text("mine")
    argv = ["select", "--original", str(tiny_model_dir), "--pruned", str(perturbed_model_dir), *QUIET, "--corpus"]
    assert main([*argv, str(corpus), "--out", str(out)]) == 2
    assert _one_line_refusal(capsys).startswith(f"paser select: error: {corpus}:2: invalid JSON (")
    if existed:
        assert sorted(os.listdir(out)) == ["notes.txt"]
    else:
        assert not (tmp_path / "parent").exists()


def test_a_corpus_of_identical_rows_is_refused_saying_that_the_others_were_duplicates(
    tiny_model_dir, perturbed_model_dir, tmp_path, capsys
):
    corpus = _corpus(tmp_path, [{"instruction": "Say hi.", "output": "Hi."}] * 300)
    out = tmp_path / "out"
    argv = ["select", "--original", str(tiny_model_dir), "--pruned", str(perturbed_model_dir), *QUIET, "--corpus"]
    assert main([*argv, str(corpus), "--out", str(out)]) == 2
    assert _one_line_refusal(capsys) == (
        f"paser select: error: clustering needs at least 3 rows; {corpus} has 1 valid of 300 rows read "
        "(skipped: duplicate 299)"
    )
    assert not out.exists()
