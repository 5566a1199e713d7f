"""`paser run` end to end with a width-pruned model: prune, score, select, LoRA-recover and evaluate."""

import json

import pytest

from paser.pipelines.config import load_config
from paser.pipelines.run import RunConfig, run
from tests.pipelines.test_run import tiny_overrides

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_paser_run_prunes_width_and_recovers_the_narrow_model(tmp_path, tiny_model_dir):
    overrides = [
        override
        for override in tiny_overrides(tmp_path, tiny_model_dir, tiny_model_dir, budgets=[10])
        if not override.startswith("models.pruned=")
    ]
    prune = "{method: width, ratio: 0.5, importance: taylor, calibration: demo, calibration_samples: 4, seqlen: 32}"
    config = load_config(RunConfig, None, [*overrides, f"models.prune={prune}"])
    runner = run(config, tmp_path / "run")

    pruned = json.loads((runner.dir / "pruned" / "config.json").read_text())
    assert (pruned["intermediate_size"], pruned["num_attention_heads"], pruned["num_key_value_heads"]) == (48, 2, 1)
    results = json.loads((runner.dir / "results.json").read_text())
    assert [row["combo"] for row in results["combos"]] == ["paser-b10-s0", "random-b10-s0"]
    assert results["baselines"]["pruned"]["wikitext2_ppl"] != results["baselines"]["original"]["wikitext2_ppl"]
    assert json.loads((runner.dir / "pruned" / "pruning.json").read_text())["options"]["importance"] == "taylor"
    for row in results["combos"]:
        recover = runner.dir / "combos" / row["combo"] / "recover"
        merged = json.loads((recover / "merged" / "config.json").read_text())
        assert (merged["intermediate_size"], merged["num_attention_heads"], merged["head_dim"]) == (48, 2, 12)
        assert json.loads((recover / "sparsity.json").read_text())["policy"] == "width-pruned: dense, merged as is"
        assert row["metrics"]["wikitext2_ppl"] > 0
