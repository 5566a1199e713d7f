import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from paser.recovery.models import load_model
from paser.recovery.prune import nm_prune_mask, prunable_linears, prune_checkpoint, prune_model, save_pruned
from paser.recovery.pruners import PruneTarget, get_pruner, known_methods, needs_calibration, register_pruner

WEIGHT_METHODS = ["magnitude", "wanda", "sparsegpt"]


@pytest.fixture
def calibration(tiny_tokenizer):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(10, len(tiny_tokenizer), (4, 16), generator=generator)


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_every_weight_method_gives_exact_sparsity_per_layer(tiny_model, calibration, method):
    record = prune_model(tiny_model, method, PruneTarget(sparsity=0.5), calibration)
    for name, layer in prunable_linears(tiny_model).items():
        assert int((layer.weight == 0).sum()) == layer.weight.numel() // 2, name
        assert record["per_layer_sparsity"][name] == 0.5
    assert record["total_sparsity"] == 0.5


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_every_weight_method_gives_a_valid_2_of_4_pattern_in_every_group(tiny_model, calibration, method):
    prune_model(tiny_model, method, PruneTarget.from_args(pattern="2:4"), calibration)
    for layer in prunable_linears(tiny_model).values():
        nonzero_per_group = (layer.weight != 0).reshape(layer.out_features, -1, 4).sum(dim=-1)
        assert torch.equal(nonzero_per_group, torch.full_like(nonzero_per_group, 2))


def test_magnitude_prune_keeps_the_largest_weights(tiny_model):
    before = {name: layer.weight.detach().clone() for name, layer in prunable_linears(tiny_model).items()}
    prune_model(tiny_model, "magnitude", PruneTarget(sparsity=0.3))
    for name, layer in prunable_linears(tiny_model).items():
        kept = before[name][layer.weight != 0].abs()
        dropped = before[name][layer.weight == 0].abs()
        assert kept.min() >= dropped.max()


def test_nm_mask_prunes_the_smallest_m_minus_n_of_each_group():
    metric = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 0.1, 0.9, 0.7]])
    mask = nm_prune_mask(metric, (1, 4))
    assert mask.tolist() == [[False, True, True, True, True, True, False, True]]


def test_embeddings_and_head_are_not_pruned(tiny_model):
    head = tiny_model.get_output_embeddings().weight.detach().clone()
    embeddings = tiny_model.get_input_embeddings().weight.detach().clone()
    prune_model(tiny_model, "magnitude", PruneTarget(sparsity=0.5))
    assert torch.equal(tiny_model.get_output_embeddings().weight, head)
    assert torch.equal(tiny_model.get_input_embeddings().weight, embeddings)
    assert tiny_model.get_output_embeddings() not in prunable_linears(tiny_model).values()


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_pruned_model_reloads_with_same_logits(tiny_model_dir, tmp_path, calibration, method, single_torch_thread):
    model, tokenizer = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    record = prune_model(model, method, PruneTarget(sparsity=0.5), calibration)
    save_pruned(model, tokenizer, tmp_path / "pruned", record)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
    assert json.loads((tmp_path / "pruned" / "pruning.json").read_text())["method"] == method


def test_record_holds_target_options_calibration_shape_and_time(tiny_model, calibration):
    record = prune_model(tiny_model, "sparsegpt", PruneTarget(sparsity=0.5), calibration, percdamp=0.05)
    assert record["method"] == "sparsegpt"
    assert record["target"] == {"sparsity": 0.5, "fraction_pruned": 0.5, "label": "50%"}
    assert record["options"] == {"blocksize": 128, "percdamp": 0.05, "batch_size": 8, "device": None}
    assert record["calibration_shape"] == [4, 16]
    assert record["seconds"] >= 0


def test_prune_checkpoint_records_model_and_calibration_source(tiny_model_dir, tmp_path, calibration):
    source = {"source": "alpaca", "n_samples": 4, "seqlen": 16}
    record = prune_checkpoint(
        str(tiny_model_dir), "wanda", PruneTarget(sparsity=0.5), tmp_path / "out", calibration, source
    )
    saved = json.loads((tmp_path / "out" / "pruning.json").read_text())
    assert saved["model"] == str(tiny_model_dir) and saved["calibration"] == source
    assert saved["total_sparsity"] == record["total_sparsity"] == 0.5


def test_method_that_needs_calibration_refuses_to_run_without_it(tiny_model):
    assert needs_calibration("wanda") and needs_calibration("sparsegpt") and not needs_calibration("magnitude")
    with pytest.raises(ValueError, match="method 'wanda' needs calibration token ids"):
        prune_model(tiny_model, "wanda", PruneTarget(sparsity=0.5))


def test_pattern_that_does_not_divide_a_layer_names_the_layer_and_width(tiny_model):
    with pytest.raises(ValueError, match=r"pattern 2:5 does not fit layer model\.layers\.0\.self_attn\.q_proj: .* 48"):
        prune_model(tiny_model, "magnitude", PruneTarget.from_args(pattern="2:5"))


def test_weight_method_refuses_a_drop_target(tiny_model):
    with pytest.raises(ValueError, match="method 'magnitude' prunes weights"):
        prune_model(tiny_model, "magnitude", PruneTarget(drop=0.25))


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        get_pruner("lottery")
    assert str(error.value) == f"unknown pruning method 'lottery'; known: {', '.join(known_methods())}"
    assert {"layer_drop", "magnitude", "sparsegpt", "wanda", "width"} <= set(known_methods())
    with pytest.raises(ValueError, match=r"did you mean wanda\?$"):
        get_pruner("wnada")


def test_the_built_in_methods_and_what_they_need_are_known_without_importing_them():
    code = (
        "import sys; from paser.recovery.pruners import known_methods, needs_calibration; names = known_methods(); "
        "print(names, [needs_calibration(name) for name in names], 'torch' in sys.modules)"
    )
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert (
        listed == "['layer_drop', 'magnitude', 'sparsegpt', 'wanda', 'width'] [True, False, True, True, True] False\n"
    )


def test_a_pruner_registered_twice_is_refused():
    with pytest.raises(ValueError, match="pruning method 'wanda' is already registered"):
        register_pruner("wanda")(lambda model, target, calibration: {})


def test_target_parses_an_n_m_pattern_and_describes_itself():
    target = PruneTarget.from_args(pattern="2:4")
    assert target.pattern == (2, 4) and target.describe() == "2:4"
    assert target.fraction_pruned == 0.5 and target.density == 0.5
    assert target.to_dict() == {"pattern": "2:4", "fraction_pruned": 0.5, "label": "2:4"}
    assert PruneTarget.from_args(sparsity=0.125).describe() == "12.5%"
    assert PruneTarget.from_args(drop=0.25).describe() == "drop 25%"


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.1, 1.5])
def test_sparsity_outside_open_interval_is_refused(sparsity):
    with pytest.raises(ValueError, match=r"sparsity must be in \(0, 1\)"):
        PruneTarget.from_args(sparsity=sparsity)


@pytest.mark.parametrize("drop", [0.0, 1.0])
def test_drop_outside_open_interval_is_refused(drop):
    with pytest.raises(ValueError, match=r"drop must be in \(0, 1\)"):
        PruneTarget.from_args(drop=drop)


@pytest.mark.parametrize("pattern", ["4:4", "0:4", "5:4"])
def test_pattern_needs_n_below_m(pattern):
    with pytest.raises(ValueError, match="N:M pattern needs 0 < N < M"):
        PruneTarget.from_args(pattern=pattern)


@pytest.mark.parametrize("pattern", ["2-4", "2:4:8", "a:4", ""])
def test_malformed_pattern_is_refused(pattern):
    with pytest.raises(ValueError, match="pattern must look like N:M"):
        PruneTarget.from_args(pattern=pattern)


@pytest.mark.parametrize("arguments", [{}, {"sparsity": 0.5, "pattern": "2:4"}, {"sparsity": 0.5, "drop": 0.25}])
def test_target_needs_exactly_one_of_sparsity_pattern_drop(arguments):
    with pytest.raises(ValueError, match="give exactly one of sparsity, pattern, drop or ratio"):
        PruneTarget.from_args(**arguments)
