"""Quality and speed of the pruning methods: SmolLM2-135M-Instruct pruned by each method, side by side with dense.

Calibration: `--calibration-windows` seeded windows of `--seqlen` tokens drawn by the project's loader
(`paser.recovery.calibration`) from `--calibration` (default: the Alpaca-52K file of the data directory, rows
rendered with the scorer's prompt). Evaluation: `paser.recovery.evaluate.perplexity` (the SparseGPT protocol) on the
first `--ppl-windows` non-overlapping `--ppl-seqlen`-token windows of the WikiText-2 raw test split. Speed:
forward tokens/s (no KV cache) of each pruned model paired with the dense one: `--speed-rounds` rounds, each
timing one forward of the dense model and one of the pruned model on the same WikiText-2 window of
`--ppl-seqlen` tokens, after one warm-up forward each; the fastest forward of each model counts (as timeit
advises: a busy machine only ever slows a forward) and the speedup is the ratio of the pair's tokens/s, so
load that drifts during the run hits both sides alike. On the CPU a forward is timed in CPU seconds of this
process (`time.process_time`), which time-slicing with other processes on a shared machine does not inflate;
with one thread that is the forward's compute time. On a GPU it is wall time after a synchronize.
Every method prunes a fresh copy of the dense model: weight methods (magnitude, wanda, sparsegpt) to
`--sparsity` or `--pattern`, `width` at every `--ratios` value with every `--importances` score; `--drop` adds a
layer-drop row. The first width model is also saved, reloaded with `AutoModelForCausalLM.from_pretrained` and
asked to generate. Prints a table: method, target, importance, parameters and decoder-block parameters (and
their share of dense), tokens/s and its ratio to dense, achieved sparsity, pruning seconds, perplexity.

    python bench/prune_quality.py --threads 1
    python bench/prune_quality.py --methods wanda,sparsegpt --pattern 2:4 --calibration-windows 32
    python bench/prune_quality.py --methods width --ratios 0.2,0.3 --threads 1 --calibration-windows 32 \\
        --seqlen 512 --ppl-windows 16 --ppl-seqlen 512
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.data.paths import data_file  # noqa: E402
from paser.recovery.calibration import load_calibration  # noqa: E402
from paser.recovery.evaluate import load_ppl_text, perplexity  # noqa: E402
from paser.recovery.models import linear_sparsity, load_model  # noqa: E402
from paser.recovery.prune import prune_model, save_pruned  # noqa: E402
from paser.recovery.pruners import PruneTarget  # noqa: E402
from paser.recovery.width import parameter_counts  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"
GENERATION_PROMPT = "The capital of France is"


@dataclass(frozen=True)
class Row:
    """One model of the table."""

    method: str
    target: str
    importance: str
    parameters: int
    decoder_parameters: int
    tokens_per_second: float
    speedup: float
    sparsity: float
    prune_seconds: float
    ppl: float


@torch.no_grad()
def paired_tokens_per_second(
    dense: torch.nn.Module, model: torch.nn.Module, windows: torch.Tensor
) -> tuple[float, float]:
    """Forward tokens/s (logits included, no KV cache) of `dense` and of `model`, timed in turn on each window.

    One warm-up forward each, then per window one forward of each model; each model's fastest forward counts.
    CPU forwards are timed in process CPU seconds, CUDA forwards in wall seconds after a synchronize.
    """
    models = (dense, model)
    on_gpu = windows.device.type == "cuda"
    clock = time.perf_counter if on_gpu else time.process_time
    for candidate in models:
        candidate(windows[:1], use_cache=False)
    seconds: list[list[float]] = [[], []]
    for window in windows:
        for index, candidate in enumerate(models):
            started = clock()
            candidate(window[None], use_cache=False)
            if on_gpu:
                torch.cuda.synchronize()
            seconds[index].append(clock() - started)
    dense_speed, model_speed = (windows.shape[1] / min(times) for times in seconds)
    return dense_speed, model_speed


def reload_and_generate(model: torch.nn.Module, tokenizer, record: dict, window: torch.Tensor) -> str:
    """Save a pruned model as `paser prune` does, reload it with from_pretrained, and report on the copy."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as folder:
        save_pruned(model, tokenizer, Path(folder) / "pruned", record)
        reloaded = AutoModelForCausalLM.from_pretrained(Path(folder) / "pruned", dtype=torch.float32).eval()
    with torch.no_grad():
        difference = (reloaded(window[None]).logits - model(window[None]).logits).abs().max().item()
        prompt = tokenizer(GENERATION_PROMPT, return_tensors="pt")
        generated = reloaded.generate(**prompt, max_new_tokens=24, do_sample=False)
    text = tokenizer.decode(generated[0, prompt.input_ids.shape[1] :], skip_special_tokens=True)
    config = reloaded.config
    return (
        f"reloaded with from_pretrained: intermediate_size {config.intermediate_size}, heads "
        f"{config.num_attention_heads} (kv {config.num_key_value_heads}), head_dim {config.head_dim}; "
        f"max |logit difference| {difference:.2e}; greedy continuation of {GENERATION_PROMPT!r}: {text!r}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="model to prune: alias, path or hub id")
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt", help="comma-separated pruning methods")
    parser.add_argument("--sparsity", type=float, default=None, help="unstructured target (default 0.5)")
    parser.add_argument("--pattern", default=None, help="N:M target instead of --sparsity, e.g. 2:4")
    parser.add_argument("--ratios", default="0.2,0.3", help="width: comma-separated ratios")
    parser.add_argument("--importances", default="activation,taylor,random", help="width: importance scores")
    parser.add_argument("--calibration", default=None, help="calibration source (default: Alpaca-52K file)")
    parser.add_argument("--drop", type=float, default=None, help="also layer-drop this fraction of blocks")
    parser.add_argument("--ppl-seqlen", type=int, default=1024, help="tokens per WikiText-2 window")
    parser.add_argument("--calibration-windows", type=int, default=16, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per calibration window")
    parser.add_argument("--ppl-windows", type=int, default=8, help="WikiText-2 windows to score")
    parser.add_argument("--speed-rounds", type=int, default=8, help="timed forwards per model, paired with dense")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration window offsets")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.sparsity is None and args.pattern is None:
        args.sparsity = 0.5
    weight_target = PruneTarget.from_args(sparsity=args.sparsity, pattern=args.pattern)

    started = time.perf_counter()
    dense, tokenizer = load_model(args.model, dtype="fp32", device=args.device)
    source = args.calibration or str(data_file(ALPACA_FILE))
    calibration, _ = load_calibration(source, tokenizer, args.calibration_windows, args.seqlen, args.seed)
    text = load_ppl_text("wikitext2")
    speed_windows = tokenizer(text, return_tensors="pt", verbose=False).input_ids[0]
    speed_windows = speed_windows[: args.speed_rounds * args.ppl_seqlen].reshape(args.speed_rounds, -1)
    speed_windows = speed_windows.to(args.device)

    def measure(model: torch.nn.Module, method: str, target: str, importance: str, seconds: float) -> Row:
        value = perplexity(model, tokenizer, text, seqlen=args.ppl_seqlen, batch_size=1, limit=args.ppl_windows)
        parameters, decoder_parameters = parameter_counts(model)
        dense_speed, speed = paired_tokens_per_second(dense, model, speed_windows)
        row = Row(
            method,
            target,
            importance,
            parameters,
            decoder_parameters,
            speed,
            speed / dense_speed,
            linear_sparsity(model),
            seconds,
            value["ppl"],
        )
        print(
            f"{method} {target} {importance}: ppl {row.ppl:.2f}, {row.tokens_per_second:.0f} tokens/s "
            f"({dense_speed:.0f} dense in the same rounds), "
            f"{row.decoder_parameters / 1e6:.2f}M decoder parameters, pruned in {seconds:.1f}s",
            flush=True,
        )
        return row

    print(f"loaded {args.model} and data in {time.perf_counter() - started:.1f}s", flush=True)
    rows = [measure(dense, "dense", "-", "-", 0.0)]
    runs: list[tuple[str, PruneTarget, dict]] = []
    for method in args.methods.split(","):
        if method == "width":
            runs += [
                (method, PruneTarget(ratio=float(ratio)), {"importance": importance})
                for ratio in args.ratios.split(",")
                for importance in args.importances.split(",")
            ]
        else:
            runs.append((method, weight_target, {}))
    if args.drop is not None:
        runs.append(("layer_drop", PruneTarget(drop=args.drop), {}))
    reload_report = None
    for method, target, options in runs:
        model = copy.deepcopy(dense)
        record = prune_model(model, method, target, calibration, **options)
        rows.append(measure(model, method, target.describe(), options.get("importance", "-"), record["seconds"]))
        if method == "width" and reload_report is None:
            reload_report = f"{target.describe()} {options['importance']}: " + reload_and_generate(
                model, tokenizer, record, speed_windows[0]
            )
            print(reload_report, flush=True)
        del model

    dense_row = rows[0]
    print(
        f"\n{args.model}, calibration {args.calibration_windows}x{args.seqlen} tokens from {source}, WikiText-2 "
        f"test {args.ppl_windows}x{args.ppl_seqlen} tokens, forward speed: fastest of {args.speed_rounds} forwards of "
        f"{args.ppl_seqlen} tokens, paired with dense, device {args.device}, {args.threads} thread(s), "
        f"{time.perf_counter() - started:.0f}s in all"
    )
    if reload_report is not None:
        print(reload_report)
    print(
        f"{'method':<10} {'target':>10} {'importance':>10} {'params M':>9} {'decoder M':>9} {'dec. kept':>9} "
        f"{'tokens/s':>9} {'speedup':>7} {'sparsity':>8} {'prune s':>8} {'ppl':>9}"
    )
    for row in rows:
        print(
            f"{row.method:<10} {row.target:>10} {row.importance:>10} {row.parameters / 1e6:>9.2f} "
            f"{row.decoder_parameters / 1e6:>9.2f} {row.decoder_parameters / dense_row.decoder_parameters:>9.3f} "
            f"{row.tokens_per_second:>9.0f} {row.speedup:>7.2f} "
            f"{row.sparsity:>8.4f} {row.prune_seconds:>8.1f} {row.ppl:>9.2f}"
        )


if __name__ == "__main__":
    main()
