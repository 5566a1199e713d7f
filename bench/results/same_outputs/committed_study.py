"""Issue 28's same-outputs check on the committed study: this checkout's `paser run` engine, given each committed
study folder's resolved config (`studies/<study>/**/run_config.yaml`, the config the committed results were made
with), selects again and compares every combination's selected ids with the committed ones
(`selections/<combo>.txt`); with `--metrics COMBO` it also trains and evaluates that combination and prints its
metrics beside the committed `results.json` values.

Only the select stages (and what they build on: pruning, scoring, held-out split, embeddings, clusters) run unless
`--metrics` asks for more. `--seed-from RUN` copies an existing run folder's pruned model, shared stages and
manifest into each folder first, so shared stages whose keys match are not computed again (their keys decide:
a stage whose key differs is recomputed).

    python bench/results/same_outputs/committed_study.py --out /tmp/committed-check \\
        --seed-from /work/runs/v2-sft --metrics paser-b0.1-s0 --set recovery.learning_rate=2e-4
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def seed_folder(source: Path, target: Path) -> None:
    """Copy `source`'s pruned model, shared stages and manifest into `target` (once)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("pruned", "shared"):
        if (source / name).exists() and not (target / name).exists():
            shutil.copytree(source / name, target / name, symlinks=True)
    if (source / "manifest.json").exists() and not (target / "manifest.json").exists():
        shutil.copy2(source / "manifest.json", target / "manifest.json")


def check_study(config_path: Path, out: Path, metrics: list[str], overrides: list[str]) -> dict:
    """Select every combination of the config at `config_path` into `out`; compare with the committed ids."""
    from paser.pipelines.run import Run, check_inputs, check_run, combos, flat_metrics, load_run_config
    from paser.pipelines.run_stages import write_builtin_demo, write_calibration_rows

    config = load_run_config(config_path, overrides)
    run = Run(config, out)
    check_run(run)
    check_inputs(config)  # as paser run does: a corpus path not found is refused before any stage's key is taken
    write_builtin_demo(run)  # as Run.execute does first: the score stage hashes what these two write
    write_calibration_rows(run)
    committed = config_path.parent / "selections"
    report = {"config": str(config_path.relative_to(ROOT)), "identical": [], "differ": [], "missing": []}
    for combo in combos(config):
        evaluation = run.combo_stage(combo)
        select = evaluation.inputs["model"].inputs["select"]
        run.executor.ensure(select)
        expected = committed / f"{combo.name}.txt"
        if not expected.exists():
            report["missing"].append(combo.name)
            continue
        path = run.layout.combo(combo.name).select.selection
        ids = [json.loads(line)["id"] for line in path.open(encoding="utf-8")]
        same = ids == expected.read_text(encoding="utf-8").split()
        report["identical" if same else "differ"].append(combo.name)
        if combo.name in metrics:
            run.executor.ensure(evaluation)
            record = json.loads(run.layout.combo(combo.name).eval.metrics.read_text())
            report.setdefault("metrics", {})[combo.name] = compare_metrics(
                flat_metrics(record), committed_metrics(config_path.parent, combo.name)
            )
    return report


def committed_metrics(study: Path, combo: str) -> dict[str, float]:
    results = json.loads((study / "results.json").read_text())
    for row in results["combos"]:
        if row["combo"] == combo:
            return row["metrics"]
    raise SystemExit(f"{study}/results.json has no combination {combo}")


def compare_metrics(now: dict[str, float], committed: dict[str, float]) -> dict[str, dict]:
    """{metric: {now, committed, difference}} over the metrics both hold."""
    table = {}
    for name in sorted(set(now) & set(committed)):
        a, b = float(now[name]), float(committed[name])
        table[name] = {"now": a, "committed": b, "difference": a - b if math.isfinite(a - b) else None}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="studies/smollm2-wanda50-alpaca", help="committed study folder")
    parser.add_argument("--out", required=True, help="folder for one run folder per committed config")
    parser.add_argument("--seed-from", default=None, help="a run folder whose shared stages to start from")
    parser.add_argument("--metrics", action="append", default=[], help="a combination to train and evaluate too")
    parser.add_argument("--set", action="append", default=[], help="config override for every config (KEY=VALUE)")
    args = parser.parse_args()
    study = ROOT / args.study
    configs = sorted(study.glob("**/run_config.yaml"))
    if not configs:
        raise SystemExit(f"no run_config.yaml under {study}")
    reports = []
    for config_path in configs:
        name = config_path.parent.name if config_path.parent != study else "main"
        out = Path(args.out) / name
        if args.seed_from:
            seed_folder(Path(args.seed_from), out)
        report = check_study(config_path, out, args.metrics, args.set)
        reports.append(report)
        print(
            f"{report['config']}: {len(report['identical'])} selections identical, {len(report['differ'])} differ"
            f" {report['differ']}, {len(report['missing'])} not committed",
            flush=True,
        )
        for combo, table in report.get("metrics", {}).items():
            for metric, row in table.items():
                print(f"  {combo} {metric}: now {row['now']:.6f} committed {row['committed']:.6f}")
    (Path(args.out) / "committed_study.json").write_text(json.dumps(reports, indent=1) + "\n")
    sys.exit(1 if any(report["differ"] for report in reports) else 0)


if __name__ == "__main__":
    main()
