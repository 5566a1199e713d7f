"""Every stage key of every committed run config stays what it is: the studies' configs and their planned settings,
the shipped run configs, the built-in demo, and the demo with each objective's own settings away from their
defaults. A change of how a stage declares its inputs, settings or sources that changes a key makes every run
folder rerun that stage (a study's among them); it must be a decision — `tests/fixtures/stage_keys.json`
recorded again and the README's "Run directory and cache" saying so — never an accident of a refactoring.

Keys are computed as the executor computes them (`paser.pipelines.stages.stage_key`), with the identity of each
file and checkpoint replaced by the argument it is taken of (no corpus hashed, no model resolved), so the test
needs no shared data and still fails on a source declared under another role or of another path.

    python -m tests.pipelines.test_committed_stage_keys   # records the keys (a deliberate key change only)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from paser.data.paths import data_dir
from paser.pipelines.run import Run, combos, load_run_config
from tests.pipelines.test_stage_keys import walk

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "stage_keys.json"
IDENTITIES = ("source_identity", "model_identity", "file_sha256")
CONFIGS = sorted(
    [
        *ROOT.glob("studies/*/*.yaml"),
        *ROOT.glob("studies/*/setting-*/*.yaml"),
        *ROOT.glob("pipelines/configs/run/*.yaml"),
    ]
)
# The demo with each objective's own settings away from their defaults (None: the demo's config).
DEMO_OVERRIDES = {
    "demo+distill": ["recovery.objective=distill", "recovery.sft_weight=0.5", "recovery.temperature=2"],
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
    "demo+variants": ["recovery.variants={sft: {}, kd: {objective: distill}}"],
}


def cases() -> dict[str, tuple[Path | None, list[str]]]:
    """Name -> (config path or None for the demo, overrides), for every recorded case."""
    found: dict[str, tuple[Path | None, list[str]]] = {"demo": (None, [])}
    found.update({str(path.relative_to(ROOT)): (path, []) for path in CONFIGS})
    found.update({name: (None, overrides) for name, overrides in DEMO_OVERRIDES.items()})
    return found


def portable(value: object) -> str:
    """`value` with the data directory's own location replaced by `$DATA`: a built-in set's file is found
    wherever the checkout's data lives (a clean clone's `../shared/data` is not this machine's), and the key the
    executor computes hashes the file's content, never its path."""
    text = str(value)
    try:
        root = str(data_dir())
    except FileNotFoundError:
        return text
    return "$DATA" + text[len(root) :] if text.startswith(root) else text


def identity_stubs() -> list[tuple[object, str, object]]:
    """(module, name, stub) for each identity function wherever the pipelines imported it: one naming its
    argument (`portable`)."""
    stubs = []
    for name, module in list(sys.modules.items()):
        if name.startswith("paser.pipelines"):
            for function in IDENTITIES:
                if hasattr(module, function):
                    stubs.append((module, function, lambda value, function=function: f"{function}:{portable(value)}"))
    return stubs


def case_keys(path: Path | None, overrides: list[str]) -> dict[str, str]:
    """Every stage of the config at `path` (None: the demo) under `overrides`, by name, with its key."""
    config = load_run_config(path, overrides)
    runner = Run(config, Path("/nonexistent/run"))
    tops = [runner.baseline_stage("original"), runner.baseline_stage("pruned")]
    tops += [runner.combo_stage(combo) for combo in combos(config)]
    return {stage.name: stage.digest for stage in sorted(walk(tops), key=lambda stage: stage.name)}


@pytest.fixture(scope="module")
def stubbed_identities():
    with pytest.MonkeyPatch.context() as patch:
        for module, name, stub in identity_stubs():
            patch.setattr(module, name, stub)
        yield


@pytest.mark.parametrize("name", sorted(cases()))
def test_the_stage_keys_of_a_committed_config_are_unchanged(name, stubbed_identities):
    path, overrides = cases()[name]
    assert case_keys(path, overrides) == json.loads(RECORDED.read_text())[name]


def test_every_case_is_recorded():
    assert set(json.loads(RECORDED.read_text())) == set(cases())


if __name__ == "__main__":
    for module, name, stub in identity_stubs():
        setattr(module, name, stub)
    keys = {name: case_keys(path, overrides) for name, (path, overrides) in cases().items()}
    RECORDED.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
