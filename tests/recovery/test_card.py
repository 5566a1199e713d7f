"""The recovered model's card (recovery/card.py), from a recorded run without training."""

import json

import yaml

from paser.recovery.card import model_card
from paser.recovery.flops import recovery_compute

RECORD = {
    "objective": "sft",
    "original": {"name": "smollm2"},
    "rows": {"read": 12, "used": 11},
    "hyperparameters": {"objective": "sft", "learning_rate_effective": 2e-4, "epochs": 1, "lora_r": 8, "seed": 0},
    "training": {"steps": 3, "first_loss": 2.5, "last_loss": 2.1, "trainable_parameters": 4096},
    "compute": recovery_compute({"trained": 1200}, base_parameters=100_000, lora_parameters=4096),
    "dtype": "float32",
    "device": "cpu",
    "sparsity": {
        "masked": True,
        "reason": "unstructured sparsity",
        "total_before": 0.5,
        "total_after_merge": 0.0,
        "total_after_remask": 0.5,
    },
}


def test_card_names_the_pruning_the_subset_card_and_the_sparsity_kept(tmp_path):
    pruned = tmp_path / "wanda-50"
    pruned.mkdir()
    pruning = {"model": "smollm2", "method": "wanda", "target": {"label": "50%"}, "total_sparsity": 0.5}
    (pruned / "pruning.json").write_text(json.dumps(pruning))
    (tmp_path / "sel" / "dataset").mkdir(parents=True)
    (tmp_path / "sel" / "dataset" / "README.md").write_text("---\n---\n")
    card = model_card(RECORD, str(pruned), tmp_path / "sel" / "selection.jsonl")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["base_model"] == str(pruned)
    assert "`wanda` 50%, total sparsity 50.00%" in card
    assert str(tmp_path / "sel" / "dataset" / "README.md") in card
    assert "| lora_r | 8 |" in card
    assert "50.00% in these weights" in card
    # 4·N·P_base + 6·N·P_lora = 4·1200·100000 + 6·1200·4096
    assert "| tokens trained (real, no padding) | 1,200 |" in card and "| 5.09e+08 FLOPs |" in card


def test_card_of_a_hub_model_without_a_pruning_record_says_so(tmp_path):
    card = model_card({**RECORD, "original": None}, "someone/pruned", tmp_path / "rows.jsonl")
    assert "no pruning.json" in card and "original model: not recorded" in card
    assert "none beside the subset" in card
