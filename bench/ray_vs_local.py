"""Throughput of the Ray engine against the local engine: degradation scoring and embedding of the same rows.

Both engines score the first N valid Alpaca-52K rows with the same model pair (default: SmolLM2-135M-Instruct
and a saved 50% magnitude-pruned copy, made on first use under ~/.cache/paser/bench) and embed their texts with
the default embedder. The local engine runs in this process with `--threads` torch threads. The Ray engine starts
a local cluster of `--actors × --cpus-per-actor` CPUs, with one torch thread per actor CPU. Each timing
includes what a user waits for: loading the models (for Ray: once to fingerprint them, then in every actor) and
writing the shards (for Ray, also the shards' input files); the Ray cluster's start is reported apart. Each engine
writes into a fresh folder. The last line printed is `key=value` pairs: rows, seconds and rows/s per
engine and stage, the ray/local speed ratios, and the largest |difference| of cds and of the embeddings.

    python bench/ray_vs_local.py --rows 256
    python bench/ray_vs_local.py --rows 128 --actors 2 --cpus-per-actor 1 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.data.paths import data_file  # noqa: E402
from paser.pipelines.config import RayConfig  # noqa: E402
from paser.pipelines.ray_engine import connect, embed_on_ray, score_on_ray  # noqa: E402
from paser.recovery.models import load_model, load_tokenizer, save_checkpoint  # noqa: E402
from paser.recovery.prune import prune_model  # noqa: E402
from paser.recovery.pruners import PruneTarget  # noqa: E402
from paser.selection.config import DegradationConfig  # noqa: E402
from paser.selection.corpus import CorpusConfig, embed_text, load_corpus  # noqa: E402
from paser.selection.degradation import score_degradation  # noqa: E402
from paser.selection.embed import embed_in_shards  # noqa: E402
from paser.selection.formatting import encode_corpus  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"


def pruned_copy(original: str, dtype: str) -> str:
    """Path of a 50% magnitude-pruned copy of `original`, saved once under ~/.cache/paser/bench."""
    folder = Path.home() / ".cache" / "paser" / "bench" / f"{Path(original).name}-magnitude-50"
    if not (folder / "config.json").is_file():
        model, tokenizer = load_model(original, dtype=dtype, device="cpu")
        prune_model(model, "magnitude", PruneTarget(sparsity=0.5))
        save_checkpoint(model, tokenizer, folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256, help="Alpaca rows (the first valid ones)")
    parser.add_argument("--original", default="smollm2", help="original model: alias, path or hub id")
    parser.add_argument("--pruned", default=None, help="pruned model path; default: a saved magnitude-50%% copy")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="compute dtype of both models")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per row (response tail truncated)")
    parser.add_argument("--shard-size", type=int, default=32, help="rows per shard (both engines)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the local engine")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors")
    parser.add_argument("--cpus-per-actor", type=int, default=1, help="CPUs (torch threads) per Ray actor")
    args = parser.parse_args()

    pruned = args.pruned or pruned_copy(args.original, args.dtype)
    corpus = load_corpus(CorpusConfig(path=str(data_file(ALPACA_FILE)), limit=2 * args.rows + 100))
    tokenizer = load_tokenizer(args.original)
    encoded, _, _ = encode_corpus(corpus.samples, tokenizer, args.max_length, show_progress=False)
    encoded = encoded[: args.rows]
    if len(encoded) < args.rows:
        raise SystemExit(f"only {len(encoded)} valid rows within the first {2 * args.rows + 100}")
    by_id = {sample.id: sample for sample in corpus.samples}
    ids = [row.id for row in encoded]
    texts = [embed_text(by_id[row_id]) for row_id in ids]
    tokens = sum(row.length for row in encoded)
    config = DegradationConfig(shard_size=args.shard_size, show_progress=False)
    work = Path(tempfile.mkdtemp(prefix="paser-ray-bench-"))
    print(f"{len(encoded)} rows, {tokens} tokens; local: {args.threads} threads; ray: {args.actors} actors", flush=True)

    timings: dict[str, float] = {}
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    original, _ = load_model(args.original, dtype=args.dtype, device="cpu")
    pruned_model, _ = load_model(pruned, dtype=args.dtype, device="cpu")
    local_scores = score_degradation(original, pruned_model, encoded, config, shard_dir=work / "local-scores")
    timings["local_score"] = time.perf_counter() - started
    del original, pruned_model
    started = time.perf_counter()
    local_embeddings = embed_in_shards(
        ids, texts, work / "local-embed", shard_size=args.shard_size, show_progress=False
    )
    timings["local_embed"] = time.perf_counter() - started

    ray_config = RayConfig(
        actors=args.actors, cpus_per_actor=args.cpus_per_actor, num_cpus=args.actors * args.cpus_per_actor
    )
    started = time.perf_counter()
    connect(ray_config)
    timings["ray_start"] = time.perf_counter() - started
    started = time.perf_counter()
    ray_scores, _ = score_on_ray(args.original, pruned, args.dtype, encoded, config, work / "ray-scores", ray_config)
    timings["ray_score"] = time.perf_counter() - started
    started = time.perf_counter()
    ray_embeddings = embed_on_ray(
        ids, texts, work / "ray-embed", ray_config, shard_size=args.shard_size, show_progress=False
    )
    timings["ray_embed"] = time.perf_counter() - started

    cds_diff = float(np.abs(local_scores["cds"].to_numpy() - ray_scores["cds"].to_numpy()).max())
    embed_diff = float(np.abs(np.asarray(local_embeddings) - np.asarray(ray_embeddings)).max())
    rows = len(encoded)
    print(f"{'stage':<8} {'local s':>9} {'ray s':>9} {'local rows/s':>13} {'ray rows/s':>11} {'ray/local':>10}")
    for stage in ("score", "embed"):
        local, remote = timings[f"local_{stage}"], timings[f"ray_{stage}"]
        print(
            f"{stage:<8} {local:9.1f} {remote:9.1f} {rows / local:13.2f} {rows / remote:11.2f} {local / remote:10.2f}"
        )
    print(f"ray cluster start: {timings['ray_start']:.1f} s (not in the table)")
    print(
        f"rows={rows} tokens={tokens} threads={args.threads} actors={args.actors} cpus_per_actor={args.cpus_per_actor} "
        f"local_score_s={timings['local_score']:.1f} ray_score_s={timings['ray_score']:.1f} "
        f"local_embed_s={timings['local_embed']:.1f} ray_embed_s={timings['ray_embed']:.1f} "
        f"ray_start_s={timings['ray_start']:.1f} "
        f"score_speed_ratio={timings['local_score'] / timings['ray_score']:.3f} "
        f"embed_speed_ratio={timings['local_embed'] / timings['ray_embed']:.3f} "
        f"max_cds_diff={cds_diff:.2e} max_embedding_diff={embed_diff:.2e}"
    )


if __name__ == "__main__":
    main()
