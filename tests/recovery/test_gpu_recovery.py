"""Recovery and evaluation on a CUDA device: SFT, DPO and distillation on the tiny pruned model in bf16 (and
on-policy distillation, self-distillation targets and token weighting), so the first real GPU run of a user is not
the first ever.

Each objective trains (the loss falls over repeated steps on a small set), merges, and re-masks to the exact zeros
of the pruned model; `paser eval` then runs on the merged model on the GPU. Marked `gpu` and skipped where no CUDA
device is visible (CI); on a GPU machine: `python -m pytest -m gpu tests/recovery/test_gpu_recovery.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paser.pipelines.cli import main
from paser.recovery.train import recover
from tests.pipelines.test_run import _wikitext_dir
from tests.recovery.tiny_training import fast_config

# PASER_TEST_RECOVERY_DEVICE=cpu runs the same checks on the CPU (in bf16), to check the tests themselves.
DEVICE = os.environ.get("PASER_TEST_RECOVERY_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _on_cuda(**overrides):
    return fast_config(**{"device": DEVICE, "dtype": "bf16", **overrides})


def _zeros(model_dir: Path) -> dict[str, torch.Tensor]:
    weights = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(path))
    return {name: tensor == 0 for name, tensor in weights.items() if name.endswith("proj.weight")}


def _losses(out: Path) -> list[float]:
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [entry["loss"] for entry in log if "loss" in entry]


@pytest.mark.parametrize("objective", ["sft", "dpo", "sft+dpo", "distill"])
def test_each_objective_trains_in_bf16_on_cuda_and_keeps_the_exact_zeros(
    objective, pruned_dir, tiny_model_dir, subset_file, tmp_path
):
    out = tmp_path / objective.replace("+", "_")
    config = _on_cuda(objective=objective, max_steps=12, learning_rate=5e-3)
    original = str(tiny_model_dir) if objective == "distill" else None
    result = recover(str(pruned_dir), subset_file, out, config, original=original)
    losses = _losses(out)
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    # Twelve steps over the same twelve rows: the last steps fit them better than the first.
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert result.record["hyperparameters"].get("dtype", "bf16") in ("bf16", "bfloat16")
    pruned, merged = _zeros(pruned_dir), _zeros(out / "merged")
    assert pruned and all(torch.equal(pruned[name], merged[name]) for name in pruned)
    assert result.record["sparsity"]["total_after_remask"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize(
    "options",
    [
        {"objective": "on_policy", "max_new_tokens": 8},
        {"objective": "sft", "targets": "original", "target_max_new_tokens": 8},
        {"objective": "distill", "token_weighting": "top_fraction"},
    ],
    ids=["on_policy", "self_distilled_targets", "token_weighting"],
)
def test_generation_and_weighting_options_train_in_bf16_on_cuda_and_keep_the_exact_zeros(
    options, pruned_dir, tiny_model_dir, subset_file, tmp_path
):
    if "token_weighting" in options:
        from paser.recovery.models import load_model
        from paser.recovery.train import load_training_rows
        from paser.selection.config import DegradationConfig
        from paser.selection.degradation import score_degradation

        original, tokenizer = load_model(str(tiny_model_dir), dtype="bf16", device=DEVICE)
        pruned, _ = load_model(str(pruned_dir), dtype="bf16", device=DEVICE)
        rows = load_training_rows(subset_file, tokenizer, _on_cuda())
        scoring = DegradationConfig(keep_token_jsd=True, show_progress=False)
        score_degradation(original, pruned, rows.encoded, scoring, shard_dir=tmp_path / "scores")
        options = {**options, "token_jsd": str(tmp_path / "scores")}
    out = tmp_path / "out"
    result = recover(str(pruned_dir), subset_file, out, _on_cuda(max_steps=3, **options), original=str(tiny_model_dir))
    losses = _losses(out)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert result.record["device"].startswith(DEVICE)
    pruned_zeros, merged = _zeros(pruned_dir), _zeros(out / "merged")
    assert pruned_zeros and all(torch.equal(pruned_zeros[name], merged[name]) for name in pruned_zeros)


def test_paser_eval_runs_on_the_merged_model_on_cuda(pruned_dir, subset_file, tmp_path, capsys):
    out = tmp_path / "sft"
    recover(str(pruned_dir), subset_file, out, _on_cuda(max_steps=2))
    data_dir = _wikitext_dir(tmp_path)
    status = main(
        [
            "eval",
            "--model",
            str(out / "merged"),
            "--tasks",
            "wikitext2",
            "--limit",
            "2",
            "--seqlen",
            "32",
            "--device",
            DEVICE,
            "--dtype",
            "bf16",
            "--data-dir",
            str(data_dir),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert status == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["tasks"]["wikitext2"]["metrics"]["ppl"] > 1


def test_masked_full_fine_tuning_trains_fp32_weights_under_bf16_autocast_and_keeps_the_exact_zeros(
    pruned_dir, subset_file, tmp_path
):
    out = tmp_path / "full"
    result = recover(str(pruned_dir), subset_file, out, _on_cuda(adapter="full", max_steps=3, learning_rate=1e-3))
    losses = _losses(out)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert result.record["sparsity"]["masked"] is True and result.record["dtype"] == "bfloat16"
    sparsity = json.loads((out / "sparsity.json").read_text())
    assert sparsity["weights_rezeroed"]["total"] == 0  # the zeros held through every step on the device
    weights = load_file(out / "merged" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.bfloat16}  # saved in the training dtype
    pruned_zeros, merged = _zeros(pruned_dir), _zeros(out / "merged")
    assert pruned_zeros and all(torch.equal(pruned_zeros[name], merged[name]) for name in pruned_zeros)
