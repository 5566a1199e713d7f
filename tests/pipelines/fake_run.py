"""A small run directory laid out as `paser run` writes it (every path from `paser.pipelines.layout.RunLayout`),
built without models: for tests of the readers of a run (pipelines/analysis/reader.py and the analyses,
pipelines/analysis/report.py, the notebook).

60 corpus rows `row00`..`row59`; rows 54-59 are held out, the other 54 form the pool, in 3 clusters
(cluster = row % 3, 18 rows each). A row's CDS is 0.1 · (cluster + 1) + 0.001 · row. Strategies paser and
random, budgets 0.1 (5 rows) and 0.2 (11 rows), seeds 0 and 1; the metric values are `COMBO_METRICS` and
`BASELINE_METRICS`. paser takes its allocation (`PASER_ALLOCATION`) of highest-CDS rows in each cluster;
random-b0.1-s0 shares 3 of its 5 rows with paser-b0.1-s0 (Jaccard 3/7).

With `labelled=True` each raw row also carries a `category` (`row_category`: the cluster's own, alpha for
cluster 0 and beta for clusters 1 and 2, except gamma on every fifth row) and a `dataset` (set0 / set1 by the
row's parity), as labelled instruction pools do.

Every finished evaluation keeps per-item values (eval/items.npz, `paser.recovery.items`) that give back its metrics
exactly (`item_values`): 4 WikiText-2 windows of 31 tokens, 50 BoolQ and 50 PIQA questions (the first
acc × 50 of a fixed order of the questions right), 6 held-out rows of 20 response tokens. Every combo's
recovery.json trains its selected rows for 2 epochs at 10 prompt + 30 response tokens a row, in
`train_seconds(rows)`; the manifest times the shared stages (`STAGE_SECONDS`). `full=True` adds the strategy
`full` (the whole 54-row pool at every budget and seed, metrics `FULL_METRICS`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from paser.pipelines.analysis.reader import combo_name
from paser.pipelines.layout import RunLayout, SelectFolder
from paser.recovery.flops import recovery_compute
from paser.selection.corpus import Sample
from paser.selection.store import write_corpus_store

N_ROWS = 60
HELDOUT_ROWS = range(54, 60)
N_CLUSTERS = 3
STRATEGIES = ("paser", "random")
BUDGETS = (0.1, 0.2)
BUDGET_ROWS = {0.1: 5, 0.2: 11}
SEEDS = (0, 1)
METRICS = ("wikitext2_ppl", "boolq_acc", "piqa_acc", "avg_acc", "heldout_nll", "heldout_ppl")
LOWER_IS_BETTER = {"wikitext2_ppl": True, "boolq_acc": False, "piqa_acc": False, "avg_acc": False}
LOWER_IS_BETTER |= {"heldout_nll": True, "heldout_ppl": True}
# boolq_acc is equal for the two baselines: its pruning gap is undefined.
BASELINE_METRICS = {
    "original": {"wikitext2_ppl": 20.0, "boolq_acc": 0.60, "piqa_acc": 0.70, "avg_acc": 0.65, "heldout_nll": 2.0},
    "pruned": {"wikitext2_ppl": 40.0, "boolq_acc": 0.60, "piqa_acc": 0.50, "avg_acc": 0.55, "heldout_nll": 3.0},
}
COMBO_METRICS = {
    "paser-b0.1-s0": {"wikitext2_ppl": 30.0, "boolq_acc": 0.60, "piqa_acc": 0.60, "avg_acc": 0.60, "heldout_nll": 2.5},
    "paser-b0.1-s1": {"wikitext2_ppl": 34.0, "boolq_acc": 0.62, "piqa_acc": 0.64, "avg_acc": 0.63, "heldout_nll": 2.7},
    "paser-b0.2-s0": {"wikitext2_ppl": 26.0, "boolq_acc": 0.60, "piqa_acc": 0.66, "avg_acc": 0.63, "heldout_nll": 2.3},
    "paser-b0.2-s1": {"wikitext2_ppl": 28.0, "boolq_acc": 0.60, "piqa_acc": 0.68, "avg_acc": 0.64, "heldout_nll": 2.4},
    "random-b0.1-s0": {"wikitext2_ppl": 38.0, "boolq_acc": 0.58, "piqa_acc": 0.52, "avg_acc": 0.55, "heldout_nll": 2.9},
    "random-b0.1-s1": {"wikitext2_ppl": 36.0, "boolq_acc": 0.60, "piqa_acc": 0.54, "avg_acc": 0.57, "heldout_nll": 2.8},
    "random-b0.2-s0": {"wikitext2_ppl": 33.0, "boolq_acc": 0.60, "piqa_acc": 0.58, "avg_acc": 0.59, "heldout_nll": 2.6},
    "random-b0.2-s1": {"wikitext2_ppl": 31.0, "boolq_acc": 0.62, "piqa_acc": 0.60, "avg_acc": 0.61, "heldout_nll": 2.5},
}
# Rows per cluster that paser allocates (and selects) at each budget.
PASER_ALLOCATION = {0.1: {0: 1, 1: 2, 2: 2}, 0.2: {0: 3, 1: 4, 2: 4}}
RANDOM_B01_S0 = ["row53", "row50", "row52", "row00", "row01"]
FULL_METRICS = {"wikitext2_ppl": 24.0, "boolq_acc": 0.62, "piqa_acc": 0.70, "avg_acc": 0.66, "heldout_nll": 2.2}
# Per-item values: questions per zero-shot task, perplexity windows and their predicted tokens, held-out rows and
# their response tokens.
QUESTIONS = 50
WINDOWS, WINDOW_TOKENS = 4, 31
HELDOUT_TOKENS = 20
PROMPT_TOKENS, RESPONSE_TOKENS, EPOCHS = 10, 30, 2.0
# Parameter counts of the scored pair and the LoRA adapter, for the compute estimates.
ORIGINAL_PARAMETERS, PRUNED_PARAMETERS, LORA_PARAMETERS = 1000, 1000, 10
STAGE_SECONDS = {"prune": 5.0, "score": 12.0, "heldout": 0.1, "embed": 3.0, "cluster/s0": 1.0, "cluster/s1": 1.5}
SELECT_SECONDS = 0.2


def train_seconds(rows: int) -> float:
    """The fake trainer's wall time on `rows` rows; the recover stage takes one second more."""
    return 2.0 + 0.5 * rows


def item_values(values: dict[str, float]) -> dict[str, np.ndarray]:
    """Per-item arrays (`paser.recovery.items` names) whose sums give back `values`' wikitext2_ppl, boolq_acc,
    piqa_acc and heldout_nll."""
    windows = np.array([-0.03, -0.01, 0.01, 0.03]) + math.log(values["wikitext2_ppl"])
    rows = np.array([-0.15, -0.1, -0.05, 0.05, 0.1, 0.15]) + values["heldout_nll"]
    items = {
        "wikitext2.nll_sum": WINDOW_TOKENS * windows,
        "wikitext2.tokens": np.full(WINDOWS, float(WINDOW_TOKENS)),
        "heldout.nll_sum": HELDOUT_TOKENS * rows,
        "heldout.tokens": np.full(len(rows), float(HELDOUT_TOKENS)),
    }
    for offset, task in enumerate(("boolq", "piqa")):
        order = np.random.default_rng(offset).permutation(QUESTIONS)
        items[f"{task}.acc"] = (order < round(values[f"{task}_acc"] * QUESTIONS)).astype(float)
    return items


def row_id(row: int) -> str:
    return f"row{row:02d}"


def row_cluster(row: int) -> int:
    return row % N_CLUSTERS


def row_cds(row: int) -> float:
    return 0.1 * (row_cluster(row) + 1) + 0.001 * row


def row_category(row: int) -> str:
    if row % 5 == 0:
        return "gamma"
    return "alpha" if row_cluster(row) == 0 else "beta"


def pool_rows() -> list[int]:
    return [row for row in range(N_ROWS) if row not in HELDOUT_ROWS]


def build_fake_run(
    run_dir: Path,
    *,
    missing_evals: tuple[str, ...] = (),
    unrecorded: tuple[str, ...] = (),
    coordinates: bool = True,
    labelled: bool = False,
    label_field: str | None = None,
    without_items: tuple[str, ...] = (),
    full: bool = False,
) -> Path:
    """Write the fake run into `run_dir` and return it.

    `missing_evals`: combos whose eval/metrics.json is absent and whose results.json entry has `"metrics":
    null` (an evaluation that did not finish). `unrecorded`: combos left out of results.json's combos list
    altogether (their eval is absent too). `coordinates=False` writes clusters without coordinate columns,
    as k-means clustering does. `labelled` adds `category` and `dataset` to the raw rows; `label_field` is
    config.yaml's report.label_field. `without_items`: finished combos whose evaluation kept no items.npz (as
    evaluations before items were kept). `full`: add the `full` strategy.
    """
    strategies = (*STRATEGIES, "full") if full else STRATEGIES
    layout = RunLayout(run_dir)
    shared = layout.shared
    shared.root.mkdir(parents=True, exist_ok=True)
    samples = [_sample(row, labelled) for row in range(N_ROWS)]
    write_corpus_store(samples, shared.corpus, show_progress=False)
    pd.DataFrame(
        {
            "id": [row_id(row) for row in range(N_ROWS)],
            "cds": [row_cds(row) for row in range(N_ROWS)],
            "prompt_tokens": [12 + row % 5 for row in range(N_ROWS)],
            "response_tokens": [20 + row % 7 for row in range(N_ROWS)],
            "nll_original": [1.0 + 0.01 * row for row in range(N_ROWS)],
            "nll_pruned": [1.5 + 0.02 * row for row in range(N_ROWS)],
        }
    ).to_parquet(shared.scores)
    _write_json(
        shared.corpus_record,
        {
            "source": "tests/fake/corpus.jsonl",
            "stats": {"rows_read": N_ROWS, "rows_valid": N_ROWS, "skipped": {}, "flagged": {}, "examples": {}},
            "models": {
                "original": {"name": "tiny-original", "parameters": ORIGINAL_PARAMETERS},
                "pruned": {"name": "tiny-pruned", "parameters": PRUNED_PARAMETERS},
            },
        },
    )
    _write_jsonl(shared.heldout_rows, [{**samples[row].raw, "id": row_id(row)} for row in HELDOUT_ROWS])
    stages: dict[str, dict[str, Any]] = {}
    relative = lambda path: path.relative_to(run_dir).as_posix()  # noqa: E731
    for stage, artifact in (
        ("prune", layout.pruned),
        ("score", shared.scores),
        ("heldout", shared.heldout_rows),
        ("embed", shared.embed_shards),
    ):
        stages[stage] = _stage(relative(artifact), STAGE_SECONDS[stage])
    for seed in SEEDS:
        clusters = pd.DataFrame(
            {"id": [row_id(row) for row in pool_rows()], "cluster": [row_cluster(row) for row in pool_rows()]}
        )
        if coordinates:
            clusters["coordinate_0"] = [3.0 * row_cluster(row) + 0.01 * row for row in pool_rows()]
            clusters["coordinate_1"] = [3.0 * (row_cluster(row) % 2) - 0.02 * row + seed for row in pool_rows()]
        clusters.to_parquet(shared.cluster_table(seed))
        _write_json(
            shared.cluster_record(seed),
            {"n_clusters": N_CLUSTERS, "eigenvalues": [1.0, 0.9, 0.8, 0.2], "n_landmarks": 0, "seconds": {"fit": 0.1}},
        )
        stages[f"cluster/s{seed}"] = _stage(relative(shared.cluster_table(seed)), STAGE_SECONDS[f"cluster/s{seed}"])
    combos = []
    for strategy in strategies:
        for budget in BUDGETS:
            for seed in SEEDS:
                combo = combo_name(strategy, budget, seed)
                rows = len(_selected_ids(strategy, budget, seed))
                folder = layout.combo(combo)
                _write_selection(folder.select, strategy, budget, seed, labelled)
                stages[f"select/{combo}"] = _stage(relative(folder.select.selection), SELECT_SECONDS)
                stages[f"recover/{combo}"] = _stage(relative(folder.recover.root), train_seconds(rows) + 1.0)
                _write_json(folder.recover.record, _recovery_record(rows))
                finished = combo not in missing_evals and combo not in unrecorded
                values = FULL_METRICS if strategy == "full" else COMBO_METRICS[combo]
                if finished:
                    _write_json(folder.eval.metrics, _eval_record(values))
                    if combo not in without_items:
                        np.savez(folder.eval.items, **item_values(values))
                    stages[f"eval/{combo}"] = _stage(relative(folder.eval.metrics))
                if combo in unrecorded:
                    continue
                combos.append(
                    {
                        "combo": combo,
                        "strategy": strategy,
                        "budget": budget,
                        "budget_rows": BUDGET_ROWS[budget],
                        "seed": seed,
                        "metrics": _with_heldout_ppl(values) if finished else None,
                        "train_seconds": train_seconds(rows),
                        "train_tokens": (PROMPT_TOKENS + RESPONSE_TOKENS) * rows,
                    }
                )
    for name, values in BASELINE_METRICS.items():
        _write_json(layout.baseline(name).metrics, _eval_record(values))
        stages[f"eval/{name}"] = _stage(relative(layout.baseline(name).metrics))
    _write_json(layout.manifest, {"version": 1, "stages": stages})
    layout.events.write_text(
        "".join(
            json.dumps({"invocation": 1, "stage": stage, "action": "ran", "seconds": 0.1}) + "\n" for stage in stages
        )
    )
    _write_json(
        layout.results,
        {
            "metrics": list(METRICS),
            "lower_is_better": LOWER_IS_BETTER,
            "baselines": {name: _with_heldout_ppl(values) for name, values in BASELINE_METRICS.items()},
            "combos": combos,
            "seeds": list(SEEDS),
            "strategies": list(strategies),
            "budgets": list(BUDGETS),
        },
    )
    layout.config.write_text(
        yaml.safe_dump(
            {
                "corpus": {"path": "tests/fake/corpus.jsonl"},
                "models": {
                    "original": "tiny-original",
                    "pruned": None,
                    "prune": {"method": "magnitude", "sparsity": 0.5},
                },
                "selection": {"strategies": list(strategies), "budgets": list(BUDGETS), "seeds": list(SEEDS)},
                "recovery": {"objective": "sft"},
                "evaluation": {"tasks": ["wikitext2", "boolq", "piqa"], "heldout_rows": 20},
                "report": {"label_field": label_field},
            },
            sort_keys=False,
        )
    )
    return run_dir


def paser_selection(budget: float) -> list[str]:
    """paser's selection at `budget`: clusters in descending CDS, each its allocation of highest-CDS rows."""
    chosen = []
    for cluster in sorted(PASER_ALLOCATION[budget], reverse=True):
        members = sorted((row for row in pool_rows() if row_cluster(row) == cluster), key=row_cds, reverse=True)
        chosen += [row_id(row) for row in members[: PASER_ALLOCATION[budget][cluster]]]
    return chosen


def _selected_ids(strategy: str, budget: float, seed: int) -> list[str]:
    if strategy == "paser":
        return paser_selection(budget)
    if strategy == "full":
        return [row_id(row) for row in pool_rows()]
    if (budget, seed) == (0.1, 0):
        return list(RANDOM_B01_S0)
    rng = np.random.default_rng(seed)
    return [row_id(int(row)) for row in rng.choice(pool_rows(), size=BUDGET_ROWS[budget], replace=False)]


def _write_selection(folder: SelectFolder, strategy: str, budget: float, seed: int, labelled: bool) -> None:
    ids = _selected_ids(strategy, budget, seed)
    rows = [int(sample_id[3:]) for sample_id in ids]
    _write_jsonl(
        folder.selection,
        [
            {
                **_sample(row, labelled).raw,
                "id": row_id(row),
                "cluster": row_cluster(row),
                "cds": row_cds(row),
                "ies": 0.01,
            }
            for row in rows
        ],
    )
    clusters = []
    for cluster in range(N_CLUSTERS):
        members = [row for row in pool_rows() if row_cluster(row) == cluster]
        entry: dict[str, Any] = {
            "cluster": cluster,
            "size": len(members),
            "mean_cds": float(np.mean([row_cds(row) for row in members])),
            "selected": sum(row_cluster(row) == cluster for row in rows),
        }
        if strategy == "paser":
            entry |= {"budget": PASER_ALLOCATION[budget][cluster], "ccg_rejected": 0}
        clusters.append(entry)
    _write_json(
        folder.stats,
        {
            "totals": {"rows_scored": len(pool_rows()), "budget": BUDGET_ROWS[budget], "selected": len(rows)},
            "clusters": clusters,
            "strategy": {"name": strategy},
        },
    )


def _sample(row: int, labelled: bool = False) -> Sample:
    instruction = f"Explain topic {row_cluster(row)} case {row}."
    input_text = f"context {row}" if row % 4 == 0 else ""
    response = f"Case {row} of topic {row_cluster(row)} is explained here."
    raw = {"instruction": instruction, "input": input_text, "output": response}
    if labelled:
        raw |= {"category": row_category(row), "dataset": f"set{row % 2}"}
    return Sample(
        id=row_id(row),
        instruction=instruction,
        input=input_text,
        response=response,
        source_index=row,
        raw=raw,
    )


def _with_heldout_ppl(values: dict[str, float]) -> dict[str, float]:
    return {**values, "heldout_ppl": math.exp(values["heldout_nll"])}


def _eval_record(values: dict[str, float]) -> dict[str, Any]:
    return {
        "tasks": {
            "wikitext2": {"metrics": {"ppl": values["wikitext2_ppl"]}},
            "boolq": {"metrics": {"acc": values["boolq_acc"]}},
            "piqa": {"metrics": {"acc": values["piqa_acc"]}},
        },
        "heldout": {"nll": values["heldout_nll"], "ppl": math.exp(values["heldout_nll"]), "tokens": 120, "rows": 6},
    }


def _recovery_record(rows: int) -> dict[str, Any]:
    per_epoch = {"prompt": PROMPT_TOKENS * rows, "response": RESPONSE_TOKENS * rows}
    return {
        "objective": "sft",
        "rows": {"read": rows, "valid": rows, "used": rows, "skipped": {}, "truncated": 0},
        "tokens_per_epoch": {**per_epoch, "total": per_epoch["prompt"] + per_epoch["response"]},
        "training": {"steps": 2, "epochs": EPOCHS},
        "compute": recovery_compute(
            {"trained": int((PROMPT_TOKENS + RESPONSE_TOKENS) * rows * EPOCHS)},
            base_parameters=PRUNED_PARAMETERS,
            lora_parameters=LORA_PARAMETERS,
        ),
        "seconds": {"load": 0.5, "train": train_seconds(rows), "merge": 0.5},
    }


def _stage(artifact: str, seconds: float = 0.1) -> dict[str, Any]:
    return {"hash": "0" * 16, "artifact": artifact, "seconds": seconds, "finished_at": "2025-01-01T00:00:00+00:00"}


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
