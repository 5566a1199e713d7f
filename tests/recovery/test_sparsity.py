import json
import math

import pytest
import torch

from paser.recovery.models import prunable_linears
from paser.recovery.prune import layer_sparsity, prune_model
from paser.recovery.pruners import PruneTarget
from paser.recovery.sparsity import (
    apply_mask,
    capture_mask,
    check_zeros,
    layer_sizes,
    mask_policy,
    remask_ppl_effect,
    sparsity_report,
)


@pytest.fixture
def pruned_model(tiny_model):
    prune_model(tiny_model, "magnitude", PruneTarget(sparsity=0.5))
    return tiny_model


@torch.no_grad()
def add_dense_update(model, seed=0):
    """Add a dense perturbation to every prunable weight, as a merged LoRA update W + BA would."""
    generator = torch.Generator().manual_seed(seed)
    for layer in prunable_linears(model).values():
        layer.weight.add_(torch.randn(layer.weight.shape, generator=generator) * 0.01)


def zero_positions(model):
    return {name: layer.weight.detach() == 0 for name, layer in prunable_linears(model).items()}


def write_record(directory, target):
    (directory / "pruning.json").write_text(json.dumps({"method": "magnitude", "target": target.to_dict()}))
    return directory


def test_mask_of_a_half_pruned_model_keeps_half_of_every_layer(pruned_model):
    mask = capture_mask(pruned_model)
    assert set(mask) == set(prunable_linears(pruned_model))
    for name, keep in mask.items():
        assert keep.dtype == torch.bool and keep.device.type == "cpu"
        assert int((~keep).sum()) == keep.numel() // 2, name


def test_remask_restores_exactly_the_pruned_zeros_after_a_dense_update(pruned_model):
    mask = capture_mask(pruned_model)
    zeros_before, sparsity_before = zero_positions(pruned_model), layer_sparsity(pruned_model)
    add_dense_update(pruned_model)
    assert all(fraction == 0.0 for fraction in layer_sparsity(pruned_model).values())
    apply_mask(pruned_model, mask)
    for name, zeros in zero_positions(pruned_model).items():
        assert torch.equal(zeros, zeros_before[name]), name
    assert layer_sparsity(pruned_model) == sparsity_before


def test_remask_keeps_a_2_of_4_pattern_in_every_group(tiny_model):
    prune_model(tiny_model, "magnitude", PruneTarget(pattern=(2, 4)))
    mask = capture_mask(tiny_model)
    add_dense_update(tiny_model)
    apply_mask(tiny_model, mask)
    for layer in prunable_linears(tiny_model).values():
        nonzero_per_group = (layer.weight != 0).reshape(layer.out_features, -1, 4).sum(dim=-1)
        assert torch.equal(nonzero_per_group, torch.full_like(nonzero_per_group, 2))


def test_apply_mask_counts_the_pruned_weights_that_had_become_nonzero(pruned_model):
    mask = capture_mask(pruned_model)
    name, layer = next(iter(prunable_linears(pruned_model).items()))
    pruned_positions = (~mask[name]).nonzero()[:7]
    with torch.no_grad():
        layer.weight[pruned_positions[:, 0], pruned_positions[:, 1]] = 1.0
    changed = apply_mask(pruned_model, mask)
    assert changed[name] == 7
    assert sum(changed.values()) == 7


def test_apply_mask_counts_every_pruned_weight_after_a_dense_update(pruned_model):
    mask = capture_mask(pruned_model)
    add_dense_update(pruned_model)
    expected = {
        name: int((layer.weight[~mask[name]] != 0).sum()) for name, layer in prunable_linears(pruned_model).items()
    }
    assert apply_mask(pruned_model, mask) == expected


def test_apply_mask_refuses_a_layer_the_model_lacks(pruned_model):
    mask = capture_mask(pruned_model)
    mask["model.layers.9.mlp.up_proj"] = next(iter(mask.values()))
    with pytest.raises(ValueError, match="model.layers.9.mlp.up_proj"):
        apply_mask(pruned_model, mask)


def test_apply_mask_refuses_a_model_layer_the_mask_lacks(pruned_model):
    mask = capture_mask(pruned_model)
    name = next(iter(mask))
    del mask[name]
    with pytest.raises(ValueError, match=name):
        apply_mask(pruned_model, mask)


def test_apply_mask_refuses_a_shape_mismatch_and_leaves_the_model_untouched(pruned_model):
    mask = capture_mask(pruned_model)
    add_dense_update(pruned_model)
    weights = {name: layer.weight.detach().clone() for name, layer in prunable_linears(pruned_model).items()}
    name = list(mask)[-1]
    mask[name] = mask[name][:, :-1]
    with pytest.raises(ValueError, match=f"{name}.*shape"):
        apply_mask(pruned_model, mask)
    for layer_name, layer in prunable_linears(pruned_model).items():
        assert torch.equal(layer.weight, weights[layer_name])


def test_policy_masks_a_model_whose_record_gives_a_sparsity(pruned_model, tmp_path):
    remask, reason = mask_policy(write_record(tmp_path, PruneTarget(sparsity=0.5)), pruned_model)
    assert remask
    assert reason == "pruning.json: magnitude to 50%: re-masked after merge"


def test_policy_masks_a_model_whose_record_gives_a_pattern(tiny_model, tmp_path):
    prune_model(tiny_model, "magnitude", PruneTarget(pattern=(2, 4)))
    remask, reason = mask_policy(write_record(tmp_path, PruneTarget(pattern=(2, 4))), tiny_model)
    assert remask
    assert "2:4" in reason


def test_policy_merges_a_layer_dropped_model_as_is(tiny_model, tmp_path):
    remask, reason = mask_policy(write_record(tmp_path, PruneTarget(drop=0.5)), tiny_model)
    assert not remask
    assert reason == "layer-dropped: dense, merged as is"


def test_policy_without_a_record_masks_a_measured_sparse_model(pruned_model, tmp_path):
    remask, reason = mask_policy(tmp_path, pruned_model)
    assert remask
    assert reason.startswith("no pruning.json; 50.0% zeros measured")


def test_policy_without_a_record_merges_a_measured_dense_model_as_is(tiny_model):
    remask, reason = mask_policy(None, tiny_model)
    assert not remask
    assert reason.startswith("no pruning.json; 0.0% zeros measured")


def test_policy_refuses_a_corrupt_record_naming_the_file(pruned_model, tmp_path):
    (tmp_path / "pruning.json").write_text("{not json")
    with pytest.raises(ValueError, match="pruning.json"):
        mask_policy(tmp_path, pruned_model)


def test_policy_refuses_a_record_without_a_recognisable_target(pruned_model, tmp_path):
    (tmp_path / "pruning.json").write_text(json.dumps({"method": "magnitude", "target": {"label": "50%"}}))
    with pytest.raises(ValueError, match="pruning.json.*target"):
        mask_policy(tmp_path, pruned_model)


def test_policy_refuses_a_sparse_record_beside_a_dense_model(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="pruning.json.*zeros"):
        mask_policy(write_record(tmp_path, PruneTarget(sparsity=0.5)), tiny_model)


def test_check_zeros_accepts_a_remasked_model(pruned_model):
    mask = capture_mask(pruned_model)
    add_dense_update(pruned_model)
    apply_mask(pruned_model, mask)
    check_zeros(pruned_model, mask)


def test_check_zeros_names_the_layer_with_a_nonzero_pruned_weight(pruned_model):
    mask = capture_mask(pruned_model)
    name, layer = list(prunable_linears(pruned_model).items())[3]
    row, column = (~mask[name]).nonzero()[0].tolist()
    with torch.no_grad():
        layer.weight[row, column] = 0.5
    with pytest.raises(ValueError, match=f"{name}.*1 positions"):
        check_zeros(pruned_model, mask)


def test_check_zeros_refuses_a_zeroed_kept_weight_only_when_exact(pruned_model):
    mask = capture_mask(pruned_model)
    name, layer = next(iter(prunable_linears(pruned_model).items()))
    row, column = mask[name].nonzero()[0].tolist()
    with torch.no_grad():
        layer.weight[row, column] = 0.0
    check_zeros(pruned_model, mask, exact=False)
    with pytest.raises(ValueError, match=f"{name}.*1 kept weights zero"):
        check_zeros(pruned_model, mask)


def test_report_weights_totals_by_layer_size():
    sizes = {"small": 100, "large": 300}
    report = sparsity_report(
        {"small": 0.5, "large": 0.5},
        {"small": 0.0, "large": 0.1},
        {"small": 0.5, "large": 0.5},
        sizes=sizes,
        policy_reason="test",
        changed={"small": 50, "large": 120},
        ppl={"skipped": "no text"},
    )
    assert report["total"] == {"weights": 400, "before": 0.5, "after_merge": 0.075, "after_remask": 0.5}
    assert report["layers"]["large"] == {"weights": 300, "before": 0.5, "after_merge": 0.1, "after_remask": 0.5}
    assert report["weights_rezeroed"] == {"total": 170, "per_layer": {"small": 50, "large": 120}}
    assert report["remasked"] and report["policy"] == "test" and report["ppl"] == {"skipped": "no text"}


def test_report_of_a_dense_model_has_no_remask_stage():
    report = sparsity_report(
        {"layer": 0.0}, {"layer": 0.0}, None, sizes={"layer": 10}, policy_reason="dense", changed=None, ppl=None
    )
    assert report["total"]["after_remask"] is None and report["layers"]["layer"]["after_remask"] is None
    assert report["weights_rezeroed"] is None
    assert report["ppl"] == {"skipped": "not re-masked"}


def test_report_refuses_layers_that_differ_between_stages():
    with pytest.raises(ValueError, match=r"after_merge.*missing \['layer'\], extra \['other'\]"):
        sparsity_report(
            {"layer": 0.5}, {"other": 0.0}, None, sizes={"layer": 10}, policy_reason="x", changed=None, ppl=None
        )


def test_report_refuses_a_remasked_model_without_a_ppl_record():
    with pytest.raises(ValueError, match="ppl"):
        sparsity_report(
            {"layer": 0.5},
            {"layer": 0.0},
            {"layer": 0.5},
            sizes={"layer": 10},
            policy_reason="x",
            changed={"layer": 5},
            ppl=None,
        )


def test_report_of_a_real_remask_serialises_to_json(pruned_model):
    mask = capture_mask(pruned_model)
    before = layer_sparsity(pruned_model)
    add_dense_update(pruned_model)
    after_merge = layer_sparsity(pruned_model)
    changed = apply_mask(pruned_model, mask)
    report = sparsity_report(
        before,
        after_merge,
        layer_sparsity(pruned_model),
        sizes=layer_sizes(pruned_model),
        policy_reason="test",
        changed=changed,
        ppl={"skipped": "no text"},
    )
    assert json.loads(json.dumps(report))["total"]["after_remask"] == 0.5
    assert report["weights_rezeroed"]["total"] == report["total"]["weights"] // 2


def test_remask_ppl_effect_gives_finite_perplexities_and_leaves_the_model_remasked(pruned_model, tiny_tokenizer):
    mask = capture_mask(pruned_model)
    add_dense_update(pruned_model)
    text = " ".join(["The cat sat on the mat and it is a kalo of the venta."] * 20)
    record, changed = remask_ppl_effect(
        pruned_model, tiny_tokenizer, mask, text, text_name="demo", seqlen=32, windows=2
    )
    assert record["text"] == "demo" and record["windows"] == 2 and record["seqlen"] == 32
    assert math.isfinite(record["ppl_merged"]) and math.isfinite(record["ppl_remasked"])
    assert record["ppl_merged"] != record["ppl_remasked"]
    assert sum(changed.values()) > 0
    check_zeros(pruned_model, mask)


def test_peft_merge_makes_the_model_dense_and_the_mask_restores_its_zeros(pruned_model):
    from peft import LoraConfig, get_peft_model

    mask = capture_mask(pruned_model)
    zeros_before = zero_positions(pruned_model)
    peft_model = get_peft_model(pruned_model, LoraConfig(r=4, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    merged = peft_model.merge_and_unload()
    assert max(layer_sparsity(merged).values()) < 0.01
    changed = apply_mask(merged, mask)
    assert sum(changed.values()) > 0.99 * sum(int((~keep).sum()) for keep in mask.values())
    for name, zeros in zero_positions(merged).items():
        assert torch.equal(zeros, zeros_before[name]), name
    check_zeros(merged, mask)
