"""Copy what the study's run folder holds into this folder, for the repository: results.json, the run's
config.yaml, report.md + report.html (with its plots), tables.md (the README's tables), the selected ids of every
combination and the wall time of every stage. Model weights, adapters and the corpus are not copied.

    python studies/smollm2-wanda50-alpaca/collect.py ~/runs/study

The run folder itself (outside the repository) is what `paser run studies/smollm2-wanda50-alpaca/config.yaml
--out RUN` writes; rerunning that command resumes it (every finished stage is cached).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.report import write_report  # noqa: E402
from pipelines.results import load_run  # noqa: E402

HERE = Path(__file__).resolve().parent
# The study's metrics, the in-distribution one (where choices are made) first.
METRICS = ("heldout_alpaca_nll", "wikitext2_ppl", "heldout_t0_nll", "heldout_gsm8k_nll")


def tables(run) -> str:
    """tables.md: per strategy the metrics (mean ± sd over seeds, gap recovered), the paired difference from
    random with its bootstrap interval, and what each strategy picked (from `RunResults`)."""
    results = run.results_table().set_index("strategy")
    compute = run.compute().groupby("strategy")[["train_tokens", "train_seconds"]].mean()
    lines = ["| strategy | seeds | tokens trained (2 epochs) | " + " | ".join(METRICS) + " | gap recovered (alpaca NLL) |"]
    lines.append("|---" * (len(METRICS) + 4) + "|")
    for strategy, row in results.iterrows():
        cells = [strategy, "" if strategy in ("original", "pruned") else str(row["seeds"])]
        cells.append(f"{compute.loc[strategy, 'train_tokens']:,.0f}" if strategy in compute.index else "")
        for metric in METRICS:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            cells.append(f"{mean:.4f}" + ("" if std != std else f" ± {std:.4f}"))
        cells.append(f"{row['heldout_alpaca_nll_gap_recovered']:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    versus = run.versus_random()
    lines += ["", "| strategy | metric | pairs | strategy − random | 95% bootstrap interval | resampled | verdict |"]
    lines.append("|---" * 7 + "|")
    for row in versus[versus["metric"].isin(METRICS)].itertuples(index=False):
        lines.append(
            f"| {row.strategy} | {row.metric} | {row.pairs} | {row.difference:+.4f} | [{row.lo:+.4f}, {row.hi:+.4f}] "
            f"| {row.bootstrap} | {row.verdict} |"
        )
    picks = run.picks()
    numbers = ["tokens", "mean_response_tokens", "median_response_tokens", "mean_cds", "cds_rank", "cluster_shift"]
    mean = picks.groupby("strategy", sort=False)[numbers].mean()
    lines += [
        "",
        "| picked by | tokens | mean response tokens | median response tokens | mean CDS | CDS rank | cluster shift |",
        "|---" * 7 + "|",
    ]
    for strategy, row in mean.iterrows():
        lines.append(
            f"| {strategy} | {row.tokens:,.0f} | {row.mean_response_tokens:.1f} | {row.median_response_tokens:.1f} "
            f"| {row.mean_cds:.4f} | {row.cds_rank:.2f} | {row.cluster_shift:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the study's run folder")
    args = parser.parse_args()
    run_dir = args.run_dir.expanduser()
    run = load_run(run_dir)
    shutil.copyfile(run_dir / "results.json", HERE / "results.json")
    shutil.copyfile(run_dir / "config.yaml", HERE / "run_config.yaml")
    write_report(run_dir, HERE)
    (HERE / "tables.md").write_text(tables(run), encoding="utf-8")
    selections = HERE / "selections"
    if selections.exists():
        shutil.rmtree(selections)
    selections.mkdir()
    for combo in run.combos().itertuples(index=False):
        if combo.has_selection:
            ids = run.selection(combo.combo)["id"].tolist()
            (selections / f"{combo.combo}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    seconds = {stage: entry.get("seconds") for stage, entry in manifest["stages"].items() if entry["status"] == "done"}
    (HERE / "stage_seconds.json").write_text(json.dumps(seconds, indent=1) + "\n", encoding="utf-8")
    total = sum(value for value in seconds.values() if value)
    print(f"{len(seconds)} finished stages, {total / 3600:.2f} h of stage time; files in {HERE}")


if __name__ == "__main__":
    main()
