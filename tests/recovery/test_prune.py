import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from recovery.models import load_model
from recovery.prune import get_pruner, prunable_linears, prune_model, save_pruned


def test_magnitude_prune_gives_exact_sparsity_per_layer(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    record = prune_model(model, "magnitude", 0.5)
    for name, layer in prunable_linears(model).items():
        assert int((layer.weight == 0).sum()) == round(0.5 * layer.weight.numel()), name
    assert record["total_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_magnitude_prune_keeps_the_largest_weights(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    before = {name: layer.weight.detach().clone() for name, layer in prunable_linears(model).items()}
    prune_model(model, "magnitude", 0.3)
    for name, layer in prunable_linears(model).items():
        kept = before[name][layer.weight != 0].abs()
        dropped = before[name][layer.weight == 0].abs()
        assert kept.min() >= dropped.max()


def test_embeddings_and_head_are_not_pruned(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    head = model.get_output_embeddings().weight.detach().clone()
    prune_model(model, "magnitude", 0.5)
    assert torch.equal(model.get_output_embeddings().weight, head)
    assert model.get_output_embeddings() not in prunable_linears(model).values()


def test_pruned_model_reloads_with_same_logits(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    record = prune_model(model, "magnitude", 0.5)
    save_pruned(model, tokenizer, tmp_path / "pruned", record)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
    assert json.loads((tmp_path / "pruned" / "pruning.json").read_text())["method"] == "magnitude"


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.1, 1.5])
def test_sparsity_outside_open_interval_is_refused(tiny_model_dir, sparsity):
    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    with pytest.raises(ValueError, match=r"sparsity must be in \(0, 1\)"):
        prune_model(model, "magnitude", sparsity)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown pruning method 'lottery'; known: magnitude"):
        get_pruner("lottery")
