"""Copy what the study's run folder holds into this folder, for the repository: results.json, the run's
config.yaml, report.md + report.html (with its plots), the selected ids of every combination and the wall time of
every stage. Model weights, adapters and the corpus are not copied.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the study's run folder")
    args = parser.parse_args()
    run_dir = args.run_dir.expanduser()
    run = load_run(run_dir)
    shutil.copyfile(run_dir / "results.json", HERE / "results.json")
    shutil.copyfile(run_dir / "config.yaml", HERE / "run_config.yaml")
    write_report(run_dir, HERE)
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
