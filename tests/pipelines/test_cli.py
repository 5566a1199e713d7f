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


@pytest.mark.slow
def test_demo_selects_ten_percent_of_the_demo_corpus(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "paser: 30 of 300 scored rows" in printed
    assert "adjusted Rand index" in printed
    assert len((tmp_path / "demo" / "selection" / "selection.jsonl").read_text().splitlines()) == 30
