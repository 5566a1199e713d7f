"""Recovery by LoRA SFT, measured: held-out response NLL of the dense, pruned and recovered model side by side.

Draws `--train-rows` and a disjoint `--heldout-rows` Alpaca rows (seeded, from the data directory's
Alpaca-52K file), writes the training rows to `--out/train_rows.jsonl`, runs `paser.recovery.train.recover`
(`--objective`, default sft, 1 epoch) on the pruned model, and scores the held-out rows' response tokens
(`paser.recovery.evaluate.response_nll`, the same tokens and mask as training) with the original, the pruned and the
merged recovered model. Prints the three NLLs, the share of the pruning gap the training closed, wall time,
seconds per step, trained tokens per second, and sparsity before/after.

    python bench/recover_sft.py --pruned /tmp/smollm2-wanda-50 --out /tmp/recover-bench
    python bench/recover_sft.py --pruned P --out O --train-rows 100 --heldout-rows 50 --max-steps 5   # quick
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.data.paths import data_file  # noqa: E402
from paser.recovery.config import TrainConfig  # noqa: E402
from paser.recovery.evaluate import response_nll  # noqa: E402
from paser.recovery.models import load_model, load_tokenizer  # noqa: E402
from paser.recovery.train import load_training_rows, recover  # noqa: E402
from paser.selection.corpus import CorpusConfig, load_corpus  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"


def _nll(model_name: str, rows, batch_size: int) -> dict:
    model, _ = load_model(model_name, dtype="fp32", device="cpu")
    return response_nll(model, rows.encoded, batch_size=batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruned", required=True, help="pruned checkpoint folder")
    parser.add_argument("--original", default="smollm2", help="original model (reference NLL; distill teacher)")
    parser.add_argument("--out", required=True, help="folder for the training rows and the recovery outputs")
    parser.add_argument("--objective", default="sft", help="sft, dpo, distill or sft+dpo")
    parser.add_argument("--train-rows", type=int, default=500, help="Alpaca rows to train on")
    parser.add_argument("--heldout-rows", type=int, default=200, help="disjoint Alpaca rows to score")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training rows")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after N steps (-1: the epochs)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per row")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row draw and the training")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    corpus = load_corpus(CorpusConfig(path=str(data_file(ALPACA_FILE))))
    rows = list(corpus.samples)
    random.Random(args.seed).shuffle(rows)
    train, heldout = rows[: args.train_rows], rows[args.train_rows : args.train_rows + args.heldout_rows]
    train_file = out / "train_rows.jsonl"
    with train_file.open("w", encoding="utf-8") as stream:
        for sample in train:
            stream.write(json.dumps({**sample.raw, "id": sample.id}) + "\n")
    heldout_file = out / "heldout_rows.jsonl"
    with heldout_file.open("w", encoding="utf-8") as stream:
        for sample in heldout:
            stream.write(json.dumps({**sample.raw, "id": sample.id}) + "\n")

    config = TrainConfig(
        objective=args.objective,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        device="cpu",
        dtype="fp32",
    )
    tokenizer = load_tokenizer(args.pruned)
    held = load_training_rows(heldout_file, tokenizer, config)
    nll_original = _nll(args.original, held, args.batch_size)
    nll_pruned = _nll(args.pruned, held, args.batch_size)

    started = time.perf_counter()
    result = recover(args.pruned, train_file, out / "recovery", config, original=args.original)
    wall = time.perf_counter() - started
    nll_recovered = _nll(str(result.paths["merged"]), held, args.batch_size)

    record = result.record
    steps = record["training"]["steps"]
    tokens = record["tokens_per_epoch"]["total"] * min(args.epochs, steps * args.batch_size / len(train))
    gap = nll_pruned["nll"] - nll_original["nll"]
    closed = (nll_pruned["nll"] - nll_recovered["nll"]) / gap if gap > 0 else float("nan")
    print(f"rows: {record['rows']['used']} trained, {len(held.encoded)} held out ({nll_original['tokens']} tokens)")
    print("held-out response NLL (nats/token) | ppl")
    for name, value in (("original", nll_original), ("pruned", nll_pruned), ("recovered", nll_recovered)):
        print(f"  {name:<10} {value['nll']:.4f} | {value['ppl']:.2f}")
    print(f"pruning gap closed by {args.objective}: {closed:.1%}")
    sparsity = record["sparsity"]
    print(
        f"sparsity: before {sparsity['total_before']:.4f}, after merge {sparsity['total_after_merge']:.4f}, "
        f"after re-mask {sparsity['total_after_remask']}"
    )
    train_seconds = record["seconds"]["train"]
    print(
        f"time: {wall:.0f} s total, {train_seconds:.0f} s training, {steps} steps, {train_seconds / steps:.2f} s/step, "
        f"{tokens / train_seconds:.0f} tokens/s, {torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
