"""Tune the recovery recipe on a dev split: each setting's share of the pruning gap closed, chosen on dev only.

Draws disjoint seeded Alpaca-52K rows (`--seed`): `--train-rows` to train on, `--dev-rows` (every choice is made
on these) and `--test-rows` (reported, never used to choose). Out-of-distribution sets are report-only: `--t0-rows`
prompts of the labelled T0 pool (tasks the Alpaca rows do not hold) and `--gsm8k-rows` GSM8K test problems with
their worked answers. Each setting (`--setting NAME:key=value,key=value`, keys being `TrainConfig` fields such as
`objective`, `learning_rate`, `epochs`, `lora_r`, `lora_alpha`, `sft_weight`) trains the pruned model on the same
rows in its own subprocess (so peak memory is per setting) and is scored by the response NLL of every set
(`paser.recovery.evaluate.response_nll`, the tokens and mask of training). Finished settings are cached as
`--out/settings/NAME.json` and skipped on rerun (the run is resumable; delete a file to redo it).

A setting may also name `train_rows=N` (not a `TrainConfig` field): it trains on the first N rows of the train
rows followed by `--extra-rows` more seeded rows drawn after dev and test (so dev, test and the first
`--train-rows` stay the rows of a run without extras, and the subsets are nested): the compute curve of issue 26
is such settings at several N.

Prints, per setting: the share of the pruning gap (pruned NLL - original NLL) closed on dev, test, T0 and GSM8K,
training seconds, optimiser steps, trained tokens and FLOPs where the recovery record has them; then the setting
with the most dev gap closed per objective, among the settings trained on the tuning's own rows (curve points
with `train_rows` are other budgets). Writes `--out/results.json` over the settings named, or with `--all` over
every finished one in `--out/settings` (nothing is trained for those: the input `bench/recovery_objectives.py
--tuned` reads).

    python bench/recipe_tuning.py --pruned /tmp/smollm2-wanda50 --out /tmp/tune \\
        --setting sft-2e-4:objective=sft,learning_rate=2e-4 --setting sft-1e-3:objective=sft,learning_rate=1e-3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

# Run as a script from a checkout: make the repository's packages (and bench/'s helpers) importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recovery_bench import (  # noqa: E402
    cached_json,
    draw_alpaca_rows,
    gap_closed,
    load_scoring_model,
    on_tuning_rows,
    parse_setting,
    peak_rss_gb,
    response_nlls,
    write_json,
    write_rows,
)

T0_FILE = "recovery/t0_labelled_dev.jsonl.gz"
GSM8K_FILE = "eval/gsm8k_test.jsonl"
SETS = ("dev", "test", "t0", "gsm8k")


def draw_rows(args: argparse.Namespace, out: Path) -> None:
    """Write train/dev/test/t0/gsm8k row files (Alpaca fields + id) under `out/rows/`, once."""
    from paser.data.paths import data_file

    folder = out / "rows"
    if (folder / "done").exists():
        return
    draw_alpaca_rows(folder, args.seed, {"train": args.train_rows, "dev": args.dev_rows, "test": args.test_rows})
    with gzip.open(data_file(T0_FILE), "rt", encoding="utf-8") as stream:
        t0 = [json.loads(line) for line in stream]
    random.Random(args.seed).shuffle(t0)
    write_rows(folder / "t0.jsonl", t0[: args.t0_rows])
    with open(data_file(GSM8K_FILE), encoding="utf-8") as stream:
        gsm8k = [json.loads(line) for line in stream]
    random.Random(args.seed).shuffle(gsm8k)
    rows = (
        {"id": f"gsm8k-{i}", "instruction": r["question"], "input": "", "output": r["answer"]}
        for i, r in enumerate(gsm8k[: args.gsm8k_rows])
    )
    write_rows(folder / "gsm8k.jsonl", rows)
    (folder / "done").write_text("ok\n")


def draw_extra_rows(args: argparse.Namespace, out: Path) -> None:
    """Write `rows/extra.jsonl`: `--extra-rows` Alpaca rows drawn after train, dev and test in the same seeded
    shuffle (`split_rows`), so they are disjoint from all three and leave them as they are."""
    path = out / "rows" / "extra.jsonl"
    if args.extra_rows == 0 or (path.exists() and sum(1 for _ in path.open()) >= args.extra_rows):
        return
    sizes = {"train": args.train_rows, "dev": args.dev_rows, "test": args.test_rows, "extra": args.extra_rows}
    draw_alpaca_rows(out / "rows", args.seed, sizes, only=["extra"])


def training_file(out: Path, train_rows: int | None) -> Path:
    """The rows a setting trains on: `rows/train.jsonl`, or its first `train_rows` rows continued by
    `rows/extra.jsonl` (written once as `rows/train-N.jsonl`); refuses more rows than the two hold."""
    folder = out / "rows"
    if train_rows is None:
        return folder / "train.jsonl"
    path = folder / f"train-{train_rows}.jsonl"
    if path.exists():
        return path
    rows = []
    for name in ("train", "extra"):
        if (folder / f"{name}.jsonl").exists():
            rows += [json.loads(line) for line in (folder / f"{name}.jsonl").open(encoding="utf-8")]
    if len(rows) < train_rows:
        raise SystemExit(f"train_rows={train_rows}: only {len(rows)} train + extra rows; raise --extra-rows")
    write_rows(path, rows[:train_rows])
    return path


def score(model_path: str, out: Path, dtype: str) -> dict:
    """Response NLL of `model_path` on every set (rows encoded as training encodes them), in `dtype`."""
    model, tokenizer = load_scoring_model(model_path, dtype)
    return response_nlls(model, tokenizer, out / "rows", SETS)


def run_baseline(name: str, model: str, out: Path, dtype: str) -> dict:
    return cached_json(out / "baselines" / f"{name}.json", lambda: score(model, out, dtype))


def run_setting(name: str, values: dict, args: argparse.Namespace, out: Path) -> None:
    """Train and score one setting in this process; write `settings/NAME.json`."""
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import recover

    defaults = {"epochs": args.epochs, "seed": args.seed, "show_progress": False, "remask_eval": "none"}
    values = dict(values)
    train_file = training_file(out, values.pop("train_rows", None))
    config = TrainConfig.from_flat({**defaults, **values})
    folder = Path(args.work) / name
    started = time.perf_counter()
    result = recover(args.pruned, train_file, folder, config, original=args.original)
    wall = time.perf_counter() - started
    scores = score(str(result.paths["merged"]), out, args.score_dtype)
    record = result.record
    payload = {
        "setting": values,
        "config": config.flat_settings(),
        "scores": scores,
        "wall_seconds": wall,
        "train_seconds": record["seconds"]["train"],
        "steps": record["training"]["steps"],
        "train_rows": sum(1 for _ in train_file.open(encoding="utf-8")),
        "compute": record.get("compute"),
        "peak_rss_gb": peak_rss_gb(),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
    }
    write_json(out / "settings" / f"{name}.json", payload)


def flops_total(row: dict) -> float:
    """A setting's estimated training FLOPs (teacher and generation included), NaN where the record has none."""
    compute = row.get("compute") or {}
    return float(compute.get("flops", {}).get("total", float("nan")))


def closed_on(scores: dict, original: dict, pruned: dict, name: str) -> float:
    """Share of set `name`'s NLL gap closed by `scores`."""
    return gap_closed(scores[name]["nll"], original[name]["nll"], pruned[name]["nll"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruned", required=True, help="pruned checkpoint folder")
    parser.add_argument("--original", default="smollm2", help="original model (baseline NLL; distillation teacher)")
    parser.add_argument("--out", required=True, help="folder for rows, baselines and per-setting results")
    parser.add_argument("--work", default=None, help="folder for the recovered models (default OUT/models)")
    parser.add_argument("--setting", action="append", default=[], help="NAME:key=value,... (repeatable)")
    parser.add_argument("--train-rows", type=int, default=160)
    parser.add_argument("--dev-rows", type=int, default=100)
    parser.add_argument("--test-rows", type=int, default=100)
    parser.add_argument("--extra-rows", type=int, default=0, help="rows drawn after test for `train_rows` settings")
    parser.add_argument("--t0-rows", type=int, default=50)
    parser.add_argument("--gsm8k-rows", type=int, default=30)
    parser.add_argument(
        "--score-dtype",
        default="fp32",
        help="dtype of the NLL scoring (on this CPU a bf16 forward took 5x the CPU time of fp32)",
    )
    parser.add_argument("--epochs", type=float, default=2.0, help="default epochs of every setting")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row draws and the training")
    parser.add_argument(
        "--all",
        action="store_true",
        help="report (and write results.json over) every finished setting in OUT/settings, not only those named",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    args.work = args.work or str(out / "models")
    settings = dict(parse_setting(text) for text in args.setting)
    if args.one:
        run_setting(args.one, settings[args.one], args, out)
        return
    draw_rows(args, out)
    draw_extra_rows(args, out)
    original = run_baseline("original", args.original, out, args.score_dtype)
    pruned = run_baseline("pruned", args.pruned, out, args.score_dtype)
    for name in settings:
        if (out / "settings" / f"{name}.json").exists():
            continue
        print(f"training {name} ...", flush=True)
        command = [sys.executable, __file__, *sys.argv[1:], "--one", name]
        subprocess.run(command, check=True)
    names = list(settings)
    if args.all:
        names += sorted(path.stem for path in (out / "settings").glob("*.json") if path.stem not in settings)
    report(out, original, pruned, names, args.train_rows)


def report(out: Path, original: dict, pruned: dict, names: list[str], train_rows: int) -> None:
    """Print the table and write `out/results.json`; settings recorded before `train_rows` existed trained on the
    `train_rows` rows of `rows/train.jsonl`."""
    rows = []
    for name in names:
        payload = json.loads((out / "settings" / f"{name}.json").read_text())
        closed = {set_name: closed_on(payload["scores"], original, pruned, set_name) for set_name in SETS}
        rows.append({"name": name, **payload, "closed": closed})
    print("original NLL: " + ", ".join(f"{s} {original[s]['nll']:.4f}" for s in SETS))
    print("pruned NLL:   " + ", ".join(f"{s} {pruned[s]['nll']:.4f}" for s in SETS))
    print(
        f"{'setting':<24} {'dev':>7} {'test':>7} {'t0':>7} {'gsm8k':>7} {'train s':>8} {'rows':>6} {'steps':>6}"
        f" {'FLOPs':>9} {'peak GB':>8}"
    )
    for row in rows:
        closed = row["closed"]
        print(
            f"{row['name']:<24} "
            + " ".join(f"{closed[s]:>7.1%}" for s in SETS)
            + f" {row['train_seconds']:>8.0f} {row.get('train_rows', train_rows):>6} {row['steps']:>6}"
            + f" {flops_total(row):>9.2e} {row['peak_rss_gb']:>8.2f}"
        )
    best = {}
    for row in rows:
        if not on_tuning_rows(row):
            continue
        objective = row["config"]["objective"]
        if objective not in best or row["closed"]["dev"] > best[objective]["closed"]["dev"]:
            best[objective] = row
    for objective, row in best.items():
        closed = row["closed"]
        print(f"best on dev for {objective}: {row['name']} ({closed['dev']:.1%} dev, {closed['test']:.1%} test)")
    summary = {
        "original": original,
        "pruned": pruned,
        "settings": rows,
        "best_on_dev": {k: v["name"] for k, v in best.items()},
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
