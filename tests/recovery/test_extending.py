"""The README's "Extending paser" examples: one file each for a strategy, a pruner and an objective, loaded as
plug-ins, known by name afterwards, and doing what they say."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from paser.pipelines.plugins import load_plugin, load_plugins

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "extending"


@pytest.fixture(autouse=True)
def registries_as_they_were(monkeypatch):
    """What a plug-in registers here is gone after the test: the other tests see the built-in registries."""
    from paser.pipelines import plugins
    from paser.recovery import objectives, pruners
    from paser.selection import strategies

    monkeypatch.setattr(plugins, "_LOADED", {})
    registries = (strategies.STRATEGIES, pruners.PRUNERS, objectives.OBJECTIVES)
    snapshots = [(registry, registry.snapshot()) for registry in registries]
    yield
    for registry, snapshot in snapshots:
        registry.restore(snapshot)


def test_a_strategy_plugin_is_known_by_name_and_ranks_by_cds_per_token():
    from paser.selection.allocate import TokenBudget
    from paser.selection.strategies import SelectionInputs, get_strategy

    load_plugin(str(EXAMPLES / "cds_per_token.py"))
    table = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "cds": [0.4, 0.2, 0.3, 0.1],
            "prompt_tokens": [10, 5, 5, 1],
            "response_tokens": [30, 5, 25, 1],
        }
    )  # CDS per token: a 0.01, b 0.02, c 0.01, d 0.05
    strategy = get_strategy("cds_per_token")
    assert strategy.select(SelectionInputs(table), 3).ids == ["d", "b", "a"]
    assert strategy.select(SelectionInputs(table), TokenBudget(15)).ids == ["d", "b"]


def test_a_pruner_plugin_is_known_by_name_and_prunes_exactly_the_share(tiny_model):
    from paser.recovery.prune import prune_model
    from paser.recovery.pruners import PruneTarget

    load_plugin(str(EXAMPLES / "random_prune.py"))
    record = prune_model(tiny_model, "random_unstructured", PruneTarget(sparsity=0.5), seed=3)
    assert record["method"] == "random_unstructured" and record["options"] == {"seed": 3}
    assert all(value == pytest.approx(0.5, abs=1e-3) for value in record["per_layer_sparsity"].values())


def test_an_objective_plugin_trains_on_the_whole_sequence(pruned_dir, subset_file, tmp_path):
    from paser.recovery.train import recover
    from tests.recovery.tiny_training import fast_config

    load_plugin(str(EXAMPLES / "sft_whole_sequence.py"))
    whole = recover(str(pruned_dir), subset_file, tmp_path / "whole", fast_config(objective="sft_whole_sequence"))
    response_only = recover(str(pruned_dir), subset_file, tmp_path / "sft", fast_config(objective="sft"))
    assert whole.record["objective"] == "sft_whole_sequence"
    # Same rows, same model: the loss over every token differs from the loss over the response tokens.
    assert whole.record["training"]["first_loss"] != pytest.approx(response_only.record["training"]["first_loss"])
    assert (tmp_path / "whole" / "merged" / "config.json").exists()


def test_a_plugin_is_imported_once_and_a_bad_one_is_refused_naming_it(tmp_path):
    path = str(EXAMPLES / "cds_per_token.py")
    assert load_plugins([path, path])[0] is load_plugin(path)
    with pytest.raises(ValueError, match="no such file"):
        load_plugin(str(tmp_path / "missing.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.py failed to import: RuntimeError: boom"):
        load_plugin(str(broken))
    with pytest.raises(ValueError, match="no_such_module failed to import: ModuleNotFoundError"):
        load_plugin("no_such_module")


def test_the_cli_loads_a_plugin_before_it_checks_names(tiny_model_dir, tmp_path, capsys):
    from paser.pipelines.cli import main

    out = tmp_path / "pruned"
    plugin = str(EXAMPLES / "random_prune.py")
    argv = ["prune", "--model", str(tiny_model_dir), "--method", "random_unstructured", "--out", str(out)]
    assert main([*argv, "--sparsity", "0.5", "--plugin", plugin]) == 0
    assert json.loads((out / "pruning.json").read_text())["method"] == "random_unstructured"
    assert main(["prune", "--plugin", str(tmp_path / "missing.py"), "--model", "x", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("paser: error: plugin ")


def test_a_config_names_its_plugins_and_they_load_before_its_sections_are_built(tmp_path):
    from paser.pipelines.config import ConfigError, load_config
    from paser.pipelines.run import RunConfig

    plugin = str(EXAMPLES / "sft_whole_sequence.py")
    overrides = ["corpus.path=x.jsonl", "models.pruned=p", f"plugins=[{plugin}]"]
    config = load_config(RunConfig, None, [*overrides, "recovery.objective=sft_whole_sequence"])
    assert config.plugins == [plugin] and config.recovery.objective == "sft_whole_sequence"
    with pytest.raises(ConfigError, match=r"config\.plugins: plugin .*missing\.py: no such file"):
        load_config(RunConfig, None, ["corpus.path=x.jsonl", "models.pruned=p", f"plugins=[{tmp_path}/missing.py]"])


def test_help_lists_what_the_registries_hold_plugins_included(capsys):
    from paser.pipelines.cli import main

    with pytest.raises(SystemExit) as done:
        main(["select", "--plugin", str(EXAMPLES / "cds_per_token.py"), "--help"])
    assert done.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "cds_per_token" in help_text and "degradation_sampled" in help_text and "kmeans_diverse" in help_text
