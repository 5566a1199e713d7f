"""`paser report RUN`: a run directory as report.md (plots beside it in report_files/) and a self-contained
report.html (the same content, plots embedded as base64 PNG data URIs, inline CSS, no scripts).

Both are rendered from one list of blocks (headings, paragraphs, lists, tables, figures), so they cannot
disagree. Sections: the run (models, corpus, strategies, budgets, seeds, recovery objective, evaluation
tasks), missing artifacts, the results table per strategy × budget with the baselines and the share of the
pruning gap recovered, its uncertainty (mean ± sd and t-intervals over seeds; each strategy's paired
difference from random with a bootstrap interval over seeds and test items, and a forest plot of them), every
combo and its state, compute per combo (rows, tokens and seconds trained, as a share of `full`'s) and the
shared stages' cost, a budget sweep's gap closed against compute (where the run has several budgets), the
corpus map by cluster and by CDS, allocated vs selected rows per cluster, CDS per cluster, cluster purity
against a label the pool's rows carry (where they carry one: `RunReader.label_field`), and the overlap
between the strategies' subsets. Plots use matplotlib's Agg canvas directly (no pyplot state, no display
needed).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from paser.common.io import write_atomic
from paser.pipelines.analysis.accounting import REFERENCE_STRATEGY, compute_table, run_shared_cost
from paser.pipelines.analysis.metrics import (
    gap_metrics,
    gap_notes,
    results_table,
    summary_table,
    versus_random_table,
)
from paser.pipelines.analysis.purity import MAX_HEATMAP_LABELS, ClusterPurity, cluster_purity, draw_confusion
from paser.pipelines.analysis.reader import RunError, RunReader, as_float, format_budget, load_run
from paser.pipelines.analysis.selections import cds_vs_gain, cluster_budgets, overlap, picks
from paser.pipelines.analysis.stats import EXACT_SIGN_FLIPS, RESAMPLES
from paser.pipelines.analysis.uncertainty import BASELINE_STRATEGY, VERDICT_RULE
from paser.pipelines.layout import RECOVERY_SEPARATOR, RunLayout

REPORT_FILES = RunLayout(".").report_files.name  # linked from report.md, relative to it
MISSING = "–"
MAX_MAP_POINTS = 20_000  # the corpus map draws a fixed random sample beyond this many rows
# Config keys shown in the run summary (dotted paths into config.yaml), after the models (`_model_items`).
CONFIG_SUMMARY_KEYS = (
    ("corpus", "corpus.path"),
    ("recovery objective", "recovery.objective"),
    ("evaluation tasks", "evaluation.tasks"),
    ("held-out rows", "evaluation.heldout_rows"),
)
_CSS = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
"""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    name: str  # file name in report_files/, e.g. "corpus_map.png"
    png: bytes
    caption: str


Block = Heading | Paragraph | Bullets | Table | Figure


def write_report(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Write report.md, its plots in report_files/, and a self-contained report.html for the run at `run_dir`
    into `out_dir` (default: the run directory). Each file is written atomically. Returns (report.md,
    report.html). Refuses (RunError) a folder that is not a run; missing artifacts are listed in the report.
    """
    run = load_run(run_dir)
    out = RunLayout(out_dir if out_dir is not None else run.path)
    blocks = build_report(run)
    for block in blocks:
        if isinstance(block, Figure):
            write_atomic(out.report_files / block.name, lambda path, png=block.png: path.write_bytes(png))
    markdown_path = write_atomic(out.report_markdown, lambda path: path.write_text(render_markdown(blocks)))
    title = f"paser run report: {run.path.name}"
    html_path = write_atomic(out.report_html, lambda path: path.write_text(render_html(blocks, title)))
    return markdown_path, html_path


def build_report(run: RunReader) -> list[Block]:
    """The report's content as blocks, in order."""
    blocks: list[Block] = [Heading(1, f"paser run report: {run.path.name}"), Paragraph(f"Run directory: {run.path}")]
    blocks += _run_section(run)
    missing = run.missing()
    if missing:
        blocks += [Heading(2, f"Missing artifacts ({len(missing)})"), Bullets(tuple(missing))]
    blocks += _results_section(run)
    blocks += _uncertainty_section(run)
    blocks += _combos_section(run)
    blocks += _compute_section(run)
    blocks += _sweep_section(run)
    blocks += _picks_section(run)
    blocks += _gain_section(run)
    blocks += _clusters_section(run)
    blocks += _overlap_section(run)
    return blocks


# ---- sections ---------------------------------------------------------------------------------------------


def _model_items(config: dict[str, Any]) -> list[str]:
    """The original model, and the pruned one: the folder given, or how this run pruned the original (the
    settings given; those left unset are not listed)."""
    models = config.get("models") or {}
    items = [f"original model: {_config_value(config, 'models.original')}"]
    prune = models.get("prune")
    if models.get("pruned") is None and isinstance(prune, dict):
        settings = ", ".join(f"{key}={value}" for key, value in prune.items() if value is not None)
        return [*items, f"pruned model: the original pruned by this run ({settings})"]
    return [*items, f"pruned model: {_config_value(config, 'models.pruned')}"]


def _run_section(run: RunReader) -> list[Block]:
    items = _model_items(run.config)
    items += [f"{label}: {_config_value(run.config, key)}" for label, key in CONFIG_SUMMARY_KEYS]
    if run.config.get("evaluation", {}).get("heldout"):
        items.append(f"held-out sets: {_config_value(run.config, 'evaluation.heldout')}")
    corpus_json = run.layout.shared.corpus_record
    if corpus_json.is_file():
        corpus = json.loads(corpus_json.read_text())
        stats = corpus.get("stats", {})
        items.append(
            f"corpus source: {corpus.get('source')} ({stats.get('rows_valid', MISSING)} valid of "
            f"{stats.get('rows_read', MISSING)} rows read)"
        )
    else:
        items.append("corpus source: shared/corpus.json missing")
    combos = run.combos()
    budget_rows = combos.groupby("budget", sort=False)["budget_rows"].first()
    budgets = ", ".join(
        f"{format_budget(budget)} ({_format_count(budget_rows.get(budget))} rows)" for budget in run.budgets
    )
    items += [
        f"strategies: {', '.join(run.strategies)}",
        f"budgets: {budgets}",
        f"seeds: {', '.join(str(seed) for seed in run.seeds)}",
        *_variant_items(run),
        f"metrics: {', '.join(run.metrics)}",
        f"combos: {len(combos)} ({int(combos['has_metrics'].sum())} evaluated)",
    ]
    return [Heading(2, "Run"), Bullets(tuple(items))]


def _variant_items(run: RunReader) -> list[str]:
    """The run section's line on the recovery variants (config.yaml's `recovery.variants`); none without."""
    variants = (run.config.get("recovery") or {}).get("variants") or {}
    if not variants:
        return []
    described = [
        f"{name} ({', '.join(f'{key}={value}' for key, value in settings.items()) or 'the section as it is'})"
        for name, settings in variants.items()
    ]
    return [
        f"recovery variants, each trained on the same selections and compared within itself ({RECOVERY_SEPARATOR} "
        f"after the strategy): {'; '.join(described)}"
    ]


def _results_section(run: RunReader) -> list[Block]:
    table = _with_variant(results_table(run))
    per_category = run.results.get("category_metrics", [])
    metrics = [metric for metric in run.metrics if metric not in per_category]
    with_gap = [metric for metric in gap_metrics(run) if metric not in per_category]
    header = (
        "strategy",
        "budget",
        "rows",
        "seeds",
        *metrics,
        *(f"{metric} gap recovered" for metric in with_gap),
    )
    rows = []
    category_rows = []
    for row in table.to_dict("records"):
        budget = MISSING if _is_missing(row["budget"]) else format_budget(row["budget"])
        cells = [row["strategy"], budget, _format_count(row["budget_rows"]), _format_count(row["seeds"])]
        category_rows.append(tuple(cells + [_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in per_category]))
        cells += [_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"]) for metric in metrics]
        cells += [_percent(row[f"{metric}_gap_recovered"]) for metric in with_gap]
        rows.append(tuple(cells))
    lower = [metric for metric in metrics if run.results["lower_is_better"].get(metric)]
    legend = (
        "Cells are mean ± sample standard deviation over seeds (the mean alone with one seed; "
        f"{MISSING} where missing). Gap recovered = (recovered − pruned) / (original − pruned), the same "
        "formula for every metric: 100% matches the original model, 0% is no better than the pruned one, "
        f"negative is worse. Lower is better for: {', '.join(lower) if lower else 'none'}."
    )
    dev, test = run.results.get("dev_metrics", []), run.results.get("test_metrics", [])
    if dev:
        legend += (
            f" Choices are made on dev only ({', '.join(dev)}); {', '.join(test) or 'the test half'} and every other "
            "column are reported, never chosen on (paser.pipelines.choose)."
        )
    blocks: list[Block] = [Heading(2, "Results"), Table(header, tuple(rows)), Paragraph(legend)]
    notes = gap_notes(run)
    if notes:
        blocks.append(Bullets(tuple(notes)))
    if per_category:
        blocks += [
            Heading(3, "Held-out NLL per category"),
            Table((*header[:4], *per_category), tuple(category_rows)),
            Paragraph(
                "Response NLL (nats per token, lower is better) of each category of a labelled held-out set, "
                "mean ± sample standard deviation over seeds."
            ),
        ]
    return blocks


def _combos_section(run: RunReader) -> list[Block]:
    records = {record["combo"]: record for record in run.results["combos"]}
    rows = []
    for combo in run.combos().to_dict("records"):
        record = records.get(combo["combo"], {})
        selected = MISSING
        if combo["has_selection"]:
            with run.selection_path(combo["combo"]).open(encoding="utf-8") as stream:
                selected = str(sum(1 for line in stream if line.strip()))
        seconds = record.get("train_seconds")
        rows.append(
            (
                combo["combo"],
                combo["strategy"],
                format_budget(combo["budget"]),
                _format_count(combo["budget_rows"]),
                str(combo["seed"]),
                selected,
                "yes" if combo["has_metrics"] else "missing",
                MISSING if seconds is None else f"{seconds:.1f}",
            )
        )
    header = ("combo", "strategy", "budget", "budget rows", "seed", "selected rows", "evaluated", "train seconds")
    return [Heading(2, "Combos"), Table(header, tuple(rows))]


def _clusters_section(run: RunReader) -> list[Block]:
    seed = run.seeds[0]
    blocks: list[Block] = [Heading(2, f"Clusters (seed {seed})")]
    try:
        clusters = run.clusters(seed)
    except RunError as error:
        return [*blocks, Paragraph(f"Not shown: {error}")]
    blocks.append(Heading(3, "Corpus map"))
    if {"coordinate_0", "coordinate_1"} <= set(clusters.columns):
        blocks.append(_corpus_map(clusters, seed))
    else:
        blocks.append(
            Paragraph(
                f"No corpus map: shared/clusters-s{seed}.parquet has no coordinate_0/coordinate_1 columns "
                "(the clustering method gives no 2-D coordinates, e.g. kmeans)."
            )
        )
    blocks.append(Heading(3, "Budget per cluster"))
    allocating = False
    for strategy in run.strategies:
        budgets = cluster_budgets(run, strategy, seed)
        if budgets["budget_allocated"].notna().any():
            allocating = True
            blocks.append(_budget_bars(budgets, strategy, seed))
    if not allocating:
        blocks.append(Paragraph("No strategy of this run allocates a budget per cluster."))
    blocks += [Heading(3, "CDS per cluster"), _cds_boxes(clusters, seed)]
    blocks += _purity_blocks(run, clusters, seed)
    return blocks


def _purity_blocks(run: RunReader, clusters: pd.DataFrame, seed: int) -> list[Block]:
    """Cluster purity against the run's label field (`RunReader.label_field`); nothing without one."""
    field = run.label_field()
    if field is None:
        return []
    heading = Heading(3, f"Cluster purity against {field}")
    labels = clusters["id"].map(run.labels(field))
    labelled = clusters[labels.notna()]
    if labelled.empty:
        return [heading, Paragraph(f"No pool row has a {field!r} field in its raw row: no purity to show.")]
    purity = cluster_purity(labelled["cluster"], labels[labels.notna()])
    unlabelled = len(clusters) - len(labelled)
    left_out = f"; {unlabelled:,} pool rows without a {field} are left out" if unlabelled else ""
    summary = (
        f"Overall purity {purity.purity:.3f} (the share of rows carrying their cluster's majority {field}), "
        f"NMI {purity.nmi:.3f}, ARI {purity.ari:.3f}, over {purity.rows:,} pool rows{left_out}."
    )
    rows = tuple(
        (str(cluster), str(int(row["size"])), str(row["majority_label"]), f"{row['purity']:.3f}")
        for cluster, row in purity.per_cluster.iterrows()
    )
    table = Table(("cluster", "size", f"majority {field}", "purity"), rows)
    return [heading, Paragraph(summary), _purity_heatmap(purity, field, seed), table]


def _overlap_section(run: RunReader) -> list[Block]:
    seed = run.seeds[0]
    heading = Heading(2, f"Overlap between strategies (seed {seed})")
    if len(run.strategies) < 2:
        return [heading, Paragraph("One strategy only: no overlap to show.")]
    overlaps = {budget: overlap(run, budget, seed) for budget in run.budgets}
    return [heading, _overlap_heatmaps(overlaps, seed)]


def _uncertainty_section(run: RunReader) -> list[Block]:
    """Per strategy × budget × metric: mean ± sd and the t-interval over seeds, then the paired difference from
    random with its seed-level p-values (paired t, sign-flip) and its bootstrap interval; a forest plot of those
    differences."""
    summary = _with_variant(summary_table(run))
    versus = _with_variant(versus_random_table(run))
    compared = {(row["strategy"], row["budget"], row["metric"]): row for row in versus.to_dict("records")}
    rows = []
    for row in summary.to_dict("records"):
        decimals = _decimals(row["mean"]) if not _is_missing(row["mean"]) else 4
        cells = [row["strategy"], format_budget(row["budget"]), row["metric"], str(row["seeds"])]
        cells += [_mean_std(row["mean"], row["sd"]), _interval(row["lo"], row["hi"], decimals)]
        difference = compared.get((row["strategy"], row["budget"], row["metric"]))
        if difference is None:
            cells += [MISSING] * 6
        else:
            value = difference["difference"]
            cells += [
                MISSING if _is_missing(value) else f"{value:+.{decimals}f}",
                _p_value(difference["t_p"]),
                _p_value(difference["permutation_p"]),
                _interval(difference["lo"], difference["hi"], decimals),
                _resampled(difference),
                # None in results.json, NaN once pandas mixes it with text: no verdict with fewer than two pairs.
                MISSING if _is_missing(difference["verdict"]) else difference["verdict"],
            ]
        rows.append(tuple(cells))
    header = ("strategy", "budget", "metric", "seeds", "mean ± sd", "95% t-interval")
    header += (f"− {BASELINE_STRATEGY}", "paired t p", "sign-flip p", "95% bootstrap interval", "resampled", "verdict")
    legend = (
        "mean ± sd: over seeds (sample standard deviation). 95% t-interval: the Student-t interval of the mean "
        "over seeds, mean ± t·sd/√n: it covers run-to-run variation (selection, clustering, training) with the "
        f"test items held fixed, and is missing with one seed. − {BASELINE_STRATEGY}: the mean over seeds of "
        f"(strategy − {BASELINE_STRATEGY}) at the same budget, each seed paired with {BASELINE_STRATEGY}'s same "
        f"seed. Paired t p and sign-flip p: two-sided p-values of that difference over the seeds (Student's "
        f"paired t-test; the sign-flip permutation test, exact over every sign pattern up to {EXACT_SIGN_FLIPS} "
        "seeds, whose smallest p is 2/2^n: 0.25 with three seeds, 0.0625 with five). The verdict rests on these "
        "two: "
        f"{VERDICT_RULE}. 95% bootstrap interval: a secondary interval, the percentile bootstrap "
        f"({RESAMPLES} seeded resamples) over seeds and the test items (questions, held-out rows, perplexity "
        "windows, generated answers, drawn alike for both sides) where both evaluations kept per-item values "
        "(eval/items.npz); seeds alone otherwise, which with two or three seeds is crude and with one gives no "
        "interval."
    )
    blocks: list[Block] = [Heading(2, "Uncertainty"), Table(header, tuple(rows)), Paragraph(legend)]
    if BASELINE_STRATEGY not in run.strategies:
        return [*blocks, Paragraph(f"No {BASELINE_STRATEGY} strategy in this run: no paired differences.")]
    category_metrics = set(run.results.get("category_metrics", []))
    shown = [
        metric
        for metric in run.metrics
        if metric not in category_metrics and versus.loc[versus["metric"] == metric, "difference"].notna().any()
    ]
    if shown:
        blocks.append(_forest_plot(versus, shown))
    return blocks


def _compute_section(run: RunReader) -> list[Block]:
    """Per combo: rows, tokens and seconds of training, as a fraction of `full`'s; the shared stages once."""
    compute = compute_table(run)
    rows = []
    for row in compute.to_dict("records"):
        rows.append(
            (
                row["combo"],
                _format_count(row["rows_trained"]),
                MISSING if _is_missing(row["epochs"]) else f"{row['epochs']:g}",
                *(_thousands(row[name]) for name in ("prompt_tokens", "response_tokens", "train_tokens")),
                _flops(row["flops"]),
                *(_seconds(row[name]) for name in ("train_seconds", "recover_seconds", "select_seconds")),
                _percent(row["tokens_fraction"]),
                _percent(row["seconds_fraction"]),
                _percent(row["flops_fraction"]),
            )
        )
    header = ("combo", "rows trained", "epochs", "prompt tokens", "response tokens", "tokens trained", "FLOPs")
    header += ("train s", "recover stage s", "select s", f"tokens vs {REFERENCE_STRATEGY}")
    header += (f"seconds vs {REFERENCE_STRATEGY}", f"FLOPs vs {REFERENCE_STRATEGY}")
    reference = (
        f"vs {REFERENCE_STRATEGY}: tokens trained and train seconds as a share of the mean over the "
        f"{REFERENCE_STRATEGY} combos (the whole pool)."
        if compute["tokens_fraction"].notna().any()
        else f"No {REFERENCE_STRATEGY} combo trained in this run: no shares of the whole pool's cost."
    )
    legend = (
        "Tokens trained: the subset as tokenised for SFT (prompt, response = the loss tokens) times the epochs "
        "trained. FLOPs: the recovery's estimated compute (training, and a teacher's, reference's or generation's "
        "forwards; `paser.recovery.flops`). Train s: the trainer's wall time; recover stage s: the whole stage "
        f"(load, train, merge, save); select s: the combo's own selection. {reference}"
    )
    shared = run_shared_cost(run)
    stages = [f"{name}: {_seconds(seconds)} s" for name, seconds in shared["stages"].items()]
    selection = shared["selection_seconds"]
    stages.append(
        f"selection (scoring + embedding + clustering): {_seconds(selection)} s, once for all {len(compute)} combos"
    )
    if shared.get("scoring_flops") is not None:
        stages.append(
            f"scoring compute: {_flops(shared['scoring_flops'])} FLOPs (estimated: both models forward over "
            f"{_thousands(shared['scoring_tokens'])} tokens)"
        )
    return [
        Heading(2, "Compute"),
        Table(header, tuple(rows)),
        Paragraph(legend),
        Heading(3, "Shared stages (run once)"),
        Bullets(tuple(stages)),
    ]


def _sweep_table(run: RunReader) -> tuple[pd.DataFrame, list[str], str]:
    """Per (strategy, recovery variant, budget) of a budget sweep, from the results table: seeds, the mean FLOPs
    and tokens trained (the compute table's), and each main metric's mean and sd over seeds, as the share of the
    pruning gap closed where both baselines have the metric (a fraction: the gap is linear in the metric, so the
    sd is the metric's over the gap's size; the metric itself otherwise). Returns (table, its metrics, the x
    column: `flops`, or `train_tokens` where no combo recorded FLOPs)."""
    keys = ["strategy", *run.recovery_columns, "budget"]
    results = results_table(run)
    table = results[results["strategy"].isin(run.strategies)][[*keys, "seeds"]].copy()
    compute = compute_table(run).groupby(keys, sort=False, dropna=False)[["flops", "train_tokens"]].mean()
    table = table.merge(compute, left_on=keys, right_index=True, how="left")
    if not run.recovery_columns:
        table["recovery"] = None
    baselines = run.results["baselines"]
    with_gap = gap_metrics(run)
    metrics = main_metrics(run.metrics)
    for metric in metrics:
        mean, std = results[f"{metric}_mean"], results[f"{metric}_std"]
        if metric in with_gap:
            original, pruned = (as_float(baselines[name][metric]) for name in ("original", "pruned"))
            mean, std = results[f"{metric}_gap_recovered"], std / abs(original - pruned)
        table[f"{metric}_mean"], table[f"{metric}_std"] = mean, std
    x = "flops" if table["flops"].notna().any() else "train_tokens"
    return table.reset_index(drop=True), [metric for metric in metrics if metric in with_gap] or metrics, x


def _sweep_section(run: RunReader) -> list[Block]:
    """Where the run sweeps budgets: each strategy's (and recovery variant's) main metrics against the compute
    spent, as a table and a plot (mean ± sd over seeds)."""
    if len(run.budgets) < 2:
        return []
    table, metrics, x = _sweep_table(run)
    gaps = set(metrics) & set(gap_metrics(run))
    header = ("strategy", *(("recovery",) if run.recovery_columns else ()), "budget", "seeds", "FLOPs", "tokens")
    header += tuple(f"{metric} {'gap closed' if metric in gaps else ''}".strip() for metric in metrics)
    rows = []
    for row in table.to_dict("records"):
        cells = (row["strategy"], *((str(row["recovery"]),) if run.recovery_columns else ()))
        cells += (format_budget(row["budget"]), str(row["seeds"]), _flops(row["flops"]))
        cells += (_thousands(row["train_tokens"]),)
        for metric in metrics:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            if metric in gaps:
                cells += (_percent(mean) if _is_missing(std) else f"{_percent(mean)} ± {100 * std:.1f}",)
            else:
                cells += (_mean_std(mean, std),)
        rows.append(cells)
    legend = (
        "Each budget's mean over seeds (± the sample sd); FLOPs and tokens: the mean estimated recovery compute "
        "and tokens trained of its combos (see Compute). Gap closed: (pruned − recovered) / (pruned − original) "
        "of each seed's value. The plot draws the same points against "
        + ("FLOPs" if x == "flops" else "tokens trained (no combo recorded FLOPs)")
        + ", log scale."
    )
    return [
        Heading(2, "Budget sweep"),
        Table(header, tuple(rows)),
        Paragraph(legend),
        _sweep_plot(table, metrics, gaps, x),
    ]


def _picks_section(run: RunReader) -> list[Block]:
    """What each strategy's subsets are made of against the pool, averaged over seeds, and their response lengths."""
    chosen = picks(run)
    if chosen.empty:
        return []
    numbers = ["rows", "tokens", "mean_prompt_tokens", "mean_response_tokens", "mean_cds", "cds_rank"]
    numbers += ["clusters_covered", "cluster_shift", "ccg_rejected"]
    budgets = chosen["budget"].map(lambda budget: "" if _is_missing(budget) else format_budget(budget))
    grouped = chosen.assign(budget=budgets).groupby(["strategy", "budget"], sort=False, dropna=False)
    rows = []
    for (strategy, budget), group in grouped:
        means = group[numbers].mean()
        rows.append(
            (
                strategy,
                budget,
                str(len(group)),
                *(_thousands(round(means[name])) for name in ("rows", "tokens")),
                *(f"{means[name]:.1f}" for name in ("mean_prompt_tokens", "mean_response_tokens")),
                f"{means['mean_cds']:.4f}",
                f"{means['cds_rank']:.2f}",
                _mean_count(means["clusters_covered"]),
                f"{means['cluster_shift']:.2f}",
                MISSING if _is_missing(means["ccg_rejected"]) else f"{means['ccg_rejected']:.0f}",
            )
        )
    header = ("strategy", "budget", "seeds", "rows", "tokens", "prompt tokens", "response tokens", "mean CDS")
    header += ("CDS rank", "clusters", "cluster shift", "CCG rejected")
    legend = (
        "Means over seeds. Tokens: prompt + response as the scorer counted them; prompt/response tokens: means "
        "per row. CDS rank: the mean percentile of the rows' CDS in the pool (0.50 for a uniform draw). Cluster "
        "shift: total variation distance between the subset's cluster mix and the pool's (0 = the pool's mix). "
        "CCG rejected: rows the consistency filter turned away."
    )
    return [
        Heading(2, "What each strategy picks"),
        Table(header, tuple(rows)),
        Paragraph(legend),
        _response_lengths(run, chosen),
    ]


def _gain_section(run: RunReader) -> list[Block]:
    """CDS vs recovery gain per cluster, where the run trained on single clusters (strategy single_cluster)."""
    blocks: list[Block] = []
    for metric in main_metrics(run.metrics):
        for recovery in run.recoveries:
            blocks += _gain_blocks(run, metric, recovery, first=not blocks)
    return blocks


def _gain_blocks(run: RunReader, metric: str, recovery: str | None, *, first: bool) -> list[Block]:
    """One metric's (and recovery variant's) CDS-vs-gain table and verdict; nothing where no combo trained on a
    single cluster."""
    table, rho, p_value = cds_vs_gain(run, metric, recovery)
    if table.empty:
        return []
    blocks: list[Block] = [Heading(2, "Does the degradation signal point where recovery pays?")] if first else []
    rows = tuple(
        (
            str(row.seed),
            str(row.cluster),
            str(row.size),
            f"{row.mean_cds:.4f}",
            f"{getattr(row, metric):.4f}",
            f"{row.gain:+.4f}",
        )
        for row in table.itertuples(index=False)
    )
    blocks.append(Table(("seed", "cluster", "size", "mean CDS", metric, "gain"), rows))
    verdict = "fewer than three clusters" if math.isnan(rho) else f"Spearman rho = {rho:+.2f} (p = {p_value:.2f})"
    trained = "" if recovery is None else f" (recovery variant {recovery})"
    blocks.append(
        Paragraph(f"{metric}{trained}: gain = improvement over the pruned model; mean CDS vs gain: {verdict}.")
    )
    return blocks


# ---- plots ------------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> MplFigure:
    figure = MplFigure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: MplFigure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _corpus_map(clusters: pd.DataFrame, seed: int) -> Figure:
    shown = clusters
    note = ""
    if len(clusters) > MAX_MAP_POINTS:
        shown = clusters.sample(n=MAX_MAP_POINTS, random_state=0)
        note = f" A random sample of {MAX_MAP_POINTS:,} of the {len(clusters):,} pool rows is drawn."
    figure = _new_figure(12, 5)
    by_cluster, by_cds = figure.subplots(1, 2)
    points = by_cluster.scatter(shown["coordinate_0"], shown["coordinate_1"], c=shown["cluster"], cmap="tab20", s=6)
    by_cluster.set_title("by cluster")
    labels = sorted(int(label) for label in shown["cluster"].unique())
    if len(labels) <= 20:
        handles, _ = points.legend_elements(num=labels)
        by_cluster.legend(handles, labels, title="cluster", fontsize="small", loc="best")
    shaded = by_cds.scatter(shown["coordinate_0"], shown["coordinate_1"], c=shown["cds"], cmap="viridis", s=6)
    by_cds.set_title("by CDS")
    figure.colorbar(shaded, ax=by_cds, label="CDS (nats)")
    for axis in (by_cluster, by_cds):
        axis.set_xlabel("PC 1")
        axis.set_ylabel("PC 2")
    caption = f"The pool's rows on a 2-D PCA of their embeddings, coloured by cluster (seed {seed}) and by CDS.{note}"
    return Figure("corpus_map.png", _png(figure), caption)


def _budget_bars(budgets: pd.DataFrame, strategy: str, seed: int) -> Figure:
    levels = list(dict.fromkeys(budgets["budget"]))
    figure = _new_figure(10, 3 * len(levels))
    axes = np.atleast_1d(figure.subplots(len(levels), 1, squeeze=False)[:, 0])
    for axis, budget in zip(axes, levels, strict=True):
        rows = budgets[budgets["budget"] == budget]
        positions = np.arange(len(rows))
        axis.bar(positions - 0.2, rows["budget_allocated"], width=0.4, label="allocated")
        axis.bar(positions + 0.2, rows["selected"], width=0.4, label="selected")
        axis.set_xticks(positions, [str(int(label)) for label in rows["cluster"]])
        unit = rows["unit"].iloc[0]
        axis.set_ylabel(unit)
        resolved = f" ({_format_count(rows['budget_rows'].iloc[0])} rows)" if unit == "rows" else ""
        axis.set_title(f"{strategy}, budget {format_budget(budget)}{resolved}")
        axis.legend(fontsize="small")
    axes[-1].set_xlabel("cluster")
    caption = (
        f"{strategy}: rows allocated to each cluster and rows selected from it, per budget (seed {seed}; tokens "
        "for a token budget); a missing bar is a missing selection. Allocated is the strategy's first share of "
        "the budget; what a cluster could not give (rows the CCG turned away, or a cluster too small) is "
        "redistributed over the clusters that still had rows, so a cluster can end below its allocation and "
        "another above it, the selected rows adding up to the budget (at most the budget, in tokens)."
    )
    return Figure(f"budget_per_cluster_{strategy}.png", _png(figure), caption)


def _cds_boxes(clusters: pd.DataFrame, seed: int) -> Figure:
    labels = sorted(int(label) for label in clusters["cluster"].unique())
    figure = _new_figure(max(6, 0.5 * len(labels) + 2), 4)
    axis = figure.subplots()
    axis.boxplot([clusters.loc[clusters["cluster"] == label, "cds"] for label in labels], showfliers=False)
    axis.set_xticks(np.arange(1, len(labels) + 1), [str(label) for label in labels])
    axis.set_xlabel("cluster")
    axis.set_ylabel("CDS (nats)")
    caption = f"CDS of the pool's rows per cluster (seed {seed}; boxes: quartiles, whiskers: 1.5 IQR, no fliers)."
    return Figure("cds_per_cluster.png", _png(figure), caption)


def _response_lengths(run: RunReader, chosen: pd.DataFrame) -> Figure:
    """Response tokens of the rows each strategy picked (all seeds pooled), beside the pool's."""
    scores = run.scores().set_index("id")["response_tokens"]
    groups: dict[str, list[float]] = {}
    for row in chosen.itertuples(index=False):
        ids = run.clusters(row.seed)["id"] if row.strategy == "pool" else run.selection(row.combo)["id"]
        label = "pool" if row.strategy == "pool" else f"{row.strategy} {format_budget(row.budget)}"
        groups.setdefault(label, []).extend(scores.loc[ids].tolist())
    labels = list(groups)
    figure = _new_figure(max(6, 0.9 * len(labels) + 2), 4)
    axis = figure.subplots()
    axis.boxplot([groups[label] for label in labels], showfliers=False)
    axis.set_xticks(np.arange(1, len(labels) + 1), labels, rotation=30, ha="right")
    axis.set_ylabel("response tokens")
    caption = "Response tokens of the selected rows per strategy and budget, all seeds pooled, and of the pool."
    return Figure("response_tokens.png", _png(figure), caption)


def _purity_heatmap(purity: ClusterPurity, field: str, seed: int) -> Figure:
    clusters, labels = purity.confusion.shape
    figure = _new_figure(max(5, 0.45 * min(labels, MAX_HEATMAP_LABELS) + 3), max(3.5, 0.3 * clusters + 2))
    axis = figure.subplots()
    image = draw_confusion(axis, purity)
    axis.set_xlabel(field)
    figure.colorbar(image, ax=axis, label="share of the cluster's rows")
    caption = (
        f"Each cluster's rows (seed {seed}) by their {field}: the share of the cluster carrying each {field} "
        "(rows sum to 1)."
    )
    return Figure("cluster_purity.png", _png(figure), caption)


def _overlap_heatmaps(overlaps: dict[float, pd.DataFrame], seed: int) -> Figure:
    size = len(next(iter(overlaps.values())))
    figure = _new_figure(max(4, 0.9 * size + 2) * len(overlaps), max(3.5, 0.7 * size + 1.5))
    axes = figure.subplots(1, len(overlaps), squeeze=False)[0]
    for axis, (budget, table) in zip(axes, overlaps.items(), strict=True):
        image = axis.imshow(table.to_numpy(dtype=float), vmin=0, vmax=1, cmap="Blues")
        names = list(table.columns)
        axis.set_xticks(range(size), names, rotation=45, ha="right")
        axis.set_yticks(range(size), names)
        for row in range(size):
            for column in range(size):
                value = table.iloc[row, column]
                text = MISSING if _is_missing(value) else f"{value:.2f}"
                dark = not _is_missing(value) and value >= 0.6
                axis.text(column, row, text, ha="center", va="center", color="white" if dark else "black")
        axis.set_title(f"budget {format_budget(budget)}")
    figure.colorbar(image, ax=list(axes), label="Jaccard overlap")
    caption = f"Jaccard overlap |A ∩ B| / |A ∪ B| of the strategies' selected rows, per budget (seed {seed})."
    return Figure("strategy_overlap.png", _png(figure), caption)


def _forest_plot(versus: pd.DataFrame, metrics: list[str]) -> Figure:
    comparisons = list(dict.fromkeys(zip(versus["strategy"], versus["budget"], strict=True)))
    labels = [f"{strategy} @ {format_budget(budget)}" for strategy, budget in comparisons]
    positions = np.arange(len(comparisons))[::-1]  # the first comparison on top
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure = _new_figure(4.5 * columns, (0.3 * len(comparisons) + 1.3) * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    colors = {"better": "tab:green", "worse": "tab:red"}
    for axis, metric in zip(axes, metrics, strict=False):
        chosen = versus[versus["metric"] == metric].set_index(["strategy", "budget"]).reindex(comparisons)
        for position, row in zip(positions, chosen.to_dict("records"), strict=True):
            if _is_missing(row["difference"]):
                continue
            color = colors.get(row["verdict"], "tab:gray")
            if not _is_missing(row["lo"]):
                axis.plot([row["lo"], row["hi"]], [position, position], color=color, linewidth=2)
            axis.plot(row["difference"], position, "o", color=color)
        axis.axvline(0, color="black", linewidth=0.8, linestyle="--")
        axis.set_yticks(positions, labels)
        direction = "lower" if chosen["lower_is_better"].dropna().any() else "higher"
        axis.set_title(f"{metric} ({direction} is better)", fontsize="small")
    for axis in axes[len(metrics) :]:
        axis.set_visible(False)
    caption = (
        f"Strategy − {BASELINE_STRATEGY} per metric, strategy and budget: the mean paired difference over seeds "
        "(dot) and its 95% bootstrap interval (bar); green where the verdict (the seed-level tests, see the "
        "table) is better, red where it is worse, grey otherwise. Per-category held-out metrics are in the "
        "table only."
    )
    return Figure(f"versus_{BASELINE_STRATEGY}.png", _png(figure), caption)


def _sweep_plot(table: pd.DataFrame, metrics: list[str], gaps: set[str], x: str) -> Figure:
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure = _new_figure(4.5 * columns, 3.4 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    lines = list(dict.fromkeys(zip(table["strategy"], table["recovery"], strict=True)))
    for axis, metric in zip(axes, metrics, strict=False):
        scale = 100.0 if metric in gaps else 1.0
        for strategy, recovery in lines:
            same = table["recovery"].isna() if recovery is None else table["recovery"] == recovery
            chosen = table[(table["strategy"] == strategy) & same]
            chosen = chosen[chosen[x].notna() & chosen[f"{metric}_mean"].notna()].sort_values(x)
            if chosen.empty:
                continue
            label = strategy if recovery is None else f"{strategy} ({recovery})"
            errors = chosen[f"{metric}_std"].fillna(0.0) * scale
            axis.errorbar(chosen[x], chosen[f"{metric}_mean"] * scale, yerr=errors, marker="o", capsize=3, label=label)
        axis.set_xscale("log")
        axis.set_xlabel("recovery FLOPs" if x == "flops" else "tokens trained")
        axis.set_ylabel("% of the pruning gap closed" if metric in gaps else metric)
        axis.set_title(metric, fontsize="small")
        if axis.lines:
            axis.legend(fontsize="x-small")
    for axis in axes[len(metrics) :]:
        axis.set_visible(False)
    caption = "Budget sweep: each strategy's mean over seeds (± sd) at each budget against the compute it trained with."
    return Figure("budget_sweep.png", _png(figure), caption)


# ---- rendering --------------------------------------------------------------------------------------------


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown; figures link to report_files/NAME relative to report.md."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = [_markdown_row(block.header), "|" + "|".join("---" for _ in block.header) + "|"]
            lines += [_markdown_row(row) for row in block.rows]
            parts.append("\n".join(lines))
        else:
            parts.append(f"![{Path(block.name).stem}]({REPORT_FILES}/{block.name})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


def _markdown_row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render_html(blocks: list[Block], title: str) -> str:
    """The blocks as one HTML page: inline CSS, figures as base64 PNG data URIs, nothing fetched."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            caption = html.escape(block.caption)
            parts.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


# ---- terminal summary -------------------------------------------------------------------------------------


def main_metrics(metrics: list[str]) -> list[str]:
    """The metrics a one-screen summary shows: the corpus perplexities, the average accuracy and each
    held-out set's response NLL (not per category), in the run's order."""
    return [
        metric
        for metric in metrics
        if metric == "avg_acc"
        or (metric.startswith("heldout") and metric.endswith("_nll"))
        or (metric.endswith("_ppl") and not metric.startswith("heldout"))
    ]


def format_results(run_dir: str | os.PathLike[str]) -> str:
    """A fixed-width summary of the run's results for the terminal: one line per strategy × budget and per
    baseline (strategy, budget, rows, seeds, the main metrics as mean ± std, their gap recovered), then the
    count of missing artifacts and the notes. Refuses (RunError) a folder that is not a run."""
    run = load_run(run_dir)
    table = _with_variant(results_table(run))
    per_category = run.results.get("category_metrics", [])
    shown = main_metrics([metric for metric in run.metrics if metric not in per_category])
    gaps = [metric for metric in shown if metric in gap_metrics(run)]
    header = ["strategy", "budget", "rows", "seeds", *shown, *(f"{metric} gap" for metric in gaps)]
    lines = []
    for row in table.to_dict("records"):
        budget = "" if _is_missing(row["budget"]) else format_budget(row["budget"])
        rows = "" if _is_missing(row["budget_rows"]) else str(int(row["budget_rows"]))
        seeds = "" if _is_missing(row["seeds"]) else str(int(row["seeds"]))
        cells = [row["strategy"], budget, rows, seeds]
        cells += [_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"]) for metric in shown]
        cells += [_percent(row[f"{metric}_gap_recovered"]) for metric in gaps]
        lines.append(cells)
    widths = [max(len(header[column]), *(len(line[column]) for line in lines)) for column in range(len(header))]

    def fixed(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    text = [fixed(header), fixed(["-" * width for width in widths]), *(fixed(line) for line in lines)]
    missing = run.missing()
    if missing:
        text.append(f"{len(missing)} missing artifact(s), e.g. {missing[0]} (all listed in report.md)")
    text += gap_notes(run)
    return "\n".join(text)


# ---- formatting -------------------------------------------------------------------------------------------


def _config_value(config: dict[str, Any], dotted: str) -> str:
    """The value at a dotted key of config.yaml as text; says so when the key is absent."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return f"not in config.yaml ({dotted})"
        value = value[part]
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items())
    return "none" if value is None else str(value)


def _with_variant(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with each row's recovery variant (column `recovery`, where the run has variants) folded into its
    strategy, "paser@kd", so the report's tables and plots tell the variants apart; `table` itself without."""
    if "recovery" not in table:
        return table
    variant = table["recovery"].map(lambda name: "" if _is_missing(name) else f"{RECOVERY_SEPARATOR}{name}")
    return table.assign(strategy=table["strategy"] + variant)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _format_count(value: Any) -> str:
    return MISSING if _is_missing(value) else str(int(value))


def _mean_count(value: float) -> str:
    """A mean of counts over seeds: whole as a count ("5"), else to one decimal ("4.5")."""
    return MISSING if _is_missing(value) else f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _decimals(value: float) -> int:
    """Decimals that show ~4 significant digits for the magnitudes of our metrics (accuracies, NLLs, ppl)."""
    magnitude = abs(value)
    return 1 if magnitude >= 100 else 2 if magnitude >= 10 else 4


def _mean_std(mean: float, std: float) -> str:
    if _is_missing(mean):
        return MISSING
    decimals = _decimals(mean)
    return f"{mean:.{decimals}f}" if _is_missing(std) else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _percent(fraction: float) -> str:
    return MISSING if _is_missing(fraction) else f"{100 * fraction:.1f}%"


def _interval(lo: float, hi: float, decimals: int) -> str:
    return MISSING if _is_missing(lo) or _is_missing(hi) else f"[{lo:.{decimals}f}, {hi:.{decimals}f}]"


def _p_value(p: Any) -> str:
    return MISSING if _is_missing(p) else f"{p:.3f}"


def _resampled(comparison: dict[str, Any]) -> str:
    """What a paired difference's bootstrap resampled, in words."""
    items = comparison["items"]
    return {
        "seeds+items": f"seeds + {_format_count(items)} items",
        "items": f"{_format_count(items)} items (1 seed)",
        "seeds": "seeds",
    }.get(comparison["bootstrap"], "none")


def _thousands(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{value:,.0f}"


def _flops(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{value:.3g}"


def _seconds(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{value:.1f}"
