"""results.json's `compute` and `shared_cost` blocks: what each combination trained on and for how long, and what
the selection cost once for all of them; read from a run folder as `compute_table` and `run_shared_cost`.

Per combination, from combos/{combo}/recover/recovery.json and the manifest's stage timings:
- `rows_trained`: the subset's rows training used; `epochs`: the passes made (the trainer's count, fractional
  when `max_steps` stops it first);
- `prompt_tokens`, `response_tokens`, `train_tokens`: the subset as tokenised for SFT (prompt, response = the
  loss tokens, and their sum) times the epochs: the tokens training forwarded (the DPO and distillation
  objectives forward more: rejected answers, the teacher);
- `train_seconds`: the trainer's wall time; `recover_seconds`: the whole recover stage (load, train, merge,
  save); `select_seconds`: the combination's own select stage;
- from recovery.json's `compute` block (`paser.recovery.flops`): `teacher_tokens` (tokens the distillation
  teacher or DPO's reference forwarded), `generated_tokens` (DPO's rejected answers), and `flops`, the
  recovery's estimated FLOPs (training, teacher, reference and generation), so that equal compute can be
  read as equal FLOPs rather than equal rows or tokens.
With `full` combinations in the run (the whole pool), `tokens_fraction`, `seconds_fraction` and
`flops_fraction` are train_tokens, train_seconds and flops over the mean of the full combinations'.

Shared, reported once: the seconds of the stages every combination builds on (prune, recipe, score,
heldout, embed, embed_response, cluster/s{seed}), and `selection_seconds`, what selection itself costs on
top of training: scoring, embedding and clustering; with the run folder, `scoring_tokens` (every scored row's
prompt and response tokens) and `scoring_flops`, the scorer's two forwards over them, 2·N·(P_original +
P_pruned) (`paser.recovery.flops.forward_flops`). A stage's seconds are those of its last run; a stage cached
since keeps the cost of the run that made its artifacts. Missing values are None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from paser.pipelines.analysis.reader import RunReader, block_table
from paser.pipelines.layout import RunLayout, split_recovery
from paser.recovery.flops import forward_flops
from paser.selection.strategies import strategy_with_role

# The no-selection reference whose cost the others are a share of (`full`): declared by the strategy's role.
REFERENCE_STRATEGY = strategy_with_role("reference")
SHARED_STAGES = ("prune", "recipe", "score", "heldout", "embed", "embed_response")
SELECTION_STAGES = ("score", "embed", "embed_response")
CLUSTER_STAGE_PREFIX = "cluster/"
# A `compute` row's numbers, after combo, strategy, budget and seed.
COMPUTE_FIELDS = (
    "rows_trained",
    "epochs",
    "prompt_tokens",
    "response_tokens",
    "train_tokens",
    "train_seconds",
    "recover_seconds",
    "select_seconds",
    "teacher_tokens",
    "generated_tokens",
    "flops",
    "tokens_fraction",
    "seconds_fraction",
    "flops_fraction",
)


def _stage_seconds(stages: dict[str, Any], name: str) -> float | None:
    seconds = (stages.get(name) or {}).get("seconds")
    return None if seconds is None else float(seconds)


def _times(count: Any, epochs: float | None) -> float | None:
    return None if count is None or epochs is None else float(count) * epochs


def _fraction(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def combo_compute(results: dict[str, Any], stages: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """The `compute` block: {"reference": "full" or None (no full combination trained), "reference_combos":
    the full combinations averaged, "rows": one per combination of results.json, in its order, with the
    fields of the module docstring (and its `recovery` variant where it has one: the fractions are then of the
    full combinations of that variant)}. `stages` is manifest.json's "stages"."""
    rows = []
    for record in results["combos"]:
        combo = record["combo"]
        path = RunLayout(run_dir).combo(combo).recover.record
        recovery = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        epochs = (recovery.get("training") or {}).get("epochs")
        per_epoch = recovery.get("tokens_per_epoch") or {}
        forwarded = (recovery.get("compute") or {}).get("tokens") or {}
        flops = ((recovery.get("compute") or {}).get("flops") or {}).get("total")
        recovery_variant = {"recovery": record["recovery"]} if "recovery" in record else {}
        rows.append(
            {
                "combo": combo,
                "strategy": record["strategy"],
                **recovery_variant,
                "budget": record["budget"],
                "seed": record["seed"],
                "rows_trained": (recovery.get("rows") or {}).get("used"),
                "epochs": None if epochs is None else float(epochs),
                "prompt_tokens": _times(per_epoch.get("prompt"), epochs),
                "response_tokens": _times(per_epoch.get("response"), epochs),
                "train_tokens": _times(per_epoch.get("total"), epochs),
                "train_seconds": (recovery.get("seconds") or {}).get("train"),
                "recover_seconds": _stage_seconds(stages, f"recover/{combo}"),
                "select_seconds": _stage_seconds(stages, f"select/{split_recovery(combo)[0]}"),
                "teacher_tokens": _sum_known(forwarded, ("teacher_forward", "reference_forward")),
                "generated_tokens": forwarded.get("generated"),
                "flops": flops,
            }
        )
    reference = [row for row in rows if row["strategy"] == REFERENCE_STRATEGY and row["train_tokens"] is not None]
    for row in rows:
        # Within a recovery variant: the reference trained the same way.
        same = [other for other in reference if other.get("recovery") == row.get("recovery")]
        row["tokens_fraction"] = _fraction(row["train_tokens"], _mean([other["train_tokens"] for other in same]))
        row["seconds_fraction"] = _fraction(row["train_seconds"], _mean([other["train_seconds"] for other in same]))
        row["flops_fraction"] = _fraction(row["flops"], _mean([other["flops"] for other in same]))
    return {
        "reference": REFERENCE_STRATEGY if reference else None,
        "reference_combos": [row["combo"] for row in reference],
        "rows": rows,
    }


def _mean(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def _sum_known(counts: dict[str, Any], names: tuple[str, ...]) -> int | None:
    known = [counts[name] for name in names if counts.get(name) is not None]
    return sum(known) if known else None


def scoring_cost(run_dir: str | Path) -> dict[str, float | None]:
    """{"scoring_tokens", "scoring_flops"} of the run's score stage: the tokens of every scored row
    (shared/scores.parquet) and the estimated FLOPs of forwarding them through both models, 2·N·(P_original +
    P_pruned) with the parameter counts of shared/corpus.json; None where a file or count is missing."""

    shared = RunLayout(run_dir).shared
    scores_path, corpus_path = shared.scores, shared.corpus_record
    if not scores_path.is_file():
        return {"scoring_tokens": None, "scoring_flops": None}
    scores = pd.read_parquet(scores_path, columns=["prompt_tokens", "response_tokens"])
    tokens = int(scores.to_numpy().sum())
    models = json.loads(corpus_path.read_text(encoding="utf-8")).get("models", {}) if corpus_path.is_file() else {}
    parameters = [(models.get(role) or {}).get("parameters") for role in ("original", "pruned")]
    flops = None if None in parameters else forward_flops(tokens, sum(parameters))
    return {"scoring_tokens": tokens, "scoring_flops": flops}


def shared_cost(stages: dict[str, Any], run_dir: str | Path | None = None) -> dict[str, Any]:
    """The `shared_cost` block: {"stages": seconds of each shared stage the manifest has finished (in pipeline
    order, clusterings last), "selection_seconds": scoring + embedding + clustering}, and with `run_dir` the
    `scoring_cost` keys. `stages` is manifest.json's "stages"."""
    names = [name for name in SHARED_STAGES if name in stages]
    names += sorted(
        (name for name in stages if name.startswith(CLUSTER_STAGE_PREFIX)), key=lambda name: (len(name), name)
    )
    seconds = {name: _stage_seconds(stages, name) for name in names}
    selection = [
        value
        for name, value in seconds.items()
        if value is not None and (name in SELECTION_STAGES or name.startswith(CLUSTER_STAGE_PREFIX))
    ]
    cost = {"stages": seconds, "selection_seconds": sum(selection) if selection else None}
    return cost | scoring_cost(run_dir) if run_dir is not None else cost


def compute_table(run: RunReader) -> pd.DataFrame:
    """Per combo of results.json: rows, epochs and tokens trained, train, recover and select seconds, teacher
    and generated tokens, estimated FLOPs, and the tokens, seconds and FLOPs as a fraction of the `full`
    combos' (NaN without one); see this module's docstring. results.json's `compute`, else read from the recovery
    records and the manifest (`combo_compute`)."""
    block = run.results.get("compute") or combo_compute(run.results, run.manifest.get("stages", {}), run.path)
    labels = ("combo", "strategy", *run.recovery_columns, "budget", "seed")
    return block_table(block["rows"], (*labels, *COMPUTE_FIELDS), COMPUTE_FIELDS)


def run_shared_cost(run: RunReader) -> dict[str, Any]:
    """{"stages": seconds of each shared stage, "selection_seconds": scoring + embedding + clustering,
    "scoring_tokens", "scoring_flops"}: results.json's `shared_cost`, else from the manifest and the run folder
    (`shared_cost`)."""
    return run.results.get("shared_cost") or shared_cost(run.manifest.get("stages", {}), run.path)
