"""Does the clustering find capabilities? NMI and ARI against labelled task pools, K, sizes and seconds.

For a labelled pool, each of `--draws` seeded stratified draws of `--rows` rows is clustered by every method
below, and scored against the label. The methods:

    default               ClusterConfig(): Leiden on prompt + response + lexical features (what paser runs)
    default_prompt_only   the same clusterer on the prompt embedding alone (what the features add)
    paper                 the paper's variant: spectral (diffusion map of the 20-NN graph), eigengap K, prompt only
    paper_nmf             the paper's NMF variant, eigengap K, prompt only
    paper_umap            spectral on UMAP coordinates, eigengap K, prompt only (slow: --umap)
    kmeans_true_k         k-means with the true K on the default's features
    kmeans_true_k_prompt  k-means with the true K on the prompt embedding (the plain baseline)

Pools: `t0` (recovery/t0_labelled_dev.jsonl.gz, label `category`), `eval-mix` (eight capabilities built from
the shared evaluation files: GSM8K questions, HumanEval prompts, ARC, BoolQ, PIQA, HellaSwag, WinoGrande,
OpenBookQA; label = source; a draw takes up to --rows / 8 rows of each source), `alpaca` (no labels: K, sizes
and what each cluster holds), or a JSONL(.gz) path with --label-field. Data come from $PASER_DATA_DIR (default
../shared/data); embeddings are cached under ~/.cache/paser/bench. The last line printed is
`nmi_default=… nmi_kmeans=… nmi_kmeans_prompt=… k=…` (means over draws; k lists the default's K per draw).

    python bench/cluster_quality.py --pool t0 --out bench/results/cluster_quality/t0.json
    python bench/cluster_quality.py --pool eval-mix
    python bench/cluster_quality.py --pool alpaca --rows 4000 --draws 1
"""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import gzip
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.selection.cluster import cluster_embeddings, features_for, kmeans_cluster  # noqa: E402
from paser.selection.config import ClusterConfig  # noqa: E402
from paser.selection.embed import embed_texts  # noqa: E402
from paser.selection.manifold import l2_normalise  # noqa: E402

CACHE = Path(os.environ.get("PASER_CACHE", Path.home() / ".cache" / "paser")) / "bench"


@dataclasses.dataclass
class Pool:
    """Rows to cluster: prompt text, response text and label (None when unlabelled), one per row."""

    name: str
    prompts: list[str]
    responses: list[str]
    labels: np.ndarray | None


def data_dir() -> Path:
    return Path(os.environ.get("PASER_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _prompt(instruction: str, extra: str = "") -> str:
    """As `paser.selection.corpus.embed_text` joins instruction and input: non-empty parts, blank line between."""
    return "\n\n".join(part for part in (instruction, extra) if part)


def labelled_file_pool(path: Path, label_field: str, name: str) -> Pool:
    """Alpaca-shaped rows (`instruction`, `input`, `output`) with a label field."""
    rows = _jsonl(path)
    missing = [index for index, row in enumerate(rows) if label_field not in row]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} rows have no {label_field!r} field (first: line {missing[0] + 1})")
    return Pool(
        name,
        [_prompt(row["instruction"], row.get("input", "")) for row in rows],
        [row["output"] for row in rows],
        np.array([str(row[label_field]) for row in rows]),
    )


def eval_mixture_pool(root: Path) -> Pool:
    """Eight capabilities from the shared evaluation files, each row as an instruction (the question, its
    choices as the input where it has them) and its reference answer; label = the source."""
    rows: list[tuple[str, str, str]] = []
    evaluation = root / "eval"
    for row in _jsonl(evaluation / "gsm8k_test.jsonl"):
        rows.append(("GSM8K", row["question"], row["answer"]))
    for row in _jsonl(evaluation / "HumanEval.jsonl.gz"):
        rows.append(("HumanEval", row["prompt"], row["canonical_solution"]))
    for name in ("arc_easy_test.llmfoundry.jsonl", "arc_challenge_test.llmfoundry.jsonl"):
        for row in _jsonl(evaluation / name):
            question = row["query"].removeprefix("Question: ")
            rows.append(("ARC", _prompt(question, "\n".join(row["choices"])), row["choices"][row["gold"]]))
    for row in _jsonl(evaluation / "boolq_dev.llmfoundry.jsonl"):
        passage, question = row["query"].rsplit("\nQuestion: ", 1)
        rows.append(("BoolQ", passage.removeprefix("Passage: ") + "\n" + question, row["choices"][row["gold"]]))
    piqa_labels = (evaluation / "piqa_valid-labels.lst").read_text().split()
    for row, label in zip(_jsonl(evaluation / "piqa_valid.jsonl"), piqa_labels, strict=True):
        solutions = [row["sol1"], row["sol2"]]
        rows.append(("PIQA", _prompt(row["goal"], "\n".join(solutions)), solutions[int(label)]))
    with bz2.open(evaluation / "hellaswag_val_full.txt.bz2", "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    for start in range(0, len(lines) - 5, 6):
        endings = lines[start + 2 : start + 6]
        rows.append(("HellaSwag", _prompt(lines[start], "\n".join(endings)), endings[int(lines[start + 1])]))
    for row in _jsonl(evaluation / "winogrande_dev.llmfoundry.jsonl"):
        options = row["context_options"]
        rows.append(
            ("WinoGrande", _prompt(options[0], "\n".join(options)), f"{options[row['gold']]} {row['continuation']}")
        )
    for row in _jsonl(evaluation / "openbookqa_test.llmfoundry.jsonl"):
        rows.append(("OpenBookQA", _prompt(row["query"], "\n".join(row["choices"])), row["choices"][row["gold"]]))
    return Pool("eval-mix", [row[1] for row in rows], [row[2] for row in rows], np.array([row[0] for row in rows]))


def alpaca_pool(root: Path) -> Pool:
    rows = _jsonl(root / "recovery" / "alpaca_52k.jsonl.gz")
    rows = [row for row in rows if row["output"].strip()]
    return Pool(
        "alpaca", [_prompt(row["instruction"], row["input"]) for row in rows], [row["output"] for row in rows], None
    )


def stratified_draw(labels: np.ndarray | None, n_total: int, rows: int, seed: int, balanced: bool) -> np.ndarray:
    """Sorted row indices of one draw: `rows` rows, each label in proportion to its share of the pool
    (or `rows / n_labels` of each label, capped at what it has, when `balanced`); unlabelled: uniform."""
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n_total, size=min(rows, n_total), replace=False))
    classes, counts = np.unique(labels, return_counts=True)
    chosen = []
    for label, count in zip(classes, counts, strict=True):
        take = min(count, rows // len(classes)) if balanced else int(round(rows * count / len(labels)))
        chosen.append(rng.choice(np.flatnonzero(labels == label), size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def embed_pool_rows(pool: Pool, indices: np.ndarray, long_text: str) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and response embeddings of the pool rows `indices` (cached by content under CACHE)."""
    options = {"cache_dir": CACHE, "show_progress": True}
    if long_text != "truncate":
        options["long_text"] = long_text
    prompts = embed_texts([pool.prompts[i] for i in indices], **options)
    responses = embed_texts([pool.responses[i] for i in indices], **options)
    return prompts, responses


Method = Callable[[np.ndarray, np.ndarray, list[str], int, int], np.ndarray]


def _clustered(config: ClusterConfig) -> Method:
    def run(prompts: np.ndarray, responses: np.ndarray, texts: list[str], true_k: int, seed: int) -> np.ndarray:
        seeded = dataclasses.replace(config, seed=seed)
        return cluster_embeddings(features_for(seeded, prompts, responses, texts), seeded).labels

    return run


def _kmeans_true_k(on_features: bool) -> Method:
    def run(prompts: np.ndarray, responses: np.ndarray, texts: list[str], true_k: int, seed: int) -> np.ndarray:
        config = ClusterConfig(seed=seed)
        features = features_for(config, prompts, responses, texts) if on_features else prompts
        return kmeans_cluster(l2_normalise(features), true_k, seed)

    return run


PROMPT_ONLY = {"response_weight": 0.0, "lexical_weight": 0.0}


def methods(with_umap: bool) -> dict[str, Method]:
    table: dict[str, Method] = {
        "default": _clustered(ClusterConfig()),
        "default_prompt_only": _clustered(ClusterConfig(**PROMPT_ONLY)),
        "paper": _clustered(ClusterConfig(method="spectral", **PROMPT_ONLY)),
        "paper_nmf": _clustered(ClusterConfig(method="nmf", **PROMPT_ONLY)),
        "kmeans_true_k": _kmeans_true_k(on_features=True),
        "kmeans_true_k_prompt": _kmeans_true_k(on_features=False),
    }
    if with_umap:
        table["paper_umap"] = _clustered(ClusterConfig(method="spectral", manifold="umap", **PROMPT_ONLY))
    return table


def cluster_contents(texts: list[str], labels: np.ndarray, rows: np.ndarray, terms: int = 6) -> list[dict]:
    """Per cluster (largest first): size, its most distinctive words (mean TF-IDF in the cluster minus the
    pool's) and where its first prompt is (`example_row`: its position in the pool, `rows[i]` for `texts[i]`), not
    the prompt's text: the data's contents stay in the data directory."""
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=3, stop_words="english")
    matrix = vectorizer.fit_transform(texts)
    vocabulary = np.array(vectorizer.get_feature_names_out())
    overall = np.asarray(matrix.mean(axis=0)).ravel()
    contents = []
    for cluster in np.argsort(-np.bincount(labels)):
        members = np.flatnonzero(labels == cluster)
        lift = np.asarray(matrix[members].mean(axis=0)).ravel() - overall
        contents.append(
            {
                "size": len(members),
                "terms": vocabulary[np.argsort(-lift)[:terms]].tolist(),
                "example_row": int(rows[members[0]]),
            }
        )
    return contents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="t0", help="t0, eval-mix, alpaca, or a JSONL(.gz) path with --label-field")
    parser.add_argument("--label-field", default="category")
    parser.add_argument("--rows", type=int, default=None, help="rows per draw (t0/file: 4000, eval-mix: 3000)")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--long-text", default="truncate", choices=["truncate", "chunks"])
    parser.add_argument("--umap", action="store_true", help="also the paper's UMAP variant (tens of seconds a draw)")
    parser.add_argument("--only", default=None, help="comma-separated methods to run (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    root = data_dir()
    if args.pool == "t0":
        pool = labelled_file_pool(root / "recovery" / "t0_labelled_dev.jsonl.gz", "category", "t0")
    elif args.pool == "eval-mix":
        pool = eval_mixture_pool(root)
    elif args.pool == "alpaca":
        pool = alpaca_pool(root)
    else:
        pool = labelled_file_pool(Path(args.pool), args.label_field, Path(args.pool).name)
    rows = args.rows or (3000 if pool.name == "eval-mix" else 4000)
    balanced = pool.name == "eval-mix"
    draws = [stratified_draw(pool.labels, len(pool.prompts), rows, seed, balanced) for seed in range(args.draws)]
    union = np.unique(np.concatenate(draws))
    started = time.perf_counter()
    prompt_matrix, response_matrix = embed_pool_rows(pool, union, args.long_text)
    embed_seconds = time.perf_counter() - started
    position = {int(row): offset for offset, row in enumerate(union)}
    table = methods(args.umap)
    if args.only:
        table = {name: table[name] for name in args.only.split(",")}
    if pool.labels is None:
        table = {name: method for name, method in table.items() if "true_k" not in name}

    results: dict[str, list[dict]] = {name: [] for name in table}
    for seed, draw in enumerate(draws):
        offsets = np.array([position[int(row)] for row in draw])
        prompts, responses = prompt_matrix[offsets], response_matrix[offsets]
        texts = [pool.prompts[i] for i in draw]
        truth = None if pool.labels is None else pool.labels[draw]
        true_k = 0 if truth is None else len(np.unique(truth))
        for name, method in table.items():
            start = time.perf_counter()
            labels = method(prompts, responses, texts, true_k, seed)
            record = {
                "draw": seed,
                "k": int(len(np.unique(labels))),
                "sizes": sorted(np.bincount(labels).tolist(), reverse=True),
                "seconds": round(time.perf_counter() - start, 2),
            }
            if truth is not None:
                record["nmi"] = float(normalized_mutual_info_score(truth, labels))
                record["ari"] = float(adjusted_rand_score(truth, labels))
            elif name == "default":
                record["contents"] = cluster_contents(texts, labels, draw)
            results[name].append(record)
            print(
                f"draw {seed} {name:22s} " + " ".join(f"{k}={v}" for k, v in record.items() if k != "contents"),
                flush=True,
            )

    print(
        f"\npool {pool.name}: {len(pool.prompts):,} rows, {args.draws} draws of {rows}, long_text={args.long_text}, "
        f"embedding {embed_seconds:.0f} s ({len(union):,} rows, prompt + response)"
    )
    summary = {}
    print(f"{'method':22s} {'NMI mean ± sd':>15s} {'per draw':>22s} {'ARI':>6s} {'K per draw':>14s} {'s/draw':>7s}")
    for name, records in results.items():
        ks = [record["k"] for record in records]
        seconds = float(np.mean([record["seconds"] for record in records]))
        entry = {"k": ks, "seconds": seconds}
        if pool.labels is not None:
            nmis = np.array([record["nmi"] for record in records])
            aris = np.array([record["ari"] for record in records])
            entry.update(nmi_mean=float(nmis.mean()), nmi_sd=float(nmis.std()), ari_mean=float(aris.mean()))
            per_draw = " ".join(f"{value:.3f}" for value in nmis)
            print(
                f"{name:22s} {nmis.mean():>8.3f} ± {nmis.std():.3f} {per_draw:>22s} {aris.mean():>6.3f} "
                f"{str(ks):>14s} {seconds:>7.1f}"
            )
        else:
            print(f"{name:22s} {'':>15s} {'':>22s} {'':>6s} {str(ks):>14s} {seconds:>7.1f}")
        summary[name] = entry
    if pool.labels is None:
        print("\nwhat the default's clusters hold (draw 0, largest first):")
        for cluster in results["default"][0]["contents"]:
            print(f"  {cluster['size']:5d}  {', '.join(cluster['terms']):60s}  e.g. pool row {cluster['example_row']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        threads = os.environ.get("OMP_NUM_THREADS", "unset")
        payload = {
            "pool": pool.name,
            "rows_per_draw": rows,
            "draws": args.draws,
            "long_text": args.long_text,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={threads}",
            "command": " ".join(sys.argv),
            "summary": summary,
            "records": results,
        }
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    default = summary.get("default", {})
    if pool.labels is not None and "default" in summary:

        def nmi(name: str) -> float:
            return summary.get(name, {}).get("nmi_mean", float("nan"))

        print(
            f"nmi_default={nmi('default'):.3f} nmi_kmeans={nmi('kmeans_true_k'):.3f} "
            f"nmi_kmeans_prompt={nmi('kmeans_true_k_prompt'):.3f} k={','.join(str(k) for k in default['k'])}"
        )
    elif default:
        print(f"k={','.join(str(k) for k in default['k'])}")


if __name__ == "__main__":
    main()
