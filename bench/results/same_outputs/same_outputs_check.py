"""Issue 15's "same outputs" check: tiny `paser run`s whose selection.jsonl files and metrics are dumped, to be
compared between two checkouts (run this file from each checkout's tests/ folder)."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from paser.pipelines.config import load_config
from paser.pipelines.run import RunConfig, run
from tests.pipelines.test_run import tiny_overrides

OUT = Path(os.environ["EQ_OUT"])
SWEEPS = {
    "rows": ('["paser", "random", "cds_topk", "kmeans_diverse", "loss", "full"]', "[10, 0.25]", "[0, 1]"),
    "ifd": ('["ifd", "paser"]', "[12]", "[0]"),
    "options": ('["paser"]', "[0.3]", "[0]"),
}


@pytest.mark.parametrize("name", [*SWEEPS, "magnitude"])
def test_dump(name, tmp_path, tiny_model_dir, perturbed_model_dir):
    overrides = tiny_overrides(tmp_path, tiny_model_dir, perturbed_model_dir)
    strategies, budgets, seeds = SWEEPS.get(name, SWEEPS["rows"])
    overrides += [f"selection.strategies={strategies}", f"selection.budgets={budgets}", f"selection.seeds={seeds}"]
    # Extra overrides for both sides, e.g. EQ_OVERRIDES="recovery.learning_rate=2e-4" to pin a default one side changed.
    overrides += os.environ.get("EQ_OVERRIDES", "").split()
    if name == "options":
        overrides += ["clustering.n_clusters=null", "recovery.max_steps=3"]
    if name == "magnitude":
        overrides = [o for o in overrides if not o.startswith("models.pruned=")]
        overrides += ["models.prune={method: magnitude, sparsity: 0.5}"]
    config = load_config(RunConfig, None, overrides)
    run(config, tmp_path / "run")
    dump = {}
    for path in sorted((tmp_path / "run" / "combos").glob("*/select/selection.jsonl")):
        dump[path.parts[-3]] = hashlib.sha256(path.read_bytes()).hexdigest()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    dump["metrics"] = {c["combo"]: c["metrics"] for c in results["combos"]}
    dump["baselines"] = results["baselines"]
    (OUT / f"{name}.json").write_text(json.dumps(dump, indent=1, sort_keys=True))
