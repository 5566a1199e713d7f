"""Issue 15's "same outputs" check: tiny `paser run`s whose selection.jsonl files and metrics are dumped, to be
compared between two checkouts (run this file from each checkout's tests/ folder)."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from paser.pipelines.config import load_config
from paser.pipelines.run import RunConfig, load_run_config, run
from tests.pipelines.test_run import tiny_overrides

OUT = Path(os.environ["EQ_OUT"])
SWEEPS = {
    "rows": ('["paser", "random", "cds_topk", "kmeans_diverse", "loss", "full"]', "[10, 0.25]", "[0, 1]"),
    "ifd": ('["ifd", "paser"]', "[12]", "[0]"),
    "options": ('["paser"]', "[0.3]", "[0]"),
}


# EQ_SWEEPS picks the sweeps (default the four tiny ones); `demo` is the built-in demo itself (`paser run` with no
# config: SmolLM2-135M, Wanda 50%, the demo corpus), minutes of CPU a side.
NAMES = os.environ.get("EQ_SWEEPS", " ".join([*SWEEPS, "magnitude"])).split()


@pytest.mark.parametrize("name", NAMES)
def test_dump(name, tmp_path, tiny_model_dir, perturbed_model_dir):
    if name == "demo":
        run(load_run_config(None, os.environ.get("EQ_OVERRIDES", "").split()), tmp_path / "run")
        write_dump(name, tmp_path / "run")
        return
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
    write_dump(name, tmp_path / "run")


def write_dump(name, run_dir):
    """The sha256 of every combination's selection.jsonl and every metric of the run in `run_dir`, as OUT/NAME.json."""
    dump = {}
    for path in sorted((run_dir / "combos").glob("*/select/selection.jsonl")):
        dump[path.parts[-3]] = hashlib.sha256(path.read_bytes()).hexdigest()
    results = json.loads((run_dir / "results.json").read_text())
    dump["metrics"] = {c["combo"]: c["metrics"] for c in results["combos"]}
    dump["baselines"] = results["baselines"]
    (OUT / f"{name}.json").write_text(json.dumps(dump, indent=1, sort_keys=True))
