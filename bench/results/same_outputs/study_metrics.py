"""Issue 28's metrics check on a committed study config: one combination of a committed `run_config.yaml`
selected, trained and evaluated by whichever engine is first on `sys.path` (the engine before issue 28's run-engine
work or after it: both expose `load_run_config`, `Run`, `combos` and `flat_metrics`), its selection's sha256 and
every metric written to `--dump`; `study_metrics.sh REV` runs it once per side and compares the dumps.

Only the combination's own stages run (select, recover, eval; the shared stages they build on, seeded from
`--seed-from` where their keys match); the two baselines are not evaluated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from committed_study import seed_folder  # this script's folder is first on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a committed run_config.yaml")
    parser.add_argument("--combo", required=True, help="the combination to select, train and evaluate")
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument("--dump", required=True, help="JSON file for the selection's sha256 and the metrics")
    parser.add_argument("--seed-from", default=None, help="a run folder whose shared stages to start from")
    parser.add_argument("--set", action="append", default=[], help="config override (KEY=VALUE)")
    args = parser.parse_args()
    from paser.pipelines import run as engine
    from paser.pipelines import run_stages

    out = Path(args.out)
    if args.seed_from:
        seed_folder(Path(args.seed_from), out)
    config = engine.load_run_config(args.config, args.set)
    runner = engine.Run(config, out)
    if hasattr(engine, "check_run"):  # after: functions beside Run
        engine.check_run(runner)
        engine.check_inputs(config)
    else:  # before: methods
        runner.check()
        runner.check_inputs()
    # As Run.execute does first: the score stage hashes what these two write.
    if hasattr(run_stages, "write_builtin_demo"):
        run_stages.write_builtin_demo(runner)
    else:
        runner.write_demo_corpus()
    run_stages.write_calibration_rows(runner)
    combo = next((combo for combo in engine.combos(config) if combo.name == args.combo), None)
    if combo is None:
        raise SystemExit(f"{args.config} has no combination {args.combo}")
    runner.executor.ensure(runner.combo_stage(combo))
    folder = out / "combos" / combo.name  # the same path under both engines
    selection = (folder / "select" / "selection.jsonl").read_bytes()
    metrics = engine.flat_metrics(json.loads((folder / "eval" / "metrics.json").read_text()))
    dump = {"combo": combo.name, "selection_sha256": hashlib.sha256(selection).hexdigest(), "metrics": metrics}
    Path(args.dump).write_text(json.dumps(dump, indent=1, sort_keys=True) + "\n")
    print(f"{combo.name}: engine {engine.__file__}, {len(metrics)} metrics, ran {runner.executor.ran}", flush=True)


if __name__ == "__main__":
    main()
