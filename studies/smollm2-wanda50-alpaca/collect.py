"""Copy what the study's run folder holds into this folder, for the repository: results.json, the run's
config.yaml, report.md + report.html (with its plots), tables.md (the README's tables), the selected ids of every
combination, the wall time of every stage and, where the evaluations kept them, every combination's per-item
values in one compressed file (items.npz, `paser.pipelines.analysis.uncertainty.write_run_items`), so that the paired
tests, verdicts and item-level intervals can be recomputed from the repository. Model weights, adapters and the
corpus are not copied.

    python studies/smollm2-wanda50-alpaca/collect.py ~/runs/study
    python studies/smollm2-wanda50-alpaca/collect.py ~/runs/study-b --into equal-tokens \
        --sweep studies/smollm2-wanda50-alpaca/config.yaml --set "selection.budgets=[11300t]" ...
    python studies/smollm2-wanda50-alpaca/collect.py --recompute [--into equal-tokens]

`--recompute` needs no run folder: it recomputes the comparisons (paired differences, their seed-level tests
and verdicts, the bootstrap intervals: over the items where items.npz is here, else over the seeds) and the
choices from the committed results.json and items.npz, and rewrites results.json's `versus_random` block and the
comparison and choice tables (in tables.md and the README).

Dev and test (issue 27). The in-distribution held-out rows are reported in two halves (`paser.pipelines.heldout`):
the tables, verdicts and headline are on the test half (`heldout_alpaca_test_nll`), and every choice the study
makes (the best strategy and budget, `choice_table`) reads the dev half only, through `paser.pipelines.choose`.
Results collected before the split have neither half: their tables fall back to the whole set
(`heldout_alpaca_nll`), say so in a note, and make no choice. The out-of-distribution sets and the generation
metrics (where the run evaluated `gen_labels` / `gen_longform`) are reported beside it, never chosen on.

`--sweep CONFIG` (with `--set` overrides) first rewrites the run folder's config.yaml and results.json for that
sweep from what the folder holds, training nothing: a combination not finished shows as missing. That is how a
sweep driven in stages, some of them cut short, is collected as one. `--into` collects into a subfolder.

Tables also replace the README's blocks between `<!-- begin INTO:NAME -->` and `<!-- end INTO:NAME -->` (INTO is
`main` for the study folder itself, NAME one of `tables`' names), so the README's numbers are the collected ones.

The run folder itself (outside the repository) is what `paser run studies/smollm2-wanda50-alpaca/config.yaml
--out RUN` writes; rerunning that command resumes it (every finished stage is cached).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from paser.common.io import write_atomic, write_json  # noqa: E402
from paser.pipelines.analysis.accounting import compute_table  # noqa: E402
from paser.pipelines.analysis.metrics import results_table, summary_table  # noqa: E402
from paser.pipelines.analysis.reader import RunReader, load_run  # noqa: E402
from paser.pipelines.analysis.report import write_report  # noqa: E402
from paser.pipelines.analysis.selections import cds_vs_gain, picks  # noqa: E402
from paser.pipelines.analysis.uncertainty import read_run_items, run_items, versus_random, write_run_items  # noqa: E402
from paser.pipelines.choose import DevResults, best_setting, dev_view, setting_of  # noqa: E402
from paser.pipelines.config import config_to_dict  # noqa: E402
from paser.pipelines.run import collect_results, load_run_config, statistics_blocks  # noqa: E402

HERE = Path(__file__).resolve().parent
# The in-distribution held-out set's metric prefix: its halves are `{prefix}_dev_nll` (choices) and
# `{prefix}_test_nll` (reported), the whole set `{prefix}_nll` (results collected before the split).
IN_DISTRIBUTION = "heldout_alpaca"
# The out-of-distribution metrics, reported beside the in-distribution one and never chosen on.
OUT_OF_DISTRIBUTION = ("wikitext2_ppl", "heldout_t0_nll", "heldout_gsm8k_nll")
# The generation metrics (`paser.recovery.generation`), report-only too, where the run evaluated them.
GENERATION = ("gen_labels_exact_match", "gen_longform_repeat_3", "gen_longform_distinct_2", "gen_longform_mean_length")
BEFORE_SPLIT = (
    "collected before the dev/test split (issue 27): the in-distribution column is the whole held-out set, on which "
    "the earlier choices were also made; no choice is made from these results"
)
# Every combination's per-item values, committed beside results.json.
ITEMS_FILE = "items.npz"
# The sections of tables.md (`tables`' names), in the order the file has them; `recompute` puts a section the
# committed file lacks where a fresh collection would have written it.
# Each length control of the grid and the strategy whose lengths it matches.
LENGTH_CONTROLS = {"length_matched": "paser", "length_matched_density": "paser_density"}
SECTIONS = (
    "results",
    "gaps",
    "headline",
    "versus_random",
    "versus_paser",
    *(f"versus_{control}" for control in LENGTH_CONTROLS),
    "choices",
    "picks",
    "cds_vs_gain",
)


def reported_metrics(results: dict) -> tuple[str, ...]:
    """The metrics the tables report, the in-distribution one first: its test half where the results have it,
    else (collected before the split, `BEFORE_SPLIT`) the whole set; then `OUT_OF_DISTRIBUTION`, then the
    `GENERATION` metrics the results have."""
    test = f"{IN_DISTRIBUTION}_test_nll"
    in_distribution = test if test in results["metrics"] else f"{IN_DISTRIBUTION}_nll"
    generation = [metric for metric in GENERATION if metric in results["metrics"]]
    return (in_distribution, *OUT_OF_DISTRIBUTION, *generation)


def choice_table(results: dict) -> list[str]:
    """The study's choices, made on the dev half only (`paser.pipelines.choose`), as markdown lines: the best
    (strategy, budget, and recovery variant where the run compares them) of the sweep on
    `{IN_DISTRIBUTION}_dev_nll`, then each strategy's best budget where the sweep has more than one, each with its
    dev mean (what it was chosen on) and its test mean (reported, never chosen on). Results without the dev metric
    (collected before the split) give one line saying so."""
    view = dev_view(results)
    dev, test = f"{IN_DISTRIBUTION}_dev_nll", f"{IN_DISTRIBUTION}_test_nll"
    if dev not in view.metrics:
        return [f"No choice: no `{dev}` in these results, {BEFORE_SPLIT}."]
    recorded = {setting_of(combo): [] for combo in results["combos"]}
    for combo in results["combos"]:
        value = (combo.get("metrics") or {}).get(test)
        if value is not None and value == value:
            recorded[setting_of(combo)].append(float(value))
    variants = bool(results.get("recoveries"))  # a recovery column where the run compares recovery variants
    header = ["choice (on dev)", "strategy", *(["recovery"] if variants else []), "budget", "seeds"]
    header += [f"{dev} (chosen on)", f"{test} (reported)"]
    lines = [_row(header), "|---" * len(header) + "|"]
    choices = [("best setting", view)]
    if len(results["budgets"]) > 1:
        for strategy in results["strategies"]:
            settings = {key: values for key, values in view.values.items() if key[0] == strategy}
            choices.append((f"best budget of {strategy}", DevResults(view.metrics, view.lower_is_better, settings)))
    for label, settings in choices:
        if not any(values[dev] for values in settings.values.values()):
            continue
        choice = best_setting(settings, dev)
        reported = recorded.get((choice.strategy, choice.budget, choice.recovery), [])
        test_cell = f"{sum(reported) / len(reported):.4f}" if reported else ""
        cells = [label, choice.strategy, *([str(choice.recovery)] if variants else []), _budget(choice.budget)]
        cells += [str(choice.seeds), f"{choice.mean:.4f}", test_cell]
        lines.append(_row(cells))
    return lines


def comparison_tables(results: dict, items: dict) -> dict[str, list[str]]:
    """The paired-comparison tables as markdown lines, by name: `headline` (`paser` − `random` on the
    in-distribution metric, a sentence per budget), `versus_random` (every strategy against random),
    `versus_paser` (the PASER ablations against `paser`) and `versus_length_matched` (`paser` against its
    length-matched control; `versus_length_matched_density` likewise, `LENGTH_CONTROLS`), each row the paired
    difference, its paired t and sign-flip p-values, its bootstrap interval and the verdict; from a results.json
    payload and the per-item values `items` (by combination; empty: the bootstrap resamples seeds), on
    `reported_metrics`. A table the run has no rows for is absent."""
    strategies = results["strategies"]
    metrics = reported_metrics(results)
    versus = pd.DataFrame(versus_random(results, items=items)["rows"])
    out = {}
    if not versus.empty:  # a sweep without random (by-cluster) has no rows, and no columns to select on
        out = {"headline": _headline(versus, metrics[0]), "versus_random": _versus(versus, "random", metrics)}
    ablations = [name for name in strategies if name.startswith("paser_")]
    if ablations and "paser" in strategies:
        versus = pd.DataFrame(versus_random(results, items=items, baseline="paser")["rows"])
        out["versus_paser"] = _versus(versus[versus["strategy"].isin(ablations)], "paser", metrics)
    for control, reference in LENGTH_CONTROLS.items():
        if control in strategies and reference in strategies:
            versus = pd.DataFrame(versus_random(results, items=items, baseline=control)["rows"])
            out[f"versus_{control}"] = _versus(versus[versus["strategy"] == reference], control, metrics)
    return {name: table for name, table in out.items() if table}


def tables(run: RunReader, items: dict) -> dict[str, list[str]]:
    """The study's tables as markdown lines, by name: `results` (per strategy and budget: seeds, tokens trained,
    their share of full, train seconds, every `reported_metrics` as mean ± sd [95% t-interval]), `gaps` (gap
    recovered per metric), the `comparison_tables` (with the per-item values `items`), `choices` (`choice_table`:
    on dev only), `picks` (what each strategy picked) and `cds_vs_gain` (where the run trained on single
    clusters); a table the run has no rows for is absent. Results collected before the dev/test split carry a
    note under `results` (`BEFORE_SPLIT`)."""
    metrics = reported_metrics(run.results)
    results = results_table(run)
    results = results[results["strategy"].isin(["original", "pruned"]) | (results["seeds"] > 0)]
    summary = summary_table(run).set_index(["strategy", "budget", "metric"])
    compute = compute_table(run).groupby(["strategy", "budget"])[["train_tokens", "train_seconds"]].mean()
    picked = picks(run)
    pool_tokens = float(picked.loc[picked["strategy"] == "pool", "tokens"].iloc[0])
    header = ["strategy", "budget", "seeds", "tokens trained (2 epochs)", "of full (pool, 2 epochs)", "train s"]
    lines = [_row([*header, *metrics]), "|---" * (len(header) + len(metrics)) + "|"]
    gaps = [_row(["strategy", "budget", *[f"gap recovered {metric}" for metric in metrics]])]
    gaps.append("|---" * (len(metrics) + 2) + "|")
    for row in results.itertuples(index=False):
        baseline = row.strategy in ("original", "pruned")
        key = (row.strategy, row.budget)
        cells = [row.strategy, "" if baseline else _budget(row.budget), "" if baseline else str(row.seeds)]
        if key in compute.index:
            tokens, seconds = compute.loc[key, "train_tokens"], compute.loc[key, "train_seconds"]
            cells += [f"{tokens:,.0f}", f"{tokens / (2 * pool_tokens):.1%}", f"{seconds:,.0f}"]
        else:
            cells += ["", "", ""]
        for metric in metrics:
            mean, std = getattr(row, f"{metric}_mean"), getattr(row, f"{metric}_std")
            cell = f"{mean:.4f}" + ("" if std != std else f" ± {std:.4f}")
            lo, hi = summary.loc[(*key, metric), ["lo", "hi"]] if (*key, metric) in summary.index else (None, None)
            if lo is not None and lo == lo:  # a 95% t-interval over seeds (none with one seed)
                cell += f" [{lo:.4f}, {hi:.4f}]"
            cells.append(cell)
        lines.append(_row(cells))
        if not baseline:
            recovered = [getattr(row, f"{metric}_gap_recovered", float("nan")) for metric in metrics]
            gaps.append(_row([*cells[:2], *[f"{value:.1%}" for value in recovered]]))
    if not metrics[0].endswith("_test_nll"):
        lines += ["", f"{metrics[0]}: {BEFORE_SPLIT}."]
    out = {"results": lines, "gaps": gaps, **comparison_tables(run.results, items)}
    out["choices"] = choice_table(run.results)
    numbers = ["tokens", "mean_response_tokens", "median_response_tokens", "mean_cds", "cds_rank", "cluster_shift"]
    mean = picked.groupby(["strategy", "budget"], sort=False, dropna=False)[numbers].mean()
    header = ["picked by", "budget", "tokens", "mean response tokens", "median response tokens", "mean CDS"]
    out["picks"] = [_row([*header, "CDS rank", "cluster shift"]), "|---" * 8 + "|"]
    for (strategy, budget), row in mean.iterrows():
        out["picks"].append(
            f"| {strategy} | {_budget(budget)} | {row.tokens:,.0f} | {row.mean_response_tokens:.1f} "
            f"| {row.median_response_tokens:.1f} | {row.mean_cds:.4f} | {row.cds_rank:.2f} | {row.cluster_shift:.2f} |"
        )
    gains = [(metric, *cds_vs_gain(run, metric)) for metric in metrics]
    if len(gains[0][1]):
        out["cds_vs_gain"] = _cds_vs_gain(gains)
    return {name: out[name] for name in SECTIONS if out.get(name)}


def splice(readme: Path, into: str, named: dict[str, list[str]]) -> int:
    """Replace every block of `readme` between `<!-- begin {into}:{name} -->` and `<!-- end {into}:{name} -->`
    (`into` "main" for the study folder itself) by the table `name`; returns how many blocks were replaced."""
    text = readme.read_text(encoding="utf-8")
    count = 0
    for name, table in named.items():
        begin, end = f"<!-- begin {into}:{name} -->", f"<!-- end {into}:{name} -->"
        block = "\n".join([begin, *table, end])
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), flags=re.DOTALL)
        text, replaced = pattern.subn(lambda _, block=block: block, text)
        count += replaced
    write_atomic(readme, lambda path: path.write_text(text, encoding="utf-8"))
    return count


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _budget(budget) -> str:
    """A budget as the sweep wrote it: a row fraction or count, tokens (`11300t`), or "" for none (NaN)."""
    if isinstance(budget, str):
        return budget
    if budget != budget:
        return ""
    return f"{budget:g}" if budget < 1 else f"{budget:.0f} rows"


def _versus(versus: pd.DataFrame, baseline: str, metrics: tuple[str, ...]) -> list[str]:
    """The paired-difference table of `versus` (rows of a `versus_random` block) against `baseline`, on
    `metrics`."""
    header = ["strategy", "budget", "metric", "pairs", f"strategy − {baseline}", "paired t p", "sign-flip p"]
    lines = [_row([*header, "95% bootstrap interval", "resampled", "verdict"]), "|---" * 10 + "|"]
    for row in versus[versus["metric"].isin(metrics)].itertuples(index=False):
        if row.pairs < 2:
            continue
        lines.append(
            f"| {row.strategy} | {_budget(row.budget)} | {row.metric} | {row.pairs} | {row.difference:+.4f} "
            f"| {row.t_p:.3f} | {row.permutation_p:.3f} | [{row.lo:+.4f}, {row.hi:+.4f}] | {row.bootstrap} "
            f"| {row.verdict} |"
        )
    return lines if len(lines) > 2 else []


def _headline(versus: pd.DataFrame, metric: str) -> list[str]:
    """The study's headline as markdown lines: per budget, `paser` − `random` on `metric` (the in-distribution
    one of `reported_metrics`: the test half where there is one, else labelled as the whole set), its seed-level
    p-values and verdict."""
    label = metric if metric.endswith("_test_nll") else f"{metric} (whole held-out set, before the dev/test split)"
    lines = []
    rows = versus[(versus["strategy"] == "paser") & (versus["metric"] == metric)]
    for row in rows.itertuples(index=False):
        if row.pairs < 2:
            continue
        lines.append(
            f"- {_budget(row.budget)}: paser − random on {label} {row.difference:+.4f} over {row.pairs} seeds "
            f"(paired t p {row.t_p:.3f}, sign-flip p {row.permutation_p:.3f}): **{row.verdict}**"
        )
    return lines


def _cds_vs_gain(gains: list[tuple[str, pd.DataFrame, float, float]]) -> list[str]:
    """Per (seed, cluster) trained alone: size, mean CDS, tokens trained and the gain over the pruned model on every
    metric; then per metric Spearman's rho of mean CDS vs gain, of mean CDS vs gain per 1,000 tokens trained (the
    clusters' lengths differ, so equal rows is not equal compute), and of tokens vs gain."""
    from scipy.stats import spearmanr

    first = gains[0][1]
    header = ["seed", "cluster", "rows in cluster", "mean CDS", "tokens trained (2 epochs)"]
    header += [f"gain {metric}" for metric, *_ in gains]
    lines = [_row(header), "|---" * len(header) + "|"]
    for index, row in enumerate(first.itertuples(index=False)):
        cells = [str(row.seed), str(row.cluster), str(row.size), f"{row.mean_cds:.4f}", f"{row.train_tokens:,.0f}"]
        cells += [f"{table['gain'].iloc[index]:+.4f}" for _, table, _, _ in gains]
        lines.append(_row(cells))
    header = ["metric", "points", "rho: mean CDS vs gain (p)", "rho: mean CDS vs gain per 1k tokens (p)"]
    lines += ["", _row([*header, "rho: tokens vs gain (p)"]), "|---" * 5 + "|"]
    for metric, table, rho, p in gains:
        per_token = spearmanr(table["mean_cds"], table["gain"] / table["train_tokens"] * 1000)
        length = spearmanr(table["train_tokens"], table["gain"])
        cells = [metric, str(len(table)), f"{rho:+.3f} ({p:.3f})"]
        cells += [f"{per_token[0]:+.3f} ({per_token[1]:.3f})", f"{length[0]:+.3f} ({length[1]:.3f})"]
        lines.append(_row(cells))
    return lines


def rebuild(run_dir: Path, sweep: Path, overrides: list[str]) -> None:
    """Rewrite `run_dir`'s config.yaml and results.json for `sweep` (with `overrides`) from the finished stages
    the folder holds, as the last `paser run` of that sweep would, training and evaluating nothing. Stage hashes
    are not checked: every combination in the folder must have been run with this sweep's settings."""
    config = load_run_config(sweep, overrides)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    write_atomic(run_dir / "config.yaml", lambda path: path.write_text(text, encoding="utf-8"))
    results = collect_results(run_dir, config)
    results.update(statistics_blocks(results, run_dir))
    write_json(run_dir / "results.json", results)
    evaluated = sum(1 for combo in results["combos"] if combo.get("metrics"))
    print(f"{run_dir}: results of {evaluated} of {len(results['combos'])} combinations of {sweep}")


def collect_items(run_dir: Path, results: dict, here: Path) -> dict:
    """Every evaluated combination's per-item values in `run_dir`, also written to `here`/items.npz when there are
    any (a folder whose evaluations kept none leaves an items.npz already there as it is); returns them."""
    items = run_items(results, run_dir)
    if items:
        write_run_items(items, here / ITEMS_FILE)
    return items


def recompute(here: Path) -> dict[str, list[str]]:
    """Recompute the comparisons and the choices of the study folder `here` from its committed results.json and
    items.npz (where there is one): rewrite results.json's `versus_random` block and the comparison and choice
    sections of tables.md, a section the file lacks going where `tables` puts it (`SECTIONS`), so that the file
    is the one a fresh collection would write; returns those tables by name."""
    results = json.loads((here / "results.json").read_text(encoding="utf-8"))
    items = read_run_items(here / ITEMS_FILE) if (here / ITEMS_FILE).is_file() else {}
    results["versus_random"] = versus_random(results, items=items)
    write_json(here / "results.json", results)
    named = {**comparison_tables(results, items), "choices": choice_table(results)}
    tables_path = here / "tables.md"
    text = tables_path.read_text(encoding="utf-8") if tables_path.is_file() else ""
    for name, table in named.items():
        section = f"## {name}\n\n" + "\n".join(table) + "\n\n"
        pattern = re.compile(rf"^## {name}\n\n.*?\n\n(?=## |\Z)", flags=re.DOTALL | re.MULTILINE)
        text, replaced = pattern.subn(lambda _, section=section: section, text)
        if not replaced:
            later = [f"## {after}\n" for after in SECTIONS[SECTIONS.index(name) + 1 :]]
            starts = [match.start() for match in re.finditer(r"^## \S+\n", text, flags=re.MULTILINE)]
            starts = [start for start in starts if text.startswith(tuple(later), start)]
            at = starts[0] if starts else len(text)
            text = text[:at] + section + text[at:]
    write_atomic(tables_path, lambda path: path.write_text(text, encoding="utf-8"))
    return named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, nargs="?", help="the study's run folder (not with --recompute)")
    parser.add_argument("--into", default="", help="a subfolder of the study to collect into (default: the study)")
    parser.add_argument("--sweep", type=Path, help="rebuild the folder's results for this run config's sweep first")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override of --sweep")
    parser.add_argument(
        "--recompute", action="store_true", help="recompute the comparisons from the committed files, no run folder"
    )
    args = parser.parse_args()
    if args.recompute == (args.run_dir is not None):
        parser.error("give a run folder or --recompute, not both")
    here = HERE / args.into
    if args.recompute:
        named = recompute(here)
        print(f"{splice(HERE / 'README.md', args.into or 'main', named)} comparison tables replaced in README.md")
        return
    run_dir = args.run_dir.expanduser()
    here.mkdir(parents=True, exist_ok=True)
    if args.sweep is not None:
        rebuild(run_dir, args.sweep, args.set)
    run = load_run(run_dir)
    shutil.copyfile(run_dir / "results.json", here / "results.json")
    shutil.copyfile(run_dir / "config.yaml", here / "run_config.yaml")
    write_report(run_dir, here)
    items = collect_items(run_dir, run.results, here)
    named = tables(run, items)
    text = "".join(f"## {name}\n\n" + "\n".join(table) + "\n\n" for name, table in named.items())
    (here / "tables.md").write_text(text, encoding="utf-8")
    spliced = splice(HERE / "README.md", args.into or "main", named)
    selections = here / "selections"
    if selections.exists():
        shutil.rmtree(selections)
    selections.mkdir()
    for combo in run.combos().itertuples(index=False):
        if combo.has_selection:
            ids = run.selection(combo.combo)["id"].tolist()
            (selections / f"{combo.combo}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    seconds = {stage: entry.get("seconds") for stage, entry in manifest["stages"].items() if entry["status"] == "done"}
    (here / "stage_seconds.json").write_text(json.dumps(seconds, indent=1) + "\n", encoding="utf-8")
    total = sum(value for value in seconds.values() if value)
    print(f"{len(seconds)} finished stages, {total / 3600:.2f} h of stage time; files in {here}")
    print(f"per-item values of {len(items)} combinations in {here / ITEMS_FILE}" if items else "no per-item values")
    print(f"{spliced} tables replaced in README.md")


if __name__ == "__main__":
    main()
