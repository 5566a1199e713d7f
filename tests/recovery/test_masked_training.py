"""Masked full fine-tuning (`adapter: full`, recovery/masked_training.py): every weight trains, the pruned ones stay
exactly zero through every step, on the tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from paser.recovery.config import FULL_FINE_TUNING_LEARNING_RATE, TrainConfig
from paser.recovery.masked_training import KeepPrunedZeros
from paser.recovery.models import load_model, prunable_linears
from paser.recovery.prune import prune_model, save_pruned
from paser.recovery.pruners import PruneTarget
from paser.recovery.sparsity import capture_mask
from paser.recovery.train import format_summary, recover
from tests.recovery.tiny_training import fast_config


@pytest.fixture(scope="module")
def two_four_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model magnitude-pruned to 2:4, saved with pruning.json."""
    model, tokenizer = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    record = prune_model(model, "magnitude", PruneTarget(pattern=(2, 4)))
    return save_pruned(model, tokenizer, tmp_path_factory.mktemp("pruned") / "magnitude-2-4", record)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(str(model_dir), dtype="fp32", device="cpu")
    return {name: layer.weight.detach().clone() for name, layer in prunable_linears(model).items()}


@pytest.mark.parametrize("pruned", ["pruned_dir", "two_four_dir"])
def test_full_fine_tuning_keeps_every_pruned_zero_and_moves_the_kept_weights(pruned, request, subset_file, tmp_path):
    pruned_dir = request.getfixturevalue(pruned)
    out = tmp_path / "full"
    config = fast_config(adapter="full", learning_rate=1e-2, max_steps=4, gradient_checkpointing=True)
    result = recover(str(pruned_dir), subset_file, out, config)
    before, after = _weights(pruned_dir), _weights(out / "merged")
    for name, weight in before.items():
        zero = weight == 0
        assert torch.all(after[name][zero] == 0), name
        assert (after[name][~zero] != weight[~zero]).float().mean() > 0.9, name
    sparsity = json.loads((out / "sparsity.json").read_text())
    assert sparsity["remasked"] is True
    assert sparsity["weights_rezeroed"]["total"] == 0  # held at zero through training, not restored after it
    assert sparsity["total"]["after_merge"] == sparsity["total"]["before"]
    assert not (out / "adapter").exists() and "adapter" not in result.paths
    assert result.record["training"]["trainable_parameters"] == result.record["pruned"]["parameters"]
    assert result.record["hyperparameters"]["adapter"] == "full"


def test_full_fine_tuning_counts_six_flops_per_parameter_per_token(pruned_dir, subset_file, tmp_path):
    result = recover(str(pruned_dir), subset_file, tmp_path / "full", fast_config(adapter="full", max_steps=2))
    compute = result.record["compute"]
    assert compute["flops"]["train"] == 6 * compute["tokens"]["trained"] * result.record["pruned"]["parameters"]
    assert compute["parameters"]["lora"] is None


def test_the_card_and_the_summary_say_every_weight_was_trained(pruned_dir, subset_file, tmp_path):
    result = recover(str(pruned_dir), subset_file, tmp_path / "full", fast_config(adapter="full", max_steps=1))
    card = (tmp_path / "full" / "merged" / "README.md").read_text()
    assert "masked full fine-tuning (every weight trained" in card and "full-fine-tuning" in card
    assert "held at zero through every training step" in card and "| adapter | full |" in card
    assert f"| learning_rate_effective | {FULL_FINE_TUNING_LEARNING_RATE} |" in card
    assert "masked full fine-tuning, no adapter" in format_summary(result)


@pytest.mark.parametrize("objective", ["distill", "on_policy"])
def test_distillation_objectives_train_every_weight_keeping_the_zeros(
    objective, pruned_dir, tiny_model_dir, subset_file, tmp_path
):
    config = fast_config(objective=objective, adapter="full", learning_rate=1e-2, max_steps=2)
    result = recover(str(pruned_dir), subset_file, tmp_path / objective, config, original=str(tiny_model_dir))
    before, after = _weights(pruned_dir), _weights(tmp_path / objective / "merged")
    assert all(torch.all(after[name][weight == 0] == 0) for name, weight in before.items())
    assert any(not torch.equal(after[name], weight) for name, weight in before.items())
    assert result.record["sparsity"]["masked"] is True


def test_a_layer_dropped_model_trains_every_weight_with_no_mask(tiny_model_dir, subset_file, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    record = prune_model(model, "layer_drop", PruneTarget(drop=0.5), torch.randint(5, len(tokenizer), (2, 16)))
    dropped = save_pruned(model, tokenizer, tmp_path / "dropped", record)
    result = recover(str(dropped), subset_file, tmp_path / "out", fast_config(adapter="full", learning_rate=1e-2))
    assert result.record["sparsity"]["masked"] is False
    before, after = _weights(dropped), _weights(tmp_path / "out" / "merged")
    assert all(not torch.equal(after[name], weight) for name, weight in before.items())


def test_the_pruned_entries_get_no_gradient_and_stay_zero_after_a_step(pruned_dir):
    model, _ = load_model(str(pruned_dir), dtype="fp32", device="cpu")
    mask = capture_mask(model)
    callback = KeepPrunedZeros(mask)
    callback.on_train_begin(None, None, None, model=model)
    model(input_ids=torch.randint(5, 100, (2, 12)), labels=torch.randint(5, 100, (2, 12))).loss.backward()
    layers = prunable_linears(model)
    assert all(torch.all(layers[name].weight.grad[~keep] == 0) for name, keep in mask.items())
    assert any(torch.any(layers[name].weight.grad[keep] != 0) for name, keep in mask.items())
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.add_(1.0)  # an update that would move every weight
    callback.on_optimizer_step(None, None, None)
    assert all(torch.all(layers[name].weight[~keep] == 0) for name, keep in mask.items())
    callback.on_train_end(None, None, None)
    assert callback.hooks == []


def test_full_fine_tuning_has_its_own_default_learning_rate_and_refuses_dpo():
    assert TrainConfig(adapter="full").lr == FULL_FINE_TUNING_LEARNING_RATE < TrainConfig().lr
    assert TrainConfig(adapter="full", learning_rate=1e-4).lr == 1e-4
    with pytest.raises(ValueError, match="trains a LoRA adapter only"):
        TrainConfig(objective="dpo", adapter="full")
    with pytest.raises(ValueError, match="adapter must be one of lora, full"):
        TrainConfig(adapter="qlora")
