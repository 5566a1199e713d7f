"""Throughput of degradation scoring (`score_degradation`) against a naive per-sample reference.

The reference mimics the published PASER code: one sample at a time, each model's full
`model(input_ids).logits` and softmax over every position, each model run twice per sample (as that code
does), the JSD averaged over the response positions afterwards. Both score the same first valid Alpaca-52K
rows with the same two models (default: SmolLM2-135M-Instruct and a 50% magnitude-pruned copy of it). The last
line printed is `key=value` pairs: rows, ours_rows_per_s, naive_rows_per_s, speedup, max_abs_diff (largest
|cds difference| between the two), and the settings.

    python bench/score_throughput.py --rows 256
    python bench/score_throughput.py --rows 64 --pruned /tmp/paser_models/smollm2-magnitude-50 --dtype fp32
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.recovery.models import load_model  # noqa: E402
from paser.recovery.prune import prune_model  # noqa: E402
from paser.recovery.pruners import PruneTarget  # noqa: E402
from paser.selection.config import DegradationConfig  # noqa: E402
from paser.selection.corpus import CorpusConfig, load_corpus  # noqa: E402
from paser.selection.degradation import score_degradation  # noqa: E402
from paser.selection.formatting import EncodedSample, check_same_tokenizer, encode_corpus  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"


def naive_cds(original: torch.nn.Module, pruned: torch.nn.Module, sample: EncodedSample) -> float:
    """Mean JSD over the response positions, computed the reference code's way (see the module docstring)."""
    ids = torch.tensor([sample.input_ids], device=original.device)
    probabilities = []
    for model in (original, pruned):
        with torch.no_grad():
            model(ids)  # the reference runs each model a second time on the same text
            logits = model(ids).logits
        probabilities.append(torch.softmax(logits[0].float(), dim=-1))
    p, q = probabilities
    mixture_log = ((p + q) / 2).log()
    kl_p = torch.nn.functional.kl_div(mixture_log, p, reduction="none").sum(-1)
    kl_q = torch.nn.functional.kl_div(mixture_log, q, reduction="none").sum(-1)
    jsd = 0.5 * (kl_p + kl_q)
    return jsd[sample.prompt_length - 1 : sample.length - 1].mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256, help="Alpaca rows to score (the first valid ones)")
    parser.add_argument("--original", default="smollm2", help="original model: alias, path or hub id")
    parser.add_argument("--pruned", default=None, help="pruned model path; default: 50%% magnitude-pruned copy")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="compute dtype of both models")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per row (response tail truncated)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data_dir = Path(os.environ.get("PASER_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    corpus = load_corpus(CorpusConfig(path=str(data_dir / ALPACA_FILE), limit=2 * args.rows + 100))
    original, tokenizer = load_model(args.original, dtype=args.dtype, device="cpu")
    if args.pruned:
        pruned, pruned_tokenizer = load_model(args.pruned, dtype=args.dtype, device="cpu")
        check_same_tokenizer(tokenizer, pruned_tokenizer)
    else:
        pruned = copy.deepcopy(original)
        prune_model(pruned, "magnitude", PruneTarget(sparsity=0.5))
    encoded, _, _ = encode_corpus(corpus.samples, tokenizer, args.max_length, show_progress=False)
    encoded = encoded[: args.rows]
    if len(encoded) < args.rows:
        raise SystemExit(f"only {len(encoded)} valid rows within the first {2 * args.rows + 100}")
    tokens = sum(sample.length for sample in encoded)
    response_tokens = sum(sample.response_length for sample in encoded)

    config = DegradationConfig(show_progress=False)
    score_degradation(original, pruned, encoded[:2], config)  # warm-up: first-call allocations and kernels
    naive_cds(original, pruned, encoded[0])

    started = time.perf_counter()
    ours = score_degradation(original, pruned, encoded, config)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    naive = [naive_cds(original, pruned, sample) for sample in encoded]
    naive_seconds = time.perf_counter() - started

    max_abs_diff = max(abs(a - b) for a, b in zip(ours["cds"].tolist(), naive, strict=True))
    print(f"ours: {ours_seconds:.1f} s, naive: {naive_seconds:.1f} s, mean cds {ours['cds'].mean():.4f}")
    print(
        f"rows={len(encoded)} ours_rows_per_s={len(encoded) / ours_seconds:.3f} "
        f"naive_rows_per_s={len(encoded) / naive_seconds:.3f} speedup={naive_seconds / ours_seconds:.2f} "
        f"max_abs_diff={max_abs_diff:.2e} tokens={tokens} response_tokens={response_tokens} "
        f"dtype={args.dtype} threads={torch.get_num_threads()} "
        f"tokens_per_batch={config.tokens_per_batch} position_chunk={config.position_chunk}"
    )


if __name__ == "__main__":
    main()
