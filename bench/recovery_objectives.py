"""The recovery objectives side by side in one run, on one fixed small setting: how much of the pruning gap each
closes, for what compute, time and memory.

The setting: the original model `--original` (SmolLM2-135M), its Wanda 50% pruned folder `--pruned` (made with
`paser prune` when missing: 32 Alpaca calibration windows of 512 tokens), `--train-rows` seeded Alpaca-52K rows to
train on and a disjoint in-distribution held-out set split into `--dev-rows` and `--test-rows`
(`bench.recovery_bench.draw_alpaca_rows`, the draws of `bench/recipe_tuning.py` at the same seed and sizes), and
WikiText-2 test (`--ppl-windows` windows of `--ppl-seqlen` tokens, `paser.recovery.evaluate.perplexity`).

The settings (`--settings`, default all; `--setting NAME:key=value,...` adds or replaces one), one seed each:
sft · distill (KD on the fly) · distill-jsd (KD with each response token weighted by its JSD: the training rows are
scored once with the scorer's `keep_token_jsd`, into `--out/token_jsd`) · sft-self (SFT on the original's own
answers, `targets: original`) · on_policy · full (masked full fine-tuning, `adapter: full`) · sft-r64 (LoRA rank 64,
alpha 128: the default alpha / r of 2 kept). Each trains at its learning rate: `--lr NAME=VALUE`, else with
`--tuned FILE` (`bench/recipe_tuning.py`'s results.json) the learning rate of the setting there that closed the
most dev gap among those of the same objective, adapter, targets, token weighting and LoRA rank, else the default
(`TrainConfig.lr`).

Each setting trains (`paser.recovery.train.recover`, `--epochs`) and is scored in its own subprocess, whose peak
resident set (VmHWM) is read when training ends, and its result is cached as `--out/settings/NAME.json`: a rerun
skips finished settings (delete a file to redo it); a setting that fails is reported and left uncached.

Prints, per setting: its learning rate, the share of the pruning gap closed on held-out response NLL (dev and
test) and on WikiText-2 perplexity, the estimated training FLOPs (`recovery.json`'s `compute` block), the recovery's
wall seconds and its peak RSS, and, for self-distillation whose targets came from a cache (a rerun), what
generating those targets cost (`+ cached targets`: recovery.json counts only what the run generated); writes
`--out/results.json`.

    python bench/recovery_objectives.py --pruned /tmp/smollm2-wanda50 --out /tmp/objectives
    python bench/recovery_objectives.py --pruned /tmp/smollm2-wanda50 --out /tmp/objectives \\
        --tuned /tmp/tune/results.json --lr full=5e-5
"""

from __future__ import annotations

import argparse
import json
import os
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
    make_pruned,
    on_tuning_rows,
    parse_setting,
    peak_rss_gb,
    response_nlls,
    write_json,
)

HELD_OUT = ("dev", "test")
# Name -> the TrainConfig fields that make the setting (the learning rate is added per run).
SETTINGS = {
    "sft": {"objective": "sft"},
    "distill": {"objective": "distill"},
    "distill-jsd": {"objective": "distill", "token_weighting": "jsd"},
    "sft-self": {"objective": "sft", "targets": "original"},
    "on_policy": {"objective": "on_policy"},
    "full": {"objective": "sft", "adapter": "full"},
    "sft-r64": {"objective": "sft", "lora_r": 64, "lora_alpha": 128},
}
# The fields a tuned learning rate must share with the setting it is taken for, and their defaults.
# The LoRA rank among them: the update scales with alpha/r × r, so rank 64 at rank 8's rate overshoots
# (bench/results/recovery_curve/).
LEARNING_RATE_KEYS = {
    "objective": "sft",
    "adapter": "lora",
    "targets": "corpus",
    "token_weighting": "none",
    "lora_r": 8,
}


def tuned_learning_rate(results: dict, values: dict) -> float | None:
    """From `bench/recipe_tuning.py`'s results.json: the learning rate of the setting that closed the most dev gap
    among those whose objective, adapter, targets, token weighting and LoRA rank are `values`'s, trained on the
    tuning's own rows (a curve point with other `train_rows` is another budget, not a candidate); None when none
    is."""
    wanted = {key: values.get(key, default) for key, default in LEARNING_RATE_KEYS.items()}
    matching = [
        row
        for row in results["settings"]
        if on_tuning_rows(row)
        and all(row["config"].get(key, default) == wanted[key] for key, default in LEARNING_RATE_KEYS.items())
    ]
    if not matching:
        return None
    best = max(matching, key=lambda row: row["closed"]["dev"])
    return best["config"].get("learning_rate")


def learning_rates(names: list[str], settings: dict, given: dict[str, float], tuned: dict | None) -> dict:
    """Each setting's learning rate: given on the command line, else tuned (`tuned_learning_rate`), else None (the
    default of `TrainConfig.lr`)."""
    rates = {}
    for name in names:
        if name in given:
            rates[name] = given[name]
        elif tuned is not None:
            rates[name] = tuned_learning_rate(tuned, settings[name])
        else:
            rates[name] = None
    return rates


def evaluate(model_path: str, out: Path, args: argparse.Namespace) -> dict:
    """Held-out response NLL (dev, test) and WikiText-2 perplexity of `model_path`, scored in `--score-dtype`."""
    from paser.recovery.evaluate import load_ppl_text, perplexity

    model, tokenizer = load_scoring_model(model_path, args.score_dtype)
    scores = response_nlls(model, tokenizer, out / "rows", HELD_OUT)
    text = load_ppl_text("wikitext2")
    ppl = perplexity(model, tokenizer, text, seqlen=args.ppl_seqlen, limit=args.ppl_windows)
    scores["wikitext2"] = {"ppl": ppl["ppl"], "windows": ppl["n_windows"], "seqlen": ppl["seqlen"]}
    return scores


def keep_token_jsd(args: argparse.Namespace, out: Path) -> Path:
    """The training rows scored (original vs pruned, in `--score-dtype`) with the per-token JSD kept, as training
    tokenises them; returns the score shard folder (`--out/token_jsd`; finished shards are reused)."""
    from paser.recovery.config import TrainConfig
    from paser.recovery.models import load_model
    from paser.recovery.train import load_training_rows
    from paser.selection.config import DegradationConfig
    from paser.selection.degradation import score_degradation

    folder = out / "token_jsd"
    if (folder / "done").exists():
        return folder
    original, tokenizer = load_model(args.original, dtype=args.score_dtype, device="cpu")
    pruned, _ = load_model(args.pruned, dtype=args.score_dtype, device="cpu")
    rows = load_training_rows(out / "rows" / "train.jsonl", tokenizer, TrainConfig(show_progress=False))
    score_degradation(original, pruned, rows.encoded, DegradationConfig(keep_token_jsd=True), shard_dir=folder)
    (folder / "done").write_text("ok\n")
    return folder


def run_setting(name: str, values: dict, args: argparse.Namespace, out: Path) -> None:
    """Train and score one setting in this process; write `settings/NAME.json`."""
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import recover

    defaults = {"epochs": args.epochs, "seed": args.seed, "show_progress": False, "remask_eval": "none"}
    config = TrainConfig.from_flat({**defaults, **values})
    started = time.perf_counter()
    result = recover(args.pruned, out / "rows" / "train.jsonl", out / "models" / name, config, original=args.original)
    wall = time.perf_counter() - started
    peak = peak_rss_gb()  # of training: before the scoring below loads the merged model
    record = result.record
    payload = {
        "setting": values,
        "config": config.to_dict(),
        "scores": evaluate(str(result.paths["merged"]), out, args),
        "wall_seconds": wall,
        "train_seconds": record["seconds"]["train"],
        "steps": record["training"]["steps"],
        "compute": record["compute"],
        "peak_rss_gb": peak,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
    }
    write_json(out / "settings" / f"{name}.json", payload)


def closed(scores: dict, original: dict, pruned: dict) -> dict[str, float]:
    """Share of the gap closed on each held-out set's NLL and on WikiText-2 perplexity."""
    shares = {name: gap_closed(scores[name]["nll"], original[name]["nll"], pruned[name]["nll"]) for name in HELD_OUT}
    ppl = (scores["wikitext2"]["ppl"], original["wikitext2"]["ppl"], pruned["wikitext2"]["ppl"])
    return {**shares, "wikitext2": gap_closed(*ppl)}


def cached_targets_flops(out: Path, name: str, payload: dict) -> float:
    """What the original's answers that `name` read from a targets cache (`targets: original`) cost to generate,
    in FLOPs (forward 2·N·P over their prompts and answers): recovery.json counts only what a run generated itself
    (the marginal cost), so a setting rerun on a cache would look cheaper than the recipe is. 0 without cached
    targets. The rows' prompt tokens are what each epoch trained less the answers' tokens (every row trains once
    per epoch: whole epochs)."""
    from paser.recovery.flops import forward_flops

    path = out / "models" / name / "recovery.json"
    if not path.exists():
        return 0.0
    targets = json.loads(path.read_text()).get("targets")
    if not targets or not targets["generation"].get("from_cache"):
        return 0.0
    generation = targets["generation"]
    per_epoch = payload["compute"]["tokens"]["trained"] / payload["config"]["epochs"]
    cached_share = generation["from_cache"] / generation["rows"]
    return forward_flops(per_epoch * cached_share, targets["model"]["parameters"])


def report(out: Path, original: dict, pruned: dict, names: list[str], failed: dict[str, str]) -> None:
    print("original: " + ", ".join(f"{s} NLL {original[s]['nll']:.4f}" for s in HELD_OUT), end="")
    print(f", WikiText-2 ppl {original['wikitext2']['ppl']:.2f}")
    print("pruned:   " + ", ".join(f"{s} NLL {pruned[s]['nll']:.4f}" for s in HELD_OUT), end="")
    print(f", WikiText-2 ppl {pruned['wikitext2']['ppl']:.2f}")
    print("share of the pruning gap closed (NLL on dev/test, perplexity on WikiText-2):")
    header = f"{'setting':<14} {'lr':>8} {'dev':>7} {'test':>7} {'wiki2':>7} {'FLOPs':>9} {'wall s':>7} {'peak GB':>8}"
    print(header + f" {'+ cached targets':>16}")
    rows = []
    for name in names:
        if name in failed:
            print(f"{name:<14} failed: {failed[name]}")
            continue
        payload = json.loads((out / "settings" / f"{name}.json").read_text())
        shares = closed(payload["scores"], original, pruned)
        cached = cached_targets_flops(out, name, payload)
        rows.append({"name": name, **payload, "closed": shares, "cached_targets_flops": cached})
        print(
            f"{name:<14} {payload['config']['learning_rate_effective']:>8.1e} "
            + " ".join(f"{shares[s]:>7.1%}" for s in (*HELD_OUT, "wikitext2"))
            + f" {payload['compute']['flops']['total']:>9.3g} {payload['wall_seconds']:>7.0f}"
            + f" {payload['peak_rss_gb']:>8.2f}"
            + (f" {cached:>16.3g}" if cached else "")
        )
    summary = {"original": original, "pruned": pruned, "settings": rows, "failed": failed}
    write_json(out / "results.json", summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruned", required=True, help="pruned checkpoint folder (made with paser prune if missing)")
    parser.add_argument("--original", default="smollm2", help="original model (baselines, teacher, targets)")
    parser.add_argument("--out", required=True, help="folder for rows, baselines, models and per-setting results")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated: " + ", ".join(SETTINGS))
    parser.add_argument("--setting", action="append", default=[], help="NAME:key=value,... adds or replaces one")
    parser.add_argument("--lr", action="append", default=[], help="NAME=VALUE: a setting's learning rate")
    parser.add_argument("--tuned", help="bench/recipe_tuning.py's results.json: the dev-tuned learning rates")
    parser.add_argument("--train-rows", type=int, default=150)
    parser.add_argument("--dev-rows", type=int, default=100)
    parser.add_argument("--test-rows", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=2.0, help="epochs of every setting")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row draws and the training")
    parser.add_argument("--ppl-windows", type=int, default=16, help="WikiText-2 test windows scored")
    parser.add_argument("--ppl-seqlen", type=int, default=1024, help="tokens per WikiText-2 window")
    parser.add_argument("--score-dtype", default="fp32", help="dtype of the NLL, perplexity and JSD scoring")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-values", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    settings = {**SETTINGS, **dict(parse_setting(text) for text in args.setting)}
    names = list(dict.fromkeys([*args.settings.split(","), *(parse_setting(t)[0] for t in args.setting)]))
    unknown = [name for name in names if name not in settings]
    if unknown:
        raise SystemExit(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(settings)}")
    if args.one:
        run_setting(args.one, json.loads(args.one_values), args, out)
        return
    make_pruned(args.pruned, args.original, calibration_samples=32, seqlen=512)
    if not (out / "rows" / "done").exists():
        sizes = {"train": args.train_rows, "dev": args.dev_rows, "test": args.test_rows}
        draw_alpaca_rows(out / "rows", args.seed, sizes)
        (out / "rows" / "done").write_text("ok\n")
    original = cached_json(out / "baselines" / "original.json", lambda: evaluate(args.original, out, args))
    pruned = cached_json(out / "baselines" / "pruned.json", lambda: evaluate(args.pruned, out, args))
    given = {}
    for text in args.lr:
        name, sep, value = text.partition("=")
        if not sep:
            raise SystemExit(f"--lr {text!r}: expected NAME=VALUE")
        given[name] = float(value)
    tuned = json.loads(Path(args.tuned).read_text()) if args.tuned else None
    rates = learning_rates(names, settings, given, tuned)
    failed = {}
    for name in names:
        if (out / "settings" / f"{name}.json").exists():
            continue
        values = dict(settings[name])
        if rates[name] is not None:
            values["learning_rate"] = rates[name]
        if values.get("token_weighting", "none") != "none" and "token_jsd" not in values:
            values["token_jsd"] = str(keep_token_jsd(args, out))
        print(f"training {name} ({values}) ...", flush=True)
        command = [sys.executable, __file__, *sys.argv[1:], "--one", name, "--one-values", json.dumps(values)]
        finished = subprocess.run(command)
        if finished.returncode != 0:
            failed[name] = f"exit {finished.returncode}"
    report(out, original, pruned, names, failed)


if __name__ == "__main__":
    main()
