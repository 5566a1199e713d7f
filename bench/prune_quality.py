"""Quality of the pruning methods: WikiText-2 perplexity of SmolLM2-135M-Instruct pruned by each method.

Calibration: `--calibration-windows` random windows of `--seqlen` tokens (seeded) from the Alpaca-52K corpus,
its rows rendered as "instruction\\ninput\\noutput" (empty fields left out) and joined with "\\n\\n" — a local
stand-in for the project's calibration loader. Evaluation: perplexity on the first `--ppl-windows`
non-overlapping 1024-token windows of the WikiText-2 raw test split (rows joined with "\\n\\n", as the
Wanda/SparseGPT code does). Every method prunes a fresh copy of the dense model to the same target. Prints a
table: method, achieved sparsity, pruning seconds, perplexity.

    python bench/prune_quality.py
    python bench/prune_quality.py --methods wanda,sparsegpt --pattern 2:4 --calibration-windows 32
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import sys
import time
from pathlib import Path

import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.paths import data_file  # noqa: E402
from recovery.models import load_model  # noqa: E402
from recovery.prune import PruneTarget, prune_model  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"
WIKITEXT_FILE = "eval/wikitext2_raw_v1_test.jsonl"
PPL_SEQLEN = 1024


def alpaca_calibration(tokenizer, windows: int, seqlen: int, seed: int) -> torch.Tensor:
    """`windows` seeded random windows of `seqlen` tokens of the joined Alpaca text, [windows, seqlen] long."""
    with gzip.open(data_file(ALPACA_FILE), "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    text = "\n\n".join(
        "\n".join(part for part in (row["instruction"], row["input"], row["output"]) if part) for row in rows
    )
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen, (windows,), generator=generator)
    return torch.stack([ids[start : start + seqlen] for start in starts.tolist()])


def wikitext_windows(tokenizer, windows: int) -> torch.Tensor:
    """The first `windows` non-overlapping `PPL_SEQLEN`-token windows of the WikiText-2 test text."""
    with open(data_file(WIKITEXT_FILE), encoding="utf-8") as handle:
        text = "\n\n".join(json.loads(line)["text"] for line in handle)
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) < windows * PPL_SEQLEN:
        raise ValueError(f"WikiText-2 test has {len(ids)} tokens, fewer than {windows} windows of {PPL_SEQLEN}")
    return ids[: windows * PPL_SEQLEN].reshape(windows, PPL_SEQLEN)


@torch.no_grad()
def perplexity(model: torch.nn.Module, windows: torch.Tensor) -> float:
    """exp of the mean next-token NLL over all windows (each window scored on its own, no context carried)."""
    nll = sum(float(model(window.unsqueeze(0), labels=window.unsqueeze(0), use_cache=False).loss) for window in windows)
    return math.exp(nll / len(windows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="model to prune: alias, path or hub id")
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt", help="comma-separated pruning methods")
    parser.add_argument("--sparsity", type=float, default=None, help="unstructured target (default 0.5)")
    parser.add_argument("--pattern", default=None, help="N:M target instead of --sparsity, e.g. 2:4")
    parser.add_argument("--calibration-windows", type=int, default=16, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per calibration window")
    parser.add_argument("--ppl-windows", type=int, default=8, help="1024-token WikiText-2 windows to score")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration window offsets")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.sparsity is None and args.pattern is None:
        args.sparsity = 0.5
    target = PruneTarget.from_args(sparsity=args.sparsity, pattern=args.pattern)

    started = time.perf_counter()
    dense, tokenizer = load_model(args.model, dtype="fp32", device=args.device)
    calibration = alpaca_calibration(tokenizer, args.calibration_windows, args.seqlen, args.seed)
    evaluation = wikitext_windows(tokenizer, args.ppl_windows).to(args.device)
    print(f"loaded {args.model} and data in {time.perf_counter() - started:.1f}s", flush=True)

    rows = [("dense", 0.0, 0.0, perplexity(dense, evaluation))]
    print(f"dense: ppl {rows[-1][3]:.2f}", flush=True)
    for method in args.methods.split(","):
        model = copy.deepcopy(dense)
        record = prune_model(model, method, target, calibration)
        rows.append((method, record["total_sparsity"], record["seconds"], perplexity(model, evaluation)))
        print(f"{method}: ppl {rows[-1][3]:.2f}, pruned in {record['seconds']:.1f}s", flush=True)
        del model

    print(
        f"\n{args.model}, target {target.describe()}, calibration {args.calibration_windows}x{args.seqlen} Alpaca "
        f"tokens, WikiText-2 test {args.ppl_windows}x{PPL_SEQLEN} tokens, device {args.device}"
    )
    print(f"{'method':<10} {'sparsity':>8} {'prune s':>8} {'ppl':>9}")
    for method, sparsity, seconds, ppl in rows:
        print(f"{method:<10} {sparsity:>8.4f} {seconds:>8.1f} {ppl:>9.2f}")


if __name__ == "__main__":
    main()
