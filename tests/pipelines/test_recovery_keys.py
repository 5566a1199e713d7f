"""The recovery settings `paser run` hashes into its recover and eval stages' keys stay what they are for every
committed config (the studies, their planned settings, the shipped run configs, the built-in demo): a change to how
the recovery settings are read that changes a key makes a run folder retrain its combinations, and must be a
decision (this file re-recorded and the README's "Run directory and cache" saying so), never an accident.

Only the stages' declared settings are compared, not their whole keys: a key is the hash of its settings, its
inputs' keys and its sources' identities, and the inputs and sources (models, corpus files) do not depend on how
the recovery settings are read. `RECORDED` holds, per config, the settings' hash of every recover and eval stage
as paser computed it when the file was written (issue 28, with the objective configs: the shared settings and the
chosen objective's, flat, every field with its default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paser.pipelines.run import DEMO_CONFIG, Run, combos, load_run_config
from paser.pipelines.stages import _plain, stable_hash

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "recovery_keys.json"
CONFIGS = sorted(
    [
        *ROOT.glob("studies/*/*.yaml"),
        *ROOT.glob("studies/*/setting-*/*.yaml"),
        *ROOT.glob("examples/**/*.yaml"),
        *ROOT.glob("pipelines/configs/run/*.yaml"),
    ]
)
# The demo with each objective's own settings away from their defaults, as a run folder of an earlier paser may
# hold them.
OVERRIDES = {
    "demo+distill": ["recovery.objective=distill", "recovery.sft_weight=0.5"],
    "demo+dpo": ["recovery.objective=dpo", "recovery.dpo_beta=0.2", "recovery.max_new_tokens=64"],
    "demo+sft+dpo": ["recovery.objective=sft+dpo", "recovery.generation_batch_size=4"],
    "demo+on_policy": ["recovery.objective=on_policy", "recovery.on_policy_fraction=0.5", "recovery.sft_weight=0.1"],
    "demo+padding_free": ["recovery.padding_free=true"],
    "demo+token_weighting": [
        "recovery.objective=distill",
        "recovery.token_weighting=top_fraction",
        "recovery.token_weight_fraction=0.3",
        "recovery.token_jsd=scores/token_jsd.npz",
    ],
}


def recovery_setting_hashes(path: Path | None, run_dir: Path, overrides: list[str] = ()) -> dict[str, str]:
    """Stage name -> hash of its declared settings, for every recover and eval stage of the config at `path`
    (None: the built-in demo) under `overrides`."""
    run = Run(load_run_config(path, list(overrides)), run_dir)
    stages = [run.baseline_stage("original"), run.baseline_stage("pruned")]
    for combo in combos(run.config):
        evaluation = run.combo_stage(combo)
        stages += [evaluation, evaluation.inputs["model"]]
    return {stage.name: stable_hash({key: _plain(value) for key, value in stage.settings.items()}) for stage in stages}


def config_name(path: Path | None) -> str:
    return "demo" if path is None else str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", [None, *CONFIGS], ids=config_name)
def test_the_recovery_settings_a_run_hashes_are_unchanged(path, tmp_path):
    recorded = json.loads(RECORDED.read_text())
    assert recovery_setting_hashes(path, tmp_path / "run") == recorded[config_name(path)]


@pytest.mark.parametrize("name", OVERRIDES)
def test_the_recovery_settings_of_each_objective_a_run_hashes_are_unchanged(name, tmp_path):
    recorded = json.loads(RECORDED.read_text())
    assert recovery_setting_hashes(None, tmp_path / "run", OVERRIDES[name]) == recorded[name]


def test_every_config_has_recorded_hashes():
    recorded = json.loads(RECORDED.read_text())
    assert set(recorded) == {"demo", *map(config_name, CONFIGS), *OVERRIDES}
    assert DEMO_CONFIG in CONFIGS


if __name__ == "__main__":  # records the hashes: python -m tests.pipelines.test_recovery_keys
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        hashes = {config_name(path): recovery_setting_hashes(path, Path(folder) / "run") for path in [None, *CONFIGS]}
        for name, overrides in OVERRIDES.items():
            hashes[name] = recovery_setting_hashes(None, Path(folder) / "run", overrides)
    RECORDED.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
