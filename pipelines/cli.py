"""The `paser` command line: parse, build a config, call the library, print a summary and the artifacts."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipelines.config import ConfigError, SelectConfig, load_config

# CLI flag -> dotted config key, for `paser select`
SELECT_FLAGS = {
    "original": "models.original",
    "pruned": "models.pruned",
    "dtype": "models.dtype",
    "device": "models.device",
    "corpus": "corpus.path",
    "limit": "corpus.limit",
    "budget": "selection.budget",
    "strategy": "selection.strategy",
    "seed": "selection.seed",
    "clusters": "clustering.n_clusters",
    "max_length": "formatting.max_length",
    "out": "out",
}


def select_command(args: argparse.Namespace) -> int:
    from pipelines.select import format_summary, run_select

    overrides = [
        f"{key}={getattr(args, flag)}" for flag, key in SELECT_FLAGS.items() if getattr(args, flag) is not None
    ]
    config = load_config(SelectConfig, args.config, overrides + list(args.set))
    output = run_select(config)
    print(format_summary(output))
    return 0


def prune_command(args: argparse.Namespace) -> int:
    from recovery.prune import prune_checkpoint

    record = prune_checkpoint(args.model, args.method, args.sparsity, Path(args.out))
    print(f"pruned {args.model} with {args.method}: total sparsity {record['total_sparsity']:.4f} -> {args.out}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from recovery.evaluate import format_summary, run_eval

    record = run_eval(
        args.model,
        adapter=args.adapter,
        tasks=args.tasks,
        limit=args.limit,
        data_dir=args.data_dir,
        source=args.source,
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
        seqlen=args.seqlen,
        seed=args.seed,
        out_dir=args.out,
    )
    print(format_summary(record))
    if args.out:
        print(f"metrics: {Path(args.out) / 'metrics.json'}, table: {Path(args.out) / 'metrics.md'}")
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from data.demo import write_demo_corpus
    from pipelines.select import format_summary, run_select
    from recovery.prune import prune_checkpoint

    out = Path(args.out)
    pruned_dir = out / "pruned-magnitude-50"
    if not (pruned_dir / "pruning.json").exists():
        print(
            "[paser] demo: magnitude-pruning SmolLM2-135M-Instruct to 50% (pruning methods with calibration come later)"
        )
        prune_checkpoint("smollm2", "magnitude", 0.5, pruned_dir)
    corpus = write_demo_corpus(out / "demo_corpus.jsonl")
    overrides = [
        f"corpus.path={corpus}",
        f"models.pruned={pruned_dir}",
        f"selection.budget={args.budget}",
        f"out={out / 'selection'}",
    ]
    output = run_select(load_config(SelectConfig, None, overrides))
    print(format_summary(output))
    print(skill_agreement(corpus, output.out_dir / "clusters.parquet"))
    return 0


def skill_agreement(corpus: Path, clusters_path: Path) -> str:
    """How well the clusters match the demo corpus's true skills (adjusted Rand index), as one line."""
    import json

    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    skills = [json.loads(line)["skill"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    clusters = pd.read_parquet(clusters_path)
    true_skills = [skills[int(row_id)] for row_id in clusters["id"]]
    score = adjusted_rand_score(true_skills, clusters["cluster"])
    return f"clusters vs the demo corpus's {len(set(skills))} true skills: adjusted Rand index {score:.2f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paser", description="Select post-training data that repairs a pruned LLM.")
    commands = parser.add_subparsers(dest="command", required=True)

    select = commands.add_parser("select", help="score, cluster and select a subset of a corpus")
    select.add_argument("--config", help="YAML run config (flags and --set override it)")
    select.add_argument("--original", help="original model (path, hub id, or `smollm2`)")
    select.add_argument("--pruned", help="pruned model (path or hub id)")
    select.add_argument("--corpus", help="JSONL/JSON/Parquet file, datasets folder or hub id")
    select.add_argument("--budget", help="fraction of valid rows in (0,1], or a row count")
    select.add_argument("--strategy", help="paser, random, full, cds_topk, loss, ifd, kmeans_diverse")
    select.add_argument("--clusters", help="fixed number of clusters (default: eigengap)")
    select.add_argument("--dtype", help="auto, bf16, fp16, fp32")
    select.add_argument("--device", help="cpu or cuda")
    select.add_argument("--seed", help="random seed")
    select.add_argument("--limit", help="use only the first N rows of the corpus")
    select.add_argument("--max-length", dest="max_length", help="token limit per row")
    select.add_argument("--out", help="output directory")
    select.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, dotted")
    select.set_defaults(run=select_command)

    prune = commands.add_parser("prune", help="prune a model into a plain HF checkpoint")
    prune.add_argument("--model", required=True, help="model to prune (path, hub id, or `smollm2`)")
    prune.add_argument("--method", default="magnitude", help="pruning method (known: magnitude)")
    prune.add_argument("--sparsity", type=float, default=0.5, help="fraction of weights to zero, in (0,1)")
    prune.add_argument("--out", required=True, help="output directory")
    prune.set_defaults(run=prune_command)

    evaluate = commands.add_parser("eval", help="perplexity and zero-shot accuracy (lm-eval, in-process, offline)")
    evaluate.add_argument("--model", required=True, help="model to evaluate (path, hub id, or `smollm2`)")
    evaluate.add_argument("--adapter", help="peft adapter folder to apply on top of the model")
    evaluate.add_argument(
        "--tasks",
        default="all",
        help="comma list of wikitext2, ptb, boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, "
        "openbookqa, or `all` (default)",
    )
    evaluate.add_argument("--limit", type=int, help="at most N items per zero-shot task / N windows per ppl task")
    evaluate.add_argument("--data-dir", dest="data_dir", help="offline data folder (default: $PASER_DATA_DIR)")
    evaluate.add_argument(
        "--source", default="local", choices=["local", "hub"], help="zero-shot data: local files or lm-eval's hub tasks"
    )
    evaluate.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="windows / requests per batch")
    evaluate.add_argument("--seqlen", type=int, help="perplexity window (default: min(2048, model maximum))")
    evaluate.add_argument("--dtype", default="auto", help="auto, bf16, fp16, fp32")
    evaluate.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    evaluate.add_argument("--seed", type=int, default=0, help="random seed for lm-eval")
    evaluate.add_argument("--out", help="folder for metrics.json and metrics.md (default: print only)")
    evaluate.set_defaults(run=eval_command)

    demo = commands.add_parser("demo", help="offline demo: prune SmolLM2, select from the built-in corpus")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--budget", default="0.1", help="fraction or count to select")
    demo.set_defaults(run=demo_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `paser` console script; errors print one line and exit with status 2.

    Set PASER_DEBUG=1 to get the traceback instead.
    """
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as transformers_logging

    # Our own bars (tokenise, degradation, embedding) say what runs; checkpoint-loading bars are noise.
    transformers_logging.disable_progress_bar()
    try:
        return args.run(args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as error:
        if os.environ.get("PASER_DEBUG"):
            raise
        print(f"paser {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
