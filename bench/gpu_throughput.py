"""GPU throughput of degradation scoring (`score_degradation`) on a randomly initialised 1B-class Llama pair:
tokens/s, the overhead of the JSD + NLL over a forward-only baseline, and model FLOPs utilisation (MFU).

Models: two `LlamaForCausalLM` of the Llama-3.2-1B shape (hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 8192, vocab 128256, tied embeddings), random weights (throughput does not depend on the values).
The "pruned" model is a copy of the original with 50% of every decoder linear's weights zeroed by magnitude
(`paser.recovery.prune`, method "magnitude"); the zeros are stored densely, so it runs exactly as fast as the original.
`--shape llama-8b` is the Llama-3-8B shape (hidden 4096, 32 layers, intermediate 14336, untied head; 512 rows by
default); `--shape tiny` is a ~1M-parameter Llama for a CPU smoke run.

Rows: synthetic `EncodedSample`s, BOS + `--shared-prefix` tokens common to all rows (a chat template's system
header) + random tokens; prompt and response lengths are log-uniform in `--prompt-tokens` (prompt, including
BOS and the shared prefix) and `--response-tokens` (default 20–300 and 50–700: medians 77 and 187, like an
instruction corpus under a chat template; Alpaca-52K itself is shorter, median response ≈ 40 tokens).

Measured per setting, after a warm-up on other rows of the same distribution, with the device synchronised
around each timed region:
  forward  both models' decoder body on the same length-sorted, token-budgeted batches as scoring (the batching
           rule of `paser.selection.degradation` is mirrored here, per shard), then the output head on the positions
           that predict response tokens only, in chunks of `position_chunk`; logits are dropped. This is the
           least work any scorer must do.
  score    `score_degradation(original, pruned, rows, config)`: the same forwards plus float32 log-softmax, JSD
           and NLL, and whatever host work and synchronisation the scorer does.
jsd_overhead = score_s / forward_s − 1.

Model FLOPs (the same count for both measurements, real tokens only, padding excluded), per model:
  2 · N_nonembedding · tokens  +  attention 2 · layers · hidden · L² per row (QKᵀ and AV are 4 · layers ·
  hidden · L² for full attention; halved because causal attention computes half of it)  +  the output head
  2 · hidden · vocab per scored (response) position.
mfu = FLOPs / seconds / (--peak-tflops · 1e12); `mfu_full_attention` counts attention without the causal
halving, as some papers do. The scorer runs a prefix shared by all rows of a shard (here BOS + shared prefix)
once per shard; its FLOPs are counted as if run per row (1/mean length ≈ 0.3% at the default BOS-only prefix).

Each setting is measured once per `--compile-jsd` mode (default off,on: the scorer's eager chunk path against
its `torch.compile`-fused one, side by side). Prints progress with elapsed time; with `--sweep`, a table over
`--sweep-tokens` × `--sweep-chunks` × modes (a setting that runs out of memory is reported as such; settings that
would start after `--max-seconds` are skipped and listed). A batch also ends where rows get more than
`--max-padding` shorter than its longest, so with 1024-row shards of these lengths batches stay near 15k tokens
whatever the budget; raise `--max-batch-rows`,
`--max-padding` or `--shard-size` for large budgets to bind (the table's tok/bat column). The last line
printed is `key=value` pairs for the default setting (with `--sweep`: the one with the highest score tokens/s):
device, shape, dtype, attn, rows, tokens, response_tokens, the batching settings, forward_s, score_s,
forward_tokens_per_s and score_tokens_per_s (tokens through both models per second), forward_rows_per_s,
score_rows_per_s, jsd_overhead, forward_mfu, score_mfu, peak memory (GB), padding, and mean_cds (a sanity
check that the pruned model differs from the original). Before the first setting, one untimed forward-only
pass over the timed rows fills the CUDA caching allocator and cuBLAS's choices for those shapes: without it the
first setting's forward ran 10–40% slow on an H200 (bench/results/h200-2026-11-30), which made its overhead
look negative.

Measured on one NVIDIA H200 (2026-11-30, torch 2.11, transformers 5.17, bf16, SDPA; logs in
bench/results/h200-2026-11-30; MFU against the 989 TFLOP/s datasheet peak, ~790 measured for a large GEMM):
  llama-1b, 2048 rows (345 tok/row), 65536 tok/batch, chunk 4096: forward-only 181k tok/s (42.9% MFU);
           score eager 133k tok/s (overhead 36%), compiled 169k tok/s (overhead 7.0%, 40.1% MFU);
           max |cds eager − cds compiled| 7e-9.
  llama-8b, 512 rows: forward-only 33.4k tok/s (49.9% MFU); compiled score 32.3k tok/s (overhead 3.3%,
           48.3% MFU), 34.8 GB peak.

    python bench/gpu_throughput.py                          # H100/H200, bf16, SDPA, 2048 rows (~1 min)
    python bench/gpu_throughput.py --sweep --max-batch-rows 1024 --shard-size 4096   # table (~5 min)
    python bench/gpu_throughput.py --attn flash_attention_2 --tokens-per-batch 32768
    python bench/gpu_throughput.py --shape tiny --device cpu --dtype fp32   # CPU smoke run (< 1 min)
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.recovery.models import choose_dtype, default_device  # noqa: E402
from paser.recovery.prune import prune_model  # noqa: E402
from paser.recovery.pruners import PruneTarget  # noqa: E402
from paser.selection.degradation import (  # noqa: E402
    DegradationConfig,
    check_model_pair,
    length_batches,
    prepare_bodies,
    score_degradation,
)
from paser.selection.formatting import EncodedSample  # noqa: E402

SHAPES: dict[str, dict[str, object]] = {
    # Llama-3.2-1B's config (rope scaling omitted: it changes no FLOPs).
    "llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
        "max_position_embeddings": 131072,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
    # Llama-3-8B's config: the size of the models users actually prune.
    "llama-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
    "tiny": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 4096,
        "tie_word_embeddings": True,
        "max_position_embeddings": 2048,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
}
# Per shape: (rows, warm-up rows) unless --rows / --warmup-rows say otherwise.
DEFAULT_ROWS = {"llama-1b": (2048, 128), "llama-8b": (512, 64), "tiny": (16, 4)}
ATTENTION = ("sdpa", "flash_attention_2", "eager")


def build_model_pair(
    shape: str, dtype: torch.dtype, device: torch.device, attn_implementation: str, seed: int
) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    """(original, pruned, sparsity): a random-init Llama of `shape`, a copy of it 50% magnitude-pruned, both in
    eval mode, and the measured fraction of zeros over the pruned model's decoder linears."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape])
    torch.manual_seed(seed)
    with torch.device(device):
        original = LlamaForCausalLM._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    original.eval()
    pruned = copy.deepcopy(original)
    record = prune_model(pruned, "magnitude", PruneTarget(sparsity=0.5))
    return original, pruned, record["total_sparsity"]


def synthetic_rows(
    count: int,
    vocab_size: int,
    bos_token_id: int,
    prompt_range: tuple[int, int],
    response_range: tuple[int, int],
    shared_prefix: int,
    seed: int,
) -> list[EncodedSample]:
    """`count` rows: BOS, `shared_prefix` tokens common to all rows, then random tokens; prompt and response
    lengths log-uniform in their (inclusive) ranges, the prompt length counting BOS and the shared prefix."""
    if prompt_range[0] < shared_prefix + 2:
        raise ValueError(f"prompt lengths start at {prompt_range[0]}; need >= shared prefix + 2 = {shared_prefix + 2}")
    rng = np.random.default_rng(seed)

    def log_uniform(low: int, high: int) -> np.ndarray:
        return np.floor(np.exp(rng.uniform(math.log(low), math.log(high + 1), count))).astype(int).clip(low, high)

    prompt_lengths, response_lengths = log_uniform(*prompt_range), log_uniform(*response_range)
    # Ids from 3 on, below the vocab: no BOS/EOS inside the text.
    prefix = [bos_token_id, *rng.integers(3, vocab_size, shared_prefix).tolist()]
    rows = []
    for index, (prompt_length, response_length) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        body = rng.integers(3, vocab_size, prompt_length + response_length - len(prefix)).tolist()
        rows.append(EncodedSample(f"row-{index}", prefix + body, int(prompt_length), truncated=False))
    return rows


def shard_batches(encoded: Sequence[EncodedSample], config: DegradationConfig) -> list[list[EncodedSample]]:
    """All batches of rows, shard by shard, as the scorer forms them."""
    batches = []
    for start in range(0, len(encoded), config.shard_size):
        shard = encoded[start : start + config.shard_size]
        lengths = [sample.length for sample in shard]
        batches.extend([shard[index] for index in indices] for indices in length_batches(lengths, config))
    return batches


def forward_only(
    models: Sequence[torch.nn.Module], encoded: Sequence[EncodedSample], config: DegradationConfig
) -> None:
    """Each model's body on every batch, then its output head on the response-predicting positions, in chunks
    of `position_chunk`; no host-device synchronisation of its own (pinned, non-blocking copies)."""
    device = models[0].device
    pin = device.type == "cuda"
    for rows in shard_batches(encoded, config):
        width = max(sample.length for sample in rows)
        input_ids = torch.tensor([sample.input_ids + [0] * (width - sample.length) for sample in rows])
        row_of_position = torch.cat([torch.full((sample.response_length,), row) for row, sample in enumerate(rows)])
        positions = torch.cat([torch.arange(sample.prompt_length - 1, sample.length - 1) for sample in rows])
        tensors = [input_ids, row_of_position, positions]
        if pin:
            tensors = [tensor.pin_memory() for tensor in tensors]
        input_ids, row_of_position, positions = (tensor.to(device, non_blocking=True) for tensor in tensors)
        for model in models:
            # No mask, as the scorer: right padding is invisible to real positions under causal attention.
            hidden = model.get_decoder()(input_ids=input_ids, use_cache=False)
            scored = hidden.last_hidden_state[row_of_position, positions]
            head = model.get_output_embeddings()
            for start in range(0, len(scored), config.position_chunk):
                head(scored[start : start + config.position_chunk])


def model_flops(model: torch.nn.Module, encoded: Sequence[EncodedSample]) -> tuple[float, float]:
    """(FLOPs with causal attention halved, FLOPs with full attention) of one forward of `model` over the real
    tokens of `encoded`, output head on the response-predicting positions only; see the module docstring."""
    config = model.config
    embedding = model.get_input_embeddings().weight.numel()
    nonembedding = sum(parameter.numel() for parameter in model.get_decoder().parameters()) - embedding
    head = model.get_output_embeddings().weight
    tokens = sum(sample.length for sample in encoded)
    scored = sum(sample.response_length for sample in encoded)
    squares = sum(sample.length**2 for sample in encoded)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention_width = config.num_attention_heads * head_dim
    full_attention = 4.0 * config.num_hidden_layers * attention_width * squares
    dense = 2.0 * nonembedding * tokens + 2.0 * head.shape[0] * head.shape[1] * scored
    return dense + full_attention / 2, dense + full_attention


def timed(run: Callable[[], object], device: torch.device) -> tuple[float, float | None, object]:
    """(seconds, peak allocated GB or None off CUDA, result) of `run()`, with the device synchronised around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return seconds, peak, result


class Progress:
    """Prints a step with the seconds since the bench started."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)


def measure(
    original: torch.nn.Module,
    pruned: torch.nn.Module,
    encoded: Sequence[EncodedSample],
    warmup: Sequence[EncodedSample],
    config: DegradationConfig,
    progress: Progress,
) -> dict[str, float]:
    """Warm up, then time forward-only and `score_degradation` on `encoded` under `config`."""
    device = original.device
    models = [original, pruned]
    with torch.inference_mode():
        forward_only(models, warmup, config)
    score_degradation(original, pruned, warmup, config)
    with torch.inference_mode():
        forward_s, forward_peak, _ = timed(lambda: forward_only(models, encoded, config), device)
    progress(f"  forward {forward_s:.2f} s")
    score_s, score_peak, scores = timed(lambda: score_degradation(original, pruned, encoded, config), device)
    progress(f"  score   {score_s:.2f} s (mean cds {scores['cds'].mean():.4f})")
    batches = shard_batches(encoded, config)
    padded = sum(len(rows) * max(sample.length for sample in rows) for rows in batches)
    return {
        "forward_s": forward_s,
        "score_s": score_s,
        "forward_peak_gb": forward_peak,
        "score_peak_gb": score_peak,
        "batches": len(batches),
        "mean_batch_tokens": padded / len(batches),
        "padding": 1.0 - sum(sample.length for sample in encoded) / padded,
        "mean_cds": float(scores["cds"].mean()),
        "cds": scores["cds"].to_numpy(),
    }


def derived(result: dict[str, float], rows: int, tokens: int, flops: tuple[float, float], peak_tflops: float):
    """Throughputs, overhead and MFU from the measured seconds; tokens and FLOPs cover both models."""
    peak = peak_tflops * 1e12
    return {
        "forward_tokens_per_s": 2 * tokens / result["forward_s"],
        "score_tokens_per_s": 2 * tokens / result["score_s"],
        "forward_rows_per_s": rows / result["forward_s"],
        "score_rows_per_s": rows / result["score_s"],
        "jsd_overhead": result["score_s"] / result["forward_s"] - 1.0,
        "forward_mfu": flops[0] / result["forward_s"] / peak,
        "score_mfu": flops[0] / result["score_s"] / peak,
        "forward_mfu_full_attention": flops[1] / result["forward_s"] / peak,
        "score_mfu_full_attention": flops[1] / result["score_s"] / peak,
    }


def format_gb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def print_table(settings: list[tuple[int, int, str]], results: dict[tuple[int, int, str], dict | str]) -> None:
    header = (
        f"{'tok/batch':>9} {'chunk':>5} {'jsd':>4} {'batches':>7} {'tok/bat':>7} {'pad':>5} {'fwd_s':>7} "
        f"{'score_s':>7} "
        f"{'fwd_tok/s':>10} {'score_tok/s':>11} {'overhead':>8} {'fwd_mfu':>7} {'score_mfu':>9} "
        f"{'fwd_GB':>6} {'score_GB':>8}"
    )
    print(header)
    for tokens_per_batch, chunk, compile_jsd in settings:
        result = results.get((tokens_per_batch, chunk, compile_jsd), "skipped (time limit)")
        if isinstance(result, str):
            print(f"{tokens_per_batch:>9} {chunk:>5} {compile_jsd:>4} {result}")
            continue
        print(
            f"{tokens_per_batch:>9} {chunk:>5} {compile_jsd:>4} {result['batches']:>7} "
            f"{result['mean_batch_tokens']:>7.0f} "
            f"{result['padding']:>5.1%} "
            f"{result['forward_s']:>7.2f} {result['score_s']:>7.2f} {result['forward_tokens_per_s']:>10.0f} "
            f"{result['score_tokens_per_s']:>11.0f} {result['jsd_overhead']:>8.1%} {result['forward_mfu']:>7.1%} "
            f"{result['score_mfu']:>9.1%} {format_gb(result['forward_peak_gb']):>6} "
            f"{format_gb(result['score_peak_gb']):>8}"
        )


def int_pair(text: str) -> tuple[int, int]:
    low, high = (int(part) for part in text.split(","))
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"need 1 <= low <= high, got {text!r}")
    return low, high


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def compile_list(text: str) -> list[str]:
    modes = text.split(",")
    if not modes or any(mode not in ("auto", "on", "off") for mode in modes):
        raise argparse.ArgumentTypeError(f"need a comma list of auto/on/off, got {text!r}")
    return modes


def parse_arguments(defaults: DegradationConfig) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-1b", choices=sorted(SHAPES), help="model shape")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when visible, else cpu)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA), bf16, fp16 or fp32")
    parser.add_argument("--attn", default="sdpa", choices=ATTENTION, help="attn_implementation of both models")
    parser.add_argument("--rows", type=int, default=None, help="rows to score (default: 2048; tiny: 16)")
    parser.add_argument(
        "--warmup-rows",
        type=int,
        default=None,
        help="rows of the untimed warm-up, other than the timed ones (default: 128; tiny: 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the rows")
    parser.add_argument("--prompt-tokens", type=int_pair, default=(20, 300), help="prompt length range LOW,HIGH")
    parser.add_argument("--response-tokens", type=int_pair, default=(50, 700), help="response length range")
    parser.add_argument("--shared-prefix", type=int, default=0, help="tokens after BOS common to every row")
    parser.add_argument("--tokens-per-batch", type=int, default=defaults.tokens_per_batch)
    parser.add_argument("--position-chunk", type=int, default=defaults.position_chunk)
    parser.add_argument("--max-batch-rows", type=int, default=defaults.max_batch_rows)
    parser.add_argument("--max-padding", type=float, default=defaults.max_padding)
    parser.add_argument("--shard-size", type=int, default=defaults.shard_size, help="rows sorted together")
    parser.add_argument(
        "--compile-jsd",
        type=compile_list,
        default=["off", "on"],
        help="scorer's compile_jsd settings to measure, comma-separated (default off,on: eager against fused)",
    )
    parser.add_argument(
        "--compile-body",
        action="store_true",
        help="the scorer's compile_body: torch.compile each model's decoder body (dynamic shapes), for the "
        "forward-only baseline too",
    )
    parser.add_argument("--no-share-prefix", action="store_true", help="scorer: share_prompt_prefix=False")
    parser.add_argument("--sweep", action="store_true", help="measure every --sweep-tokens × --sweep-chunks")
    parser.add_argument("--sweep-tokens", type=int_list, default=[8192, 16384, 32768, 65536])
    parser.add_argument("--sweep-chunks", type=int_list, default=[1024, 4096])
    parser.add_argument("--max-seconds", type=float, default=400.0, help="start no sweep setting after this")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak (H100/H200 bf16 dense: 989)")
    return parser.parse_args()


def main() -> None:
    defaults = DegradationConfig()
    args = parse_arguments(defaults)
    progress = Progress()
    device = torch.device(args.device or default_device())
    dtype = choose_dtype(args.dtype, device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = args.rows or DEFAULT_ROWS[args.shape][0]
    warmup_rows = args.warmup_rows or DEFAULT_ROWS[args.shape][1]
    progress(
        f"device {device_name}, torch {torch.__version__}, dtype {str(dtype).removeprefix('torch.')}, "
        f"attn {args.attn}, shape {args.shape}"
    )
    original, pruned, sparsity = build_model_pair(args.shape, dtype, device, args.attn, args.seed)
    if args.compile_body:
        # As the scorer's compile_body does, before the forward-only baseline too, so both run compiled bodies.
        prepare_bodies(check_model_pair(original, pruned), replace(defaults, compile_body=True))
        progress("decoder bodies wrapped in torch.compile (compiled at the first warm-up)")
    parameters = sum(parameter.numel() for parameter in original.parameters())
    progress(f"built the model pair: {parameters / 1e6:.1f}M parameters each; pruned linear sparsity {sparsity:.3f}")

    vocab, bos = original.config.vocab_size, original.config.bos_token_id
    make_rows = (args.prompt_tokens, args.response_tokens, args.shared_prefix)
    encoded = synthetic_rows(rows, vocab, bos, *make_rows, seed=args.seed)
    warmup = synthetic_rows(warmup_rows, vocab, bos, *make_rows, seed=args.seed + 1)
    tokens = sum(sample.length for sample in encoded)
    response_tokens = sum(sample.response_length for sample in encoded)
    flops = model_flops(original, encoded)
    flops = (2 * flops[0], 2 * flops[1])
    progress(
        f"{rows} rows, {tokens} tokens ({tokens / rows:.0f}/row), {response_tokens} response tokens; "
        f"{flops[0] / 1e12:.1f} TFLOP of model work (both models)"
    )

    base = replace(
        defaults,
        tokens_per_batch=args.tokens_per_batch,
        position_chunk=args.position_chunk,
        max_batch_rows=args.max_batch_rows,
        max_padding=args.max_padding,
        shard_size=args.shard_size,
        share_prompt_prefix=not args.no_share_prefix,
        compile_body=args.compile_body,
        show_progress=False,
    )
    if args.sweep:
        sizes = [(budget, chunk) for budget in args.sweep_tokens for chunk in args.sweep_chunks]
    else:
        sizes = [(args.tokens_per_batch, args.position_chunk)]
    settings = [(budget, chunk, mode) for budget, chunk in sizes for mode in args.compile_jsd]
    results: dict[tuple[int, int, str], dict | str] = {}
    if device.type == "cuda":
        progress("untimed forward-only pass over the timed rows (allocator and cuBLAS warm-up)")
        with torch.inference_mode():
            forward_only([original, pruned], encoded, replace(base, tokens_per_batch=settings[0][0]))
    for setting in settings:
        tokens_per_batch, chunk, compile_jsd = setting
        if progress.elapsed() > args.max_seconds:
            progress(f"skipping {setting}: past --max-seconds")
            continue
        progress(
            f"tokens_per_batch={tokens_per_batch} position_chunk={chunk} compile_jsd={compile_jsd} "
            f"max_batch_rows={base.max_batch_rows} max_padding={base.max_padding} shard_size={base.shard_size}"
        )
        config = replace(base, tokens_per_batch=tokens_per_batch, position_chunk=chunk, compile_jsd=compile_jsd)
        try:
            result = measure(original, pruned, encoded, warmup, config, progress)
        except torch.cuda.OutOfMemoryError:
            if len(settings) == 1:
                raise
            result = None
        if result is None:
            # Outside the handler, so the failed step's tensors are released before the cache is emptied.
            torch.cuda.empty_cache()
            progress("  out of memory")
            results[setting] = "out of memory"
            continue
        result.update(derived(result, rows, tokens, flops, args.peak_tflops))
        eager = results.get((tokens_per_batch, chunk, "off"))
        result["max_cds_diff_vs_eager"] = (
            float(np.abs(result["cds"] - eager["cds"]).max()) if isinstance(eager, dict) else float("nan")
        )
        results[setting] = result
        progress(
            f"  overhead {result['jsd_overhead']:.1%}, forward mfu {result['forward_mfu']:.1%}, "
            f"score mfu {result['score_mfu']:.1%}, max |cds - eager cds| {result['max_cds_diff_vs_eager']:.3g}"
        )

    print_table(settings, results)
    measured = {setting: result for setting, result in results.items() if isinstance(result, dict)}
    if not measured:
        raise SystemExit("no setting was measured")
    best = max(measured, key=lambda setting: measured[setting]["score_tokens_per_s"])
    result = measured[best]
    print(
        f"device={device_name.replace(' ', '_')} shape={args.shape} compile_body={args.compile_body} "
        f"dtype={str(dtype).removeprefix('torch.')} "
        f"attn={args.attn} rows={rows} tokens={tokens} response_tokens={response_tokens} "
        f"tokens_per_batch={best[0]} position_chunk={best[1]} compile_jsd={best[2]} "
        f"max_batch_rows={base.max_batch_rows} "
        f"max_padding={base.max_padding} shard_size={base.shard_size} "
        f"batches={result['batches']} padding={result['padding']:.4f} "
        f"forward_s={result['forward_s']:.3f} score_s={result['score_s']:.3f} "
        f"forward_tokens_per_s={result['forward_tokens_per_s']:.0f} "
        f"score_tokens_per_s={result['score_tokens_per_s']:.0f} "
        f"forward_rows_per_s={result['forward_rows_per_s']:.2f} score_rows_per_s={result['score_rows_per_s']:.2f} "
        f"jsd_overhead={result['jsd_overhead']:.4f} forward_mfu={result['forward_mfu']:.4f} "
        f"score_mfu={result['score_mfu']:.4f} forward_mfu_full_attention={result['forward_mfu_full_attention']:.4f} "
        f"score_mfu_full_attention={result['score_mfu_full_attention']:.4f} "
        f"forward_peak_gb={format_gb(result['forward_peak_gb'])} score_peak_gb={format_gb(result['score_peak_gb'])} "
        f"mean_cds={result['mean_cds']:.5f} peak_tflops={args.peak_tflops} settings_measured={len(measured)}"
    )
    eager, fused = measured.get((*best[:2], "off")), measured.get((*best[:2], "on"))
    if eager and fused:
        print(
            f"compiled_vs_eager tokens_per_batch={best[0]} position_chunk={best[1]} "
            f"eager_score_s={eager['score_s']:.3f} "
            f"compiled_score_s={fused['score_s']:.3f} speedup={eager['score_s'] / fused['score_s']:.3f} "
            f"eager_jsd_overhead={eager['jsd_overhead']:.4f} compiled_jsd_overhead={fused['jsd_overhead']:.4f} "
            f"max_cds_abs_diff={fused['max_cds_diff_vs_eager']:.3g}"
        )


if __name__ == "__main__":
    main()
