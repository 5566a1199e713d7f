"""The stage keys of every committed config (the studies' configs, their planned settings and the built-in demo),
as JSON: {config: {stage: key}}. A refactoring of the stage builders must leave this output unchanged, or every
run folder written before it (a study's among them) would rerun its stages.

    python -m tests.pipelines.config_stage_keys > before.json   # on the old code
    python -m tests.pipelines.config_stage_keys > after.json    # on the new code; then diff the two

Keys are computed as the executor computes them (`paser.pipelines.stages.stage_key`), but with the identity of
each file and checkpoint replaced by the argument it is taken of (no corpus is hashed and no model resolved), so
the check runs without the shared data and still fails on a source declared under another role or of another path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from paser.pipelines.run import Run, combos, load_run_config
from tests.pipelines.test_stage_keys import walk

ROOT = Path(__file__).resolve().parents[2]
IDENTITIES = ("source_identity", "model_identity", "file_sha256")


def committed_configs() -> list[Path | None]:
    """Every committed run config; None stands for the built-in demo."""
    studies = ROOT / "studies"
    return [None, *sorted([*studies.glob("*/*.yaml"), *studies.glob("*/setting-*/*.yaml")])]


def stub_identities() -> None:
    """Replace each identity function wherever the pipelines imported it by one naming its argument."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("paser.pipelines"):
            continue
        for function in IDENTITIES:
            if hasattr(module, function):
                setattr(module, function, lambda value, function=function: f"{function}:{value}")


def config_keys(path: Path | None, run_dir: Path) -> dict[str, str]:
    """Every stage of the config at `path` (None: the demo), by name, with its key."""
    config = load_run_config(path)
    runner = Run(config, run_dir)
    tops = [runner.baseline_stage("original"), runner.baseline_stage("pruned")]
    tops += [runner.combo_stage(combo) for combo in combos(config)]
    return {stage.name: stage.digest for stage in sorted(walk(tops), key=lambda stage: stage.name)}


def main() -> None:
    stub_identities()
    keys = {
        "demo" if path is None else str(path.relative_to(ROOT)): config_keys(path, Path("/nonexistent/run"))
        for path in committed_configs()
    }
    json.dump(keys, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
