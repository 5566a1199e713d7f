"""Experiment tracking (recovery/tracking.py): `report_to` reaches the TRL trainer, `paser run` adds each
combination's evaluation metrics to the same run, W&B stays offline without a network, a missing tracker is refused."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from paser.pipelines.cli import main
from paser.pipelines.run import run
from paser.recovery import tracking
from paser.recovery.config import TrainConfig
from paser.recovery.tracking import log_eval_metrics, tracker_names, tracking_environment
from paser.recovery.train import recover
from tests.pipelines.test_run import tiny_config
from tests.recovery.tiny_training import fast_config


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files of `log_dir`, by tag: (step, value) in logging order."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _texts(log_dir: Path) -> dict[str, str]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: events.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}


def test_no_tracker_is_none_or_an_empty_list():
    assert tracker_names("none") == [] and tracker_names([]) == [] and tracker_names(["none"]) == []
    assert tracker_names(["tensorboard"]) == ["tensorboard"]


def test_an_unknown_tracker_is_refused_listing_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown report_to tracker 'mlflow'; known: tensorboard, wandb, trackio, none"
    ):
        TrainConfig(report_to="mlflow")


def _without_package(monkeypatch, package: str) -> None:
    monkeypatch.delitem(sys.modules, package, raising=False)
    find_spec = tracking.importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec", lambda name, *args: None if name == package else find_spec(name, *args)
    )


def test_a_tracker_whose_package_is_missing_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    _without_package(monkeypatch, "wandb")
    argv = ["recover", "--pruned", "p", "--subset", "s.jsonl", "--out", str(tmp_path), "--report-to", "wandb"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "paser recover: error: report_to 'wandb' needs the wandb package, which is not installed: pip install wandb"
    )


def test_recover_reports_the_training_loss_to_tensorboard_under_the_folder_name(pruned_dir, subset_file, tmp_path):
    out = tmp_path / "sft-run"
    recover(str(pruned_dir), subset_file, out, fast_config(report_to="tensorboard"))
    scalars = _scalars(out / "logs")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx([entry["loss"] for entry in log[:2]])
    assert json.loads(_texts(out / "logs")["args/text_summary"])["run_name"] == "sft-run"
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_paser_run_logs_the_training_loss_and_the_eval_metrics_of_a_combination(
    tmp_path, tiny_model_dir, perturbed_model_dir
):
    extra = ["selection.strategies=[random]", "recovery.report_to=tensorboard"]
    config = tiny_config(tmp_path, tiny_model_dir, perturbed_model_dir, extra, budgets=[10])
    runner = run(config, tmp_path / "run")
    combo = runner.dir / "combos" / "random-b10-s0"
    scalars = _scalars(combo / "recover" / "logs")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]
    metrics = json.loads((combo / "eval" / "metrics.json").read_text())
    assert scalars["eval/wikitext2_ppl"] == [(2, pytest.approx(metrics["tasks"]["wikitext2"]["metrics"]["ppl"]))]
    assert scalars["eval/heldout_nll"] == [(2, pytest.approx(metrics["heldout"]["nll"]))]
    assert json.loads(_texts(combo / "recover" / "logs")["args/text_summary"])["run_name"] == "random-b10-s0"
    run(config, tmp_path / "run")  # every stage cached: nothing is logged twice
    assert len(_scalars(combo / "recover" / "logs")["eval/heldout_nll"]) == 1


def _fake_wandb(monkeypatch) -> list[tuple[str, dict]]:
    calls: list[tuple[str, dict]] = []
    module = types.ModuleType("wandb")

    class Run:
        def log(self, data):
            calls.append(("log", data))

        def finish(self):
            calls.append(("finish", {}))

    def init(**settings):
        calls.append(("init", {**settings, "mode": os.environ.get("WANDB_MODE")}))
        return Run()

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_wandb_logs_offline_when_the_hub_is_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    _fake_wandb(monkeypatch)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with tracking_environment("wandb", tmp_path / "logs"):
        assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DIR"] == str(tmp_path / "logs")
    assert "WANDB_MODE" not in os.environ and "WANDB_DIR" not in os.environ


def test_wandb_logs_offline_when_its_server_cannot_be_reached_unless_told_otherwise(monkeypatch, tmp_path):
    from huggingface_hub import constants

    _fake_wandb(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("paser.recovery.models.hub_reachable", lambda endpoint: False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with tracking_environment(["wandb"], tmp_path / "logs"):
        assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    with tracking_environment(["wandb"], tmp_path / "logs"):
        assert os.environ["WANDB_MODE"] == "online"


def test_eval_metrics_join_the_wandb_run_of_the_training(monkeypatch, tmp_path):
    from huggingface_hub import constants

    calls = _fake_wandb(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    recover_dir = tmp_path / "recover"
    recover_dir.mkdir()
    (recover_dir / "recovery.json").write_text(json.dumps({"training": {"steps": 7}}))
    with tracking_environment("wandb", tracking.logging_dir(recover_dir)):
        training_run = os.environ["WANDB_RUN_ID"]
    assert log_eval_metrics("wandb", recover_dir, "paser-b0.1-s0", {"heldout_nll": 1.5})
    assert calls[0] == (
        "init",
        {"project": "paser", "name": "paser-b0.1-s0", "id": training_run, "resume": "allow", "mode": "offline"},
    )
    assert calls[1:] == [("log", {"eval/heldout_nll": 1.5, "train/global_step": 7}), ("finish", {})]
    assert not log_eval_metrics("wandb", recover_dir, "paser-b0.1-s0", {"heldout_nll": 1.5})
    assert len(calls) == 3


def test_paser_run_takes_report_to_as_the_recovery_key(monkeypatch, tmp_path):
    seen = []

    def stop_after_loading(config, out):
        seen.append(config)
        raise RuntimeError("stopped before running")

    monkeypatch.setattr("paser.pipelines.run.run", stop_after_loading)
    assert main(["run", "--out", str(tmp_path), "--report-to", "tensorboard"]) == 2
    assert seen[0].recovery.report_to == ["tensorboard"]
