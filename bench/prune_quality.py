"""Quality of the pruning methods: WikiText-2 perplexity of SmolLM2-135M-Instruct pruned by each method.

Calibration: `--calibration-windows` seeded windows of `--seqlen` tokens drawn by the project's loader
(`recovery.calibration`) from `--calibration` (default: the Alpaca-52K file of the data directory, rows
rendered with the scorer's prompt). Evaluation: `recovery.evaluate.perplexity` (the SparseGPT protocol) on the
first `--ppl-windows` non-overlapping `--ppl-seqlen`-token windows of the WikiText-2 raw test split. Every
method prunes a fresh copy of the dense model to the same target; `--drop` adds a layer-drop row. Prints a
table: method, achieved sparsity, pruning seconds, perplexity.

    python bench/prune_quality.py --threads 1
    python bench/prune_quality.py --methods wanda,sparsegpt --pattern 2:4 --calibration-windows 32
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.paths import data_file  # noqa: E402
from recovery.calibration import load_calibration  # noqa: E402
from recovery.evaluate import load_ppl_text, perplexity  # noqa: E402
from recovery.models import load_model  # noqa: E402
from recovery.prune import PruneTarget, prune_model  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="model to prune: alias, path or hub id")
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt", help="comma-separated pruning methods")
    parser.add_argument("--sparsity", type=float, default=None, help="unstructured target (default 0.5)")
    parser.add_argument("--pattern", default=None, help="N:M target instead of --sparsity, e.g. 2:4")
    parser.add_argument("--calibration", default=None, help="calibration source (default: Alpaca-52K file)")
    parser.add_argument("--drop", type=float, default=None, help="also layer-drop this fraction of blocks")
    parser.add_argument("--ppl-seqlen", type=int, default=1024, help="tokens per WikiText-2 window")
    parser.add_argument("--calibration-windows", type=int, default=16, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per calibration window")
    parser.add_argument("--ppl-windows", type=int, default=8, help="WikiText-2 windows to score")
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
    source = args.calibration or str(data_file(ALPACA_FILE))
    calibration, _ = load_calibration(source, tokenizer, args.calibration_windows, args.seqlen, args.seed)
    text = load_ppl_text("wikitext2")

    def ppl(model: torch.nn.Module) -> float:
        return perplexity(model, tokenizer, text, seqlen=args.ppl_seqlen, batch_size=1, limit=args.ppl_windows)["ppl"]

    print(f"loaded {args.model} and data in {time.perf_counter() - started:.1f}s", flush=True)

    rows = [("dense", 0.0, 0.0, ppl(dense))]
    print(f"dense: ppl {rows[-1][3]:.2f}", flush=True)
    runs = [(method, target) for method in args.methods.split(",")]
    if args.drop is not None:
        runs.append(("layer_drop", PruneTarget(drop=args.drop)))
    for method, method_target in runs:
        model = copy.deepcopy(dense)
        record = prune_model(model, method, method_target, calibration)
        rows.append((method, record["total_sparsity"], record["seconds"], ppl(model)))
        print(f"{method}: ppl {rows[-1][3]:.2f}, pruned in {record['seconds']:.1f}s", flush=True)
        del model

    print(
        f"\n{args.model}, target {target.describe()}, calibration {args.calibration_windows}x{args.seqlen} tokens "
        f"from {source}, WikiText-2 test {args.ppl_windows}x{args.ppl_seqlen} tokens, device {args.device}"
    )
    print(f"{'method':<10} {'sparsity':>8} {'prune s':>8} {'ppl':>9}")
    for method, sparsity, seconds, value in rows:
        print(f"{method:<10} {sparsity:>8.4f} {seconds:>8.1f} {value:>9.2f}")


if __name__ == "__main__":
    main()
