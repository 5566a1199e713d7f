"""Wall time and peak memory of `cluster_embeddings` at scale.

Synthetic by default: a mixture of ~40 Gaussian groups on the unit sphere, 868-d by default (the width of the
default clustering features: prompt embedding 384 + response embedding 384 + lexical block 100). With `--real`, the
embeddings are those of `instruction + input` of the first N Alpaca-52K rows (all-MiniLM-L6-v2, cached
under ~/.cache/paser/bench). The input is one float32 matrix in memory, what a caller holding such a matrix
passes; `paser select` passes `CombinedFeatures` over memory-mapped embeddings instead, never the whole
matrix (`bench/scale_select.py` measures that path). The last line printed is `key=value` pairs: rows,
seconds (clustering only), peak_gb (process RSS high-water mark: the input matrix, 3.5 GB per million rows
at 868 columns, plus what the clustering adds), data_peak_gb (the same mark once the input was made),
threads (OMP_NUM_THREADS), n_clusters, n_landmarks, and seconds per step.

    python bench/cluster_scale.py --rows 1000000
    python bench/cluster_scale.py --rows 50000 --real
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.selection.cluster import cluster_embeddings  # noqa: E402
from paser.selection.config import ClusterConfig  # noqa: E402
from paser.selection.embed import embed_texts  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"
# Rows generated at a time: temporaries of 57 MB (float32) and 114 MB (float64) at 868 columns.
GENERATION_BLOCK = 16_384


def peak_rss_gb() -> float:
    """High-water resident set size of this process in GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def synthetic_embeddings(n_rows: int, n_groups: int, seed: int, dimension: int = 868) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm float32 (n_rows, dimension) rows from `n_groups` Gaussian groups, and their group ids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_groups, dimension), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    groups = rng.integers(0, n_groups, n_rows)
    embeddings = np.empty((n_rows, dimension), dtype=np.float32)
    # Generated and normalised in blocks: the norm of the whole matrix squares it into a temporary of its own
    # size first (that temporary was the 7.3 GB peak at 1M rows, not the clustering).
    for start in range(0, n_rows, GENERATION_BLOCK):
        block = groups[start : start + GENERATION_BLOCK]
        noise = rng.standard_normal((len(block), dimension), dtype=np.float32) * (1.0 / np.sqrt(dimension))
        rows = embeddings[start : start + len(block)]
        rows[:] = centres[block] + noise
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return embeddings, groups


def alpaca_embeddings(n_rows: int) -> np.ndarray:
    """Embeddings of `instruction + "\\n" + input` of the first `n_rows` Alpaca-52K rows."""
    data_dir = Path(os.environ.get("PASER_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    texts = []
    with gzip.open(data_dir / ALPACA_FILE, "rt", encoding="utf-8") as handle:
        for line in handle:
            if len(texts) == n_rows:
                break
            row = json.loads(line)
            texts.append(f"{row['instruction']}\n{row['input']}".strip())
    return embed_texts(texts, cache_dir=Path.home() / ".cache" / "paser" / "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True, help="Number of rows to cluster.")
    parser.add_argument("--real", action="store_true", help="Alpaca-52K embeddings instead of synthetic.")
    parser.add_argument("--groups", type=int, default=40, help="Synthetic mixture groups.")
    parser.add_argument("--method", default=ClusterConfig.method, help="Clustering method (default: the default).")
    parser.add_argument("--max-clusters", type=int, default=50, help="Largest automatic K.")
    parser.add_argument("--dimension", type=int, default=868, help="Synthetic feature width.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    if args.real:
        embeddings = alpaca_embeddings(args.rows)
        groups = None
    else:
        embeddings, groups = synthetic_embeddings(args.rows, args.groups, args.seed, args.dimension)
    data_seconds = time.perf_counter() - start
    data_peak_gb = peak_rss_gb()
    print(f"data: {embeddings.shape} in {data_seconds:.1f}s, peak {data_peak_gb:.2f} GB", flush=True)

    config = ClusterConfig(method=args.method, max_clusters=args.max_clusters, seed=args.seed)
    start = time.perf_counter()
    result = cluster_embeddings(embeddings, config)
    seconds = time.perf_counter() - start

    summary = {
        "rows": len(embeddings),
        "real": int(args.real),
        "seconds": f"{seconds:.1f}",
        "data_seconds": f"{data_seconds:.1f}",
        "peak_gb": f"{peak_rss_gb():.2f}",
        "data_peak_gb": f"{data_peak_gb:.2f}",
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "n_clusters": result.n_clusters,
        "n_landmarks": result.n_landmarks,
    }
    if groups is not None:
        from sklearn.metrics import adjusted_rand_score

        summary["ari"] = f"{adjusted_rand_score(groups, result.labels):.3f}"
    summary.update({f"{step}_s": f"{value:.1f}" for step, value in result.seconds.items()})
    print(" ".join(f"{key}={value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
