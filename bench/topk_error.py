"""Error of top-k degradation scoring (`paser.selection.topk`) against exact scoring (`score_degradation`).

Scores the first valid Alpaca-52K rows with both models side by side (exact CDS), then, for each k, caches
the original's top-k view (`cache_original_topk`) and scores the pruned model from it with each estimator
(`score_from_topk`): "bucket" (the k + 1 bucket lower bound) and "sampled_tail" (top-k terms + sampled tail
estimate). Default models: SmolLM2-135M-Instruct and a magnitude-pruned copy of it (50%, or --sparsity).
Per (k, estimator) it prints: mean and max |cds − exact cds|, the relative error of the mean cds, the
Spearman rank correlation with the exact cds, the overlap of the top-5% rows by cds (what selection takes),
the cache's size on disk per response token, and the wall time of each pass beside the exact path's.

    python bench/topk_error.py --rows 200
    python bench/topk_error.py --rows 200 --sparsity 0.2 --k 16 64 --tail-samples 64
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.data.paths import data_file  # noqa: E402
from paser.recovery.models import load_model  # noqa: E402
from paser.recovery.prune import prune_model  # noqa: E402
from paser.recovery.pruners import PruneTarget  # noqa: E402
from paser.selection.config import DegradationConfig  # noqa: E402
from paser.selection.corpus import CorpusConfig, load_corpus  # noqa: E402
from paser.selection.degradation import score_degradation  # noqa: E402
from paser.selection.formatting import check_same_tokenizer, encode_corpus  # noqa: E402
from paser.selection.topk import ESTIMATORS, cache_original_topk, score_from_topk  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman rank correlation: Pearson correlation of the (average) ranks."""
    return float(np.corrcoef(a.rank(), b.rank())[0, 1])


def top_overlap(exact: pd.Series, approximate: pd.Series, fraction: float = 0.05) -> float:
    """Share of the exact top-`fraction` rows (by value) that are also in the approximate top-`fraction`."""
    count = max(1, math.ceil(fraction * len(exact)))
    return len(set(exact.nlargest(count).index) & set(approximate.nlargest(count).index)) / count


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200, help="Alpaca rows to score (the first valid ones)")
    parser.add_argument("--original", default="smollm2", help="original model: alias, path or hub id")
    parser.add_argument("--pruned", default=None, help="pruned model path; default: magnitude-pruned copy")
    parser.add_argument("--sparsity", type=float, default=0.5, help="magnitude sparsity when --pruned is not given")
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 256], help="top-k sizes to measure")
    parser.add_argument("--tail-samples", type=int, default=16, help="tail samples per token in the cache")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="compute dtype of both models")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per row (response tail truncated)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    corpus = load_corpus(CorpusConfig(path=str(data_file(ALPACA_FILE)), limit=2 * args.rows + 100))
    original, tokenizer = load_model(args.original, dtype=args.dtype, device="cpu")
    if args.pruned:
        pruned, pruned_tokenizer = load_model(args.pruned, dtype=args.dtype, device="cpu")
        check_same_tokenizer(tokenizer, pruned_tokenizer)
        pruned_name = args.pruned
    else:
        pruned = copy.deepcopy(original)
        prune_model(pruned, "magnitude", PruneTarget(sparsity=args.sparsity))
        pruned_name = f"magnitude {args.sparsity:.0%}"
    encoded, _, _ = encode_corpus(corpus.samples, tokenizer, args.max_length, show_progress=False)
    encoded = encoded[: args.rows]
    if len(encoded) < args.rows:
        raise SystemExit(f"only {len(encoded)} valid rows within the first {2 * args.rows + 100}")
    response_tokens = sum(sample.response_length for sample in encoded)
    config = DegradationConfig(show_progress=False)

    with tempfile.TemporaryDirectory(prefix="topk_error-") as work_dir:
        # Warm-up: first-call allocations and kernels of both paths.
        score_degradation(original, pruned, encoded[:2], config)
        cache_original_topk(original, encoded[:2], config, Path(work_dir) / "warm", k=args.k[0])
        score_from_topk(pruned, encoded[:2], config, Path(work_dir) / "warm")

        exact, exact_seconds = timed(lambda: score_degradation(original, pruned, encoded, config))
        lines = []
        for k in args.k:
            folder = Path(work_dir) / f"k{k}"
            _, cache_seconds = timed(
                lambda folder=folder, k=k: cache_original_topk(
                    original, encoded, config, folder, k=k, tail_samples=args.tail_samples
                )
            )
            cache_bytes = sum(path.stat().st_size for path in folder.glob("shard-*.npz"))
            for estimator in ESTIMATORS:
                scores, score_seconds = timed(
                    lambda folder=folder, estimator=estimator: score_from_topk(
                        pruned, encoded, config, folder, estimator=estimator
                    )
                )
                error = scores["cds"] - exact["cds"]
                lines.append(
                    f"{k:>5} {estimator:>12} {error.abs().mean():>10.5f} {error.abs().max():>10.5f} "
                    f"{scores['cds'].mean() / exact['cds'].mean() - 1:>+9.4f} "
                    f"{spearman(scores['cds'], exact['cds']):>8.4f} {top_overlap(exact['cds'], scores['cds']):>8.2f} "
                    f"{cache_bytes / response_tokens:>9.1f} {cache_seconds:>8.1f} {score_seconds:>8.1f}"
                )

    print(
        f"rows={len(encoded)} response_tokens={response_tokens} original={args.original} pruned={pruned_name} "
        f"dtype={args.dtype} threads={torch.get_num_threads()} tail_samples={args.tail_samples} "
        f"exact mean cds={exact['cds'].mean():.4f} exact path={exact_seconds:.1f} s"
    )
    print(
        f"{'k':>5} {'estimator':>12} {'mean|err|':>10} {'max|err|':>10} {'rel.mean':>9} {'spearman':>8} "
        f"{'top5%':>8} {'B/token':>9} {'cache s':>8} {'score s':>8}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
