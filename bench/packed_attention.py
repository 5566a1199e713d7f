"""What padding-free batches (`recovery.padding_free`) cost in attention, by row length, on this machine.

A padding-free batch lays its rows end to end in one sequence with each row's position ids; transformers then
attends within each row through a block-diagonal mask over the whole sequence. Without a variable-length kernel
(flash-attention's varlen path on CUDA), the attention still computes every pair of the packed sequence: its
cost grows with (rows × length)², where a padded batch's grows with rows × length². Padding-free saves the
padding's compute in the linear layers, so it wins for short rows (Alpaca's) and can lose for long ones.

Two measurements per (rows, length), side by side in one process, one thread by default:
- one attention layer of the model's shape (`torch.nn.functional.scaled_dot_product_attention`): a padded
  causal batch against the packed sequence under its block mask;
- the whole model's forward (no grad) on the same rows: padded (every row full length, so no padding at all:
  the best case for the padded batch) against packed with position ids, and the largest difference of their
  logits (the two must agree). Without a cache (`use_cache=False`, as in training): transformers reads packed
  rows from the position ids only when there is no cache.

    python bench/packed_attention.py --model smollm2 --rows 8 --lengths 128 512 1024
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fastest(fn, repeats: int, warm_up: bool) -> tuple[float, object]:
    """(the fastest of `repeats` timed calls of `fn`, the last call's result); one untimed call first if
    `warm_up`."""
    if warm_up:
        fn()
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def attention_seconds(rows: int, length: int, heads: int, head_dim: int, repeats: int) -> tuple[float, float]:
    """One attention layer: (padded causal batch, packed sequence under a block-diagonal causal mask), seconds."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(rows, heads, length, head_dim, generator=generator)
    packed = q.transpose(0, 1).reshape(1, heads, rows * length, head_dim)
    segment = torch.arange(rows * length) // length
    position = torch.arange(rows * length)
    mask = (segment[:, None] == segment[None, :]) & (position[:, None] >= position[None, :])
    sdpa = torch.nn.functional.scaled_dot_product_attention
    padded_s, _ = _fastest(lambda: sdpa(q, q, q, is_causal=True), repeats, warm_up=True)
    packed_s, _ = _fastest(lambda: sdpa(packed, packed, packed, attn_mask=mask[None, None]), repeats, warm_up=True)
    return padded_s, packed_s


def model_seconds(model, rows: int, length: int, vocab: int, repeats: int) -> tuple[float, float, float]:
    """The whole model's forward: (padded, packed, max |logit difference|); the fastest of `repeats` calls each
    (no warm-up call: a forward of this size takes seconds)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (rows, length), generator=generator)
    packed_ids = ids.reshape(1, rows * length)
    position_ids = torch.arange(length).repeat(rows)[None, :]

    def forward(**inputs):
        with torch.no_grad():
            return model(**inputs, use_cache=False).logits

    padded_s, padded = _fastest(lambda: forward(input_ids=ids), repeats, warm_up=False)
    packed_s, packed = _fastest(
        lambda: forward(input_ids=packed_ids, position_ids=position_ids), repeats, warm_up=False
    )
    difference = (padded.reshape(1, rows * length, -1) - packed).abs().max().item()
    return padded_s, packed_s, difference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="model name or checkpoint folder (its shape and weights)")
    parser.add_argument("--rows", type=int, default=8, help="rows per batch (paser recover's default batch is 8)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024], help="tokens per row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per measurement (the fastest is kept)")
    parser.add_argument("--no-model", action="store_true", help="only the attention layer")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from paser.recovery.models import load_model, load_model_config

    config = load_model_config(args.model)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    model = None
    if not args.no_model:
        model, _ = load_model(args.model, dtype="fp32")
        model.eval()
    print(
        f"model {args.model}: {config.num_hidden_layers} layers, {heads} heads x {head_dim}; rows per batch "
        f"{args.rows}; torch {torch.__version__}, {args.threads} thread(s); seconds are the fastest of "
        f"{args.repeats} calls"
    )
    print(f"{'length':>6} {'attn padded':>12} {'attn packed':>12} {'ratio':>6}", end="")
    print("" if model is None else f" {'model padded':>13} {'model packed':>13} {'ratio':>6} {'max |dlogit|':>13}")
    for length in args.lengths:
        padded, packed = attention_seconds(args.rows, length, heads, head_dim, args.repeats)
        print(f"{length:>6} {padded:>12.3f} {packed:>12.3f} {packed / padded:>6.1f}", end="", flush=True)
        if model is None:
            print()
            continue
        m_padded, m_packed, difference = model_seconds(model, args.rows, length, config.vocab_size, args.repeats)
        print(f" {m_padded:>13.2f} {m_packed:>13.2f} {m_packed / m_padded:>6.2f} {difference:>13.2e}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
