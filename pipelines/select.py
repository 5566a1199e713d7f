"""`paser select` as a Python function: corpus + model pair + budget -> a PASER subset and its statistics.

Stages, each reusing what an earlier run left in the output folder: load and validate the corpus,
tokenise, score degradation and embed (both sharded and resumable, in this process or on Ray: `engine`),
cluster, select, write artifacts:

    concept_cache/    the CCG's concepts per text (paser strategy), reused by the next selection
    token_cache/      the scorer's token ids (tokens.parquet), reused by a rerun over the same corpus
    corpus.parquet    the validated corpus (selection.store.CorpusStore): text and raw rows, by id
    selection.jsonl   the chosen rows in selection order: original fields + id, cluster, cds, ies
    dataset/          the same rows as a `datasets` folder (`load_from_disk`) with its card, README.md
    scores.parquet    every scored row's scalars (cds, token counts, NLLs)
    clusters.parquet  every scored row's cluster (and manifold coordinates)
    stats.json        per-cluster and total counts (the budget: its kind, rows or tokens, and the rows and
                      tokens selected), skipped rows by reason, rows over the embedder's limit, models,
                      versions, config
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from paser.common.console import say
from paser.common.io import file_sha256, write_json, write_jsonl, write_parquet
from paser.common.registry import check_name
from paser.pipelines.cards import write_selection_dataset
from paser.pipelines.config import ModelPairConfig, SelectConfig, config_to_dict
from paser.pipelines.engines import get_engine
from paser.pipelines.layout import SelectFolder
from paser.pipelines.lock import output_folder
from paser.recovery.models import (
    check_checkpoint,
    load_model_config,
    load_tokenizer,
    max_positions,
    resolve_device,
)
from paser.recovery.versions import package_versions as recorded_versions
from paser.selection.allocate import TokenBudget, parse_budget, resolve_budget
from paser.selection.cluster import (
    MANIFOLDS,
    MIN_CLUSTER_ROWS,
    ClusterResult,
    check_feature_options,
    cluster_embeddings,
    features_for,
    get_clusterer,
    settings_for_rows,
)
from paser.selection.config import ClusterConfig
from paser.selection.consistency import ConceptCache
from paser.selection.corpus import MAX_EXAMPLES_PER_REASON, Corpus, CorpusStats, check_corpus, iter_samples
from paser.selection.corpus import concept_text as sample_concept_text
from paser.selection.embed import read_embedding_summary, resolve_embedder
from paser.selection.formatting import EncodedSample, check_same_tokenizer, encode_corpus, encode_corpus_cached
from paser.selection.prioritize import efficiency_score
from paser.selection.store import CorpusStore, SampleLookup, StoredSamples, StoredTexts, write_corpus_store
from paser.selection.strategies import SelectionInputs, SelectionResult, get_strategy, row_tokens, strategy_class
from paser.selection.topk import ESTIMATORS as TOPK_ESTIMATORS

VERSIONED_PACKAGES = (
    "paser",
    "torch",
    "transformers",
    "sentence-transformers",
    "scikit-learn",
    "scipy",
    "yake",
)


@dataclass
class SelectOutput:
    """What `run_select` produced: the in-memory tables plus the paths of the written artifacts."""

    out_dir: Path
    selection: pd.DataFrame
    scores: pd.DataFrame
    clusters: pd.DataFrame
    stats: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour the results depend on (python first)."""
    return recorded_versions(("python", *VERSIONED_PACKAGES))


def _log(message: str) -> None:
    say(message)


def score_corpus(config: SelectConfig, corpus: Corpus, out_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Tokenise the corpus and score degradation; returns (scores, model info).

    By config: both models side by side in this process (`engine: local`, the default); one model at a time
    through the original's top-k cache (`topk.k`, for a pair that does not fit one device); or either of those
    on Ray actors (`engine: ray`), where this process only reads the tokenizers and the model config. Rows the
    tokeniser step skips are counted into `corpus.stats`. Models are released before returning.
    """
    models = config.models
    check_pruned_given(models)
    engine = get_engine(config.engine, config.ray)
    tokenizer = load_tokenizer(models.original)
    check_same_tokenizer(tokenizer, load_tokenizer(models.pruned))
    context_length = max_positions(load_model_config(models.original)) or 2048
    max_length = config.formatting.max_length or min(2048, context_length)
    encoded = encode_rows(config, corpus, tokenizer, max_length, cache_dir=SelectFolder(out_dir).token_cache)
    where = f" on ray ({config.ray.actors} actor(s))" if engine.name == "ray" else ""
    info: dict[str, Any] = {"max_length": max_length, "engine": engine.name}
    if config.topk.k is not None:
        topk = config.topk
        _log(f"scoring {len(encoded):,} rows{where}, one model at a time (top-{topk.k} cache, {topk.estimator})")
        scores, model_info = engine.score_topk(models, encoded, config.scoring, topk, out_dir)
        return scores, {**model_info, **info, "topk": config_to_dict(topk)}
    _log(f"scoring {len(encoded):,} rows{where} (max_length={max_length}, dtype={models.dtype})")
    scores, model_info = engine.score(models, encoded, config.scoring, out_dir)
    return scores, {**model_info, **info}


def encode_rows(
    config: SelectConfig, corpus: Corpus, tokenizer: Any, max_length: int, cache_dir: Path | None = None
) -> list[EncodedSample]:
    """The corpus's samples as token ids under the scorer's template; skipped and truncated rows are counted
    into `corpus.stats`. With `cache_dir`, the ids are kept there for a rerun over the same samples (see
    `encode_corpus_cached`). Refuses (ValueError) a corpus of which no row fits `max_length`."""
    options = {"max_length": max_length, "overflow": config.formatting.overflow, "template": config.formatting.template}
    if cache_dir is None:
        encoded, skipped, examples = encode_corpus(corpus.samples, tokenizer, **options)
    else:
        encoded, skipped, examples = encode_corpus_cached(corpus.samples, tokenizer, cache_dir=cache_dir, **options)
    truncated = [row.id for row in encoded if row.truncated]
    corpus.stats.merge(
        CorpusStats(
            skipped=skipped,
            flagged={"truncated": len(truncated)} if truncated else {},
            examples={
                reason: [f"id {row_id}" for row_id in row_ids]
                for reason, row_ids in {**examples, "truncated": truncated[:MAX_EXAMPLES_PER_REASON]}.items()
                if row_ids
            },
        )
    )
    if not encoded:
        raise ValueError(f"{corpus.source}: no row fits the model ({dict(skipped)})")
    return encoded


def embed_rows(
    config: SelectConfig,
    store: CorpusStore,
    ids: list[str],
    shard_dir: Path,
    fields: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Embeddings of the store's rows `ids` (in that order; `fields`, default `config.corpus.embed_fields`,
    joined), in shards under `shard_dir` on the configured engine; returns them memory-mapped. The texts are
    read from the store shard by shard (`StoredTexts`), never all held in memory. How many were over the
    embedder's limit is left in `shard_dir/summary.json` (`paser.selection.embed.read_embedding_summary`). `config`
    is a `SelectConfig` or a `RunConfig`."""
    fields = tuple(config.corpus.embed_fields) if fields is None else fields
    texts = StoredTexts(store, store.positions(ids), fields)
    what = "" if fields == tuple(config.corpus.embed_fields) else f" ({', '.join(fields)})"
    engine = get_engine(config.engine, config.ray)
    _log(f"embedding {len(texts):,} rows{what}" + (" on ray" if engine.name == "ray" else ""))
    return engine.embed(
        ids,
        texts,
        shard_dir,
        model=config.embedding.model,
        batch_size=config.embedding.batch_size,
        shard_size=config.embedding.shard_size,
        long_text=config.embedding.long_text,
    )


def response_embeddings(config: SelectConfig, store: CorpusStore, ids: list[str], folder: Path) -> np.ndarray | None:
    """The responses' embeddings (in shards under `folder/embed_shards_response`) when the clustering weighs
    them (`clustering.response_weight > 0`), else None. `config` is a `SelectConfig` or a `RunConfig`."""
    if config.clustering.response_weight <= 0:
        return None
    return embed_rows(config, store, ids, SelectFolder(folder).response_embed_shards, fields=("response",))


def clustering_features(
    config: SelectConfig,
    store: CorpusStore,
    ids: list[str],
    prompt_embeddings: np.ndarray,
    responses: np.ndarray | None,
    clustering: ClusterConfig,
) -> np.ndarray:
    """What `clustering` runs on for the rows `ids`: the prompt embeddings, the response embeddings and the
    prompts' lexical block, weighted (`paser.selection.cluster.features_for`); the prompt texts are streamed from
    the store. `config` is a `SelectConfig` or a `RunConfig`."""
    texts = None
    if clustering.lexical_weight > 0:
        texts = StoredTexts(store, store.positions(ids), tuple(config.corpus.embed_fields))
    return features_for(clustering, prompt_embeddings, responses, texts)


def cluster_corpus(
    config: SelectConfig, store: CorpusStore, ids: list[str], out_dir: Path
) -> tuple[np.ndarray, ClusterResult]:
    """Embed the scored rows' prompts (in shards under `out_dir/embed_shards`, on the configured engine) and,
    when the clustering weighs them, their responses (`out_dir/embed_shards_response`), and cluster them;
    returns (the prompt embeddings, memory-mapped, and the clusters)."""
    embeddings = embed_rows(config, store, ids, SelectFolder(out_dir).embed_shards)
    responses = response_embeddings(config, store, ids, out_dir)
    features = clustering_features(config, store, ids, embeddings, responses, config.clustering)
    _log(f"clustering ({describe_clustering(config.clustering)}, {features.shape[1]} features)")
    return embeddings, cluster_embeddings(features, config.clustering)


def describe_clustering(config: ClusterConfig) -> str:
    """One phrase for the log: the method and, for the spectral one, its manifold."""
    return f"{config.method}, {config.manifold}" if config.method == "spectral" else config.method


def effective_config(config: SelectConfig) -> SelectConfig:
    """`config` with the settings other choices imply, as a new object (the caller's is not changed): the
    clustering seed is `clustering.seed` where one is set, else `selection.seed` (one seed re-draws both),
    and a strategy that declares it (`needs_unconditioned_nll`, e.g. `ifd`) gets the unconditioned response
    NLL scored."""
    cluster_seed = config.selection.seed if config.clustering.seed is None else config.clustering.seed
    return replace(
        config,
        scoring=replace(
            config.scoring,
            unconditioned_nll=config.scoring.unconditioned_nll
            or strategy_class(config.selection.strategy).needs_unconditioned_nll,
        ),
        clustering=replace(config.clustering, seed=cluster_seed),
    )


def check_cluster_rows(clustering: ClusterConfig, corpus: Corpus) -> None:
    """Before scoring: refuse clustering settings the corpus's valid rows cannot satisfy (naming the key; too few
    rows to cluster at all naming the rows skipped, by reason), and say which ones clustering will clamp
    (`paser.selection.cluster.settings_for_rows`; stats.json records them)."""
    n_rows = corpus.stats.rows_valid
    if n_rows < MIN_CLUSTER_ROWS:
        skipped = ", ".join(f"{reason} {count:,}" for reason, count in sorted(corpus.stats.skipped.items()))
        raise ValueError(
            f"clustering needs at least {MIN_CLUSTER_ROWS} rows; {corpus.source} has {n_rows} valid of "
            f"{corpus.stats.rows_read:,} rows read" + (f" (skipped: {skipped})" if skipped else "")
        )
    _, clamped = settings_for_rows(clustering, n_rows)
    for key, change in clamped.items():
        _log(f"clustering.{key}={change['asked']} is too large for {n_rows} rows: {change['used']} will be used")


def check_pruned_given(models: ModelPairConfig) -> None:
    """Refuse (ValueError) a model pair without its pruned model."""
    if models.pruned is None:
        raise ValueError("no pruned model given: pass --pruned PATH (or models.pruned in the config)")


def check_models(models: ModelPairConfig) -> None:
    """Refuse, before anything is written: a pair without its pruned model, and a checkpoint of either model that
    cannot be read (`paser.recovery.models.check_checkpoint`: ModelLoadError naming the file)."""
    check_pruned_given(models)
    check_checkpoint(models.original)
    check_checkpoint(models.pruned)


def check_before_scoring(config: SelectConfig) -> None:
    """Refuse (ValueError) a malformed budget, clustering method/manifold or embedder before the hours of
    scoring, rather than after them."""
    parse_budget(config.selection.budget, "selection.budget")
    get_clusterer(config.clustering.method)
    check_name("manifold", config.clustering.manifold, MANIFOLDS)
    if config.clustering.manifold != "diffusion" and config.clustering.method != "spectral":
        raise ValueError(
            f"clustering.manifold={config.clustering.manifold} is used by clustering.method=spectral only "
            f"(method is {config.clustering.method!r}); set both"
        )
    check_feature_options(config.clustering)
    check_name("topk.estimator", config.topk.estimator, TOPK_ESTIMATORS)
    resolve_embedder(config.embedding.model)


@dataclass
class ScoredCorpus:
    """The first half of a selection, shared by every strategy and budget over the same corpus and model pair:
    the validated corpus (its samples read from the store on disk, `StoredSamples`), every scored row's
    scalars (`scores`, one row per id) and what was loaded (`model_info`)."""

    corpus: Corpus
    store: CorpusStore
    scores: pd.DataFrame
    model_info: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    _lookup: SampleLookup | None = field(default=None, repr=False, compare=False)

    def lookup(self) -> SampleLookup:
        """`lookup[id] -> Sample` from the store's text columns held in memory (Arrow buffers, about the
        size of the text), built on first use and kept: for the CCG, which asks for rows one at a time in
        priority order across the whole corpus."""
        if self._lookup is None:
            self._lookup = self.store.sample_lookup()
        return self._lookup


IDENTICAL_MODELS = (
    "every row scored CDS 0: the pruned model gives the original's distributions exactly (is models.pruned the "
    "original model?); every degradation-based ranking is then a tie"
)


def score_stage(config: SelectConfig, work_dir: Path) -> ScoredCorpus:
    """Read the corpus into `work_dir/corpus.parquet` and score it (shards under `work_dir`, resumable)."""
    started = time.perf_counter()
    corpus, store = read_corpus(config, work_dir)
    _log(f"corpus {corpus.source}: {corpus.stats.rows_valid:,} valid of {corpus.stats.rows_read:,} rows")
    check_cluster_rows(config.clustering, corpus)
    read = time.perf_counter()
    scores, model_info = score_corpus(config, corpus, work_dir)
    if len(scores) and float(scores["cds"].max()) == 0.0:
        _log(f"warning: {IDENTICAL_MODELS}")
    seconds = {"corpus": read - started, "scoring": time.perf_counter() - read}
    return ScoredCorpus(corpus, store, scores, model_info, seconds)


def select_from(
    config: SelectConfig,
    scored: ScoredCorpus,
    embeddings: np.ndarray,
    clustering: ClusterResult,
    out_dir: Path,
    *,
    concept_cache_dir: Path,
    embedding_summary: dict[str, Any],
    timings: dict[str, float] | None = None,
    write_tables: bool = True,
) -> SelectOutput:
    """The second half: run `config.selection`'s strategy over the clustered rows of `scored.scores` (in that
    order, aligned with `embeddings` and `clustering.labels`) and write `selection.jsonl`, `stats.json`,
    `dataset/` (the same rows as a `datasets` folder with its card: `paser.pipelines.cards`) and, when
    `write_tables`, `scores.parquet` and `clusters.parquet` to `out_dir`. `embedding_summary` is what
    embedding them left in its shard folder (`paser.selection.embed.read_embedding_summary`)."""
    started = time.perf_counter()
    timings = dict(timings or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    strategy = get_strategy(config.selection.strategy, **config.selection.options)
    scores = scored.scores
    ids = scores["id"].astype(str).tolist()
    table = scores.copy()
    table["cluster"] = clustering.labels.astype(np.int64)
    table["ies"] = efficiency_score(
        table["cds"].to_numpy(), table["prompt_tokens"].to_numpy(), table["response_tokens"].to_numpy()
    )
    requested = parse_budget(config.selection.budget, "selection.budget")
    budget = requested if isinstance(requested, TokenBudget) else resolve_budget(requested, len(table))
    inputs = SelectionInputs(
        table=table,
        embeddings=embeddings,
        concept_text=lambda row_id: sample_concept_text(scored.lookup()[row_id]),
        seed=config.selection.seed,
        # The CCG's concepts per text, kept for the next selection over these rows (a budget sweep).
        concept_cache=ConceptCache(concept_cache_dir),
    )
    result = strategy.select(inputs, budget)
    timings["selection"] = time.perf_counter() - started
    timings["total"] = sum(timings.values())
    selection = table.set_index("id").loc[result.ids].reset_index()
    if isinstance(budget, TokenBudget):
        kept_to_budget = int(row_tokens(selection).sum()) <= budget.tokens
    else:
        kept_to_budget = len(result.ids) == budget
    if not kept_to_budget and strategy.uses_budget:
        raise RuntimeError(f"strategy {strategy.name} returned {len(result.ids)} rows for a budget of {budget}")
    clusters = cluster_table(ids, clustering, embeddings, config.clustering.seed or 0)
    stats = build_stats(
        config,
        scored.corpus,
        table,
        selection,
        clustering,
        result,
        budget,
        scored.model_info,
        timings,
        embedding_summary,
    )
    rows = selection_rows(selection, scored.store)
    folder = SelectFolder(out_dir)
    paths = {"selection": write_jsonl(folder.selection, rows)}
    if write_tables:
        paths["scores"] = write_parquet(folder.scores, scores)
        paths["clusters"] = write_parquet(folder.clusters, clusters)
    paths["stats"] = write_json(folder.stats, stats)
    paths["dataset"] = write_selection_dataset(folder.dataset, rows, stats)
    return SelectOutput(out_dir, selection, scores, clusters, stats, paths)


def cluster_table(ids: list[str], clustering: ClusterResult, embeddings: np.ndarray, seed: int) -> pd.DataFrame:
    """Every clustered row's cluster, a 2-D map of the rows (`coordinate_0/1`: `embedding_map` of the prompt
    embeddings; Leiden has no coordinates and diffusion coordinates collapse each graph component to a point)
    and the clusterer's own coordinates where it has them (`manifold_<i>`)."""
    clusters = pd.DataFrame({"id": ids, "cluster": clustering.labels.astype(np.int64)})
    projected = embedding_map(embeddings, seed)
    clusters["coordinate_0"], clusters["coordinate_1"] = projected[:, 0], projected[:, 1]
    if clustering.coordinates is not None:
        for column in range(clustering.coordinates.shape[1]):
            clusters[f"manifold_{column}"] = clustering.coordinates[:, column]
    return clusters


def embedding_map(embeddings: np.ndarray, seed: int, fit_rows: int = 50_000, block_rows: int = 100_000) -> np.ndarray:
    """A 2-D map of the rows: PCA of the embeddings, fitted on at most `fit_rows` sampled rows and applied in
    blocks (memory stays flat at millions of rows); (N, 2) float32. Fewer than 2 rows or dimensions: zeros."""
    from sklearn.decomposition import PCA

    rows = len(embeddings)
    if rows < 3 or embeddings.shape[1] < 2:
        return np.zeros((rows, 2), dtype=np.float32)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(rows, size=min(rows, fit_rows), replace=False))
    pca = PCA(n_components=2, random_state=seed).fit(np.asarray(embeddings[sample], dtype=np.float32))
    blocks = [pca.transform(np.asarray(embeddings[start : start + block_rows])) for start in range(0, rows, block_rows)]
    return np.concatenate(blocks).astype(np.float32)


def run_select(config: SelectConfig) -> SelectOutput:
    """Run the whole selection and write its artifacts to `config.out`; returns tables, stats and paths.

    Refuses (ValueError) a corpus with no valid row and a tokenizer mismatch between the models. Refused before
    the output folder is made: an unknown strategy or clustering method (listing the known ones), a malformed
    budget, a CUDA device this torch cannot use, a corpus source that does not exist or has an unsupported format
    (`paser.selection.corpus.check_corpus`), a missing pruned model and a checkpoint that cannot be read
    (`paser.recovery.models.check_checkpoint`, naming the file), and an output folder that another process holds
    (`paser.pipelines.lock.FolderLockedError`). A refusal leaves the folder as it was found, unless it holds
    scores (`paser.pipelines.lock.output_folder`).
    """
    config = effective_config(config)
    out_dir = Path(config.out)
    get_strategy(config.selection.strategy, **config.selection.options)
    check_before_scoring(config)
    resolve_device(config.models.device)
    check_corpus(config.corpus)
    check_models(config.models)
    with output_folder(out_dir, "select", keeps_work=holds_scores):
        scored = score_stage(config, out_dir)
        ids = scored.scores["id"].astype(str).tolist()
        stage = time.perf_counter()
        embeddings, clustering = cluster_corpus(config, scored.store, ids, out_dir)
        timings = {**scored.seconds, "embedding_and_clustering": time.perf_counter() - stage}
        return select_from(
            config,
            scored,
            embeddings,
            clustering,
            out_dir,
            concept_cache_dir=SelectFolder(out_dir).concept_cache,
            embedding_summary=read_embedding_summary(SelectFolder(out_dir).embed_shards),
            timings=timings,
        )


def read_corpus(config: SelectConfig, out_dir: Path) -> tuple[Corpus, CorpusStore]:
    """Stream the source, validated, into `out_dir/corpus.parquet` (one row group in memory at a time), then
    hand its samples on as a sequence over that file (`StoredSamples`, nothing per row in memory); returns
    (corpus, store). The raw rows stay on disk until `selection_rows` reads the chosen ones. Refuses what
    `paser.selection.corpus.load_corpus` refuses."""
    stats = CorpusStats()
    target = SelectFolder(out_dir).corpus
    # Written beside the folder's store first: a folder scored for another corpus is refused before its store
    # (which its selection.jsonl and scores name) is touched.
    incoming = SelectFolder(out_dir).incoming_corpus
    write_corpus_store(iter_samples(config.corpus, stats), incoming, show_progress=config.scoring.show_progress)
    if target.exists() and holds_scores(out_dir) and not same_store(incoming, target):
        incoming.unlink()
        raise RuntimeError(
            f"{out_dir} holds the scores of another corpus (its corpus.parquet differs from what "
            f"{config.corpus.path} gives now); pass a new --out, or delete the folder to start again"
        )
    incoming.replace(target)
    store = CorpusStore(target)
    return Corpus(samples=StoredSamples(store), stats=stats, source=str(config.corpus.path)), store


def holds_scores(folder: Path) -> bool:
    """Whether `folder` holds scores (whole or a scoring's shards): what a changed corpus would orphan."""
    layout = SelectFolder(folder)
    return layout.scores.exists() or any(d.is_dir() and any(d.iterdir()) for d in layout.score_folders())


def same_store(first: Path, second: Path) -> bool:
    """Whether two corpus stores hold the same rows (ids, text, raw rows): byte-identical files, or equal tables."""
    if file_sha256(first) == file_sha256(second):
        return True
    try:
        return pq.read_table(first).equals(pq.read_table(second))
    except (OSError, pa.ArrowInvalid):
        return False


# The fields paser adds to every selected row; a source field of the same name is kept as `source_<name>`.
SELECTION_FIELDS = ("id", "cluster", "cds", "ies")


def selection_rows(selection: pd.DataFrame, store: CorpusStore) -> list[dict[str, Any]]:
    """The chosen rows as written to `selection.jsonl` and `dataset/`: every field of the source row (read back from
    the corpus store), then paser's `SELECTION_FIELDS`: id (the sample id: the row's `corpus.id_field`, else its
    0-based position in the source), cluster, cds, ies. No source field is dropped or overwritten: one named like
    a paser field (a row's own `id`, say) is kept as `source_<name>` (`source_source_<name>` where that is taken
    too), so the subset joins back to the source on it."""
    rows = []
    raw_rows = store.raw_rows(selection["id"].tolist())
    for record, raw in zip(selection.itertuples(index=False), raw_rows, strict=True):
        added = {"id": record.id, "cluster": int(record.cluster), "cds": float(record.cds), "ies": float(record.ies)}
        rows.append({**source_fields(raw), **added})
    return rows


def source_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """A source row's fields in order, those named like a `SELECTION_FIELDS` field renamed `source_<name>` (and
    again while that name is taken by another field of the row)."""
    fields = {}
    for name, value in raw.items():
        kept = name
        while kept in SELECTION_FIELDS or (kept != name and kept in raw):
            kept = f"source_{kept}"
        fields[kept] = value
    return fields


def build_stats(
    config: SelectConfig,
    corpus: Corpus,
    table: pd.DataFrame,
    selection: pd.DataFrame,
    clustering: ClusterResult,
    result: SelectionResult,
    budget: int | TokenBudget,
    model_info: dict[str, Any],
    timings: dict[str, float],
    embedding_summary: dict[str, Any],
) -> dict[str, Any]:
    """The `stats.json` payload: per cluster, totals, skipped rows by reason, the embedded rows over the
    embedder's limit (`embedding`: long_text mode, max_tokens, rows, rows_over_limit), models, versions,
    config. In `totals`: `budget_requested` as written, `budget_kind` (rows or tokens), `budget` (the rows a
    row budget resolved to; None for a token budget), `budget_tokens` (None for a row budget), `selected` and
    `selected_tokens` (prompt + response tokens as scored)."""
    if result.clusters is not None and not result.clusters.empty:
        # The strategy's own clusters (they differ from the manifold clusters in e.g. paser manifold=False).
        per_cluster = result.clusters.copy()
    else:
        per_cluster = table.groupby("cluster").agg(size=("id", "size"), mean_cds=("cds", "mean")).reset_index()
        chosen = selection["cluster"].value_counts()
        per_cluster["selected"] = per_cluster["cluster"].map(chosen).fillna(0).astype(int)
        if isinstance(budget, TokenBudget):
            tokens = pd.Series(row_tokens(selection), index=selection.index).groupby(selection["cluster"]).sum()
            per_cluster["selected_tokens"] = per_cluster["cluster"].map(tokens).fillna(0).astype(int)
    corpus_stats = corpus.stats.to_dict()
    return {
        "totals": {
            "rows_read": corpus.stats.rows_read,
            "rows_valid": corpus.stats.rows_valid,
            "rows_scored": len(table),
            "budget_requested": config.selection.budget,
            "budget_kind": "tokens" if isinstance(budget, TokenBudget) else "rows",
            "budget": None if isinstance(budget, TokenBudget) else budget,
            "budget_tokens": budget.tokens if isinstance(budget, TokenBudget) else None,
            "selected": len(result.ids),
            "selected_tokens": int(row_tokens(selection).sum()),
            "clusters": clustering.n_clusters,
            "mean_cds": float(table["cds"].mean()),
            "mean_cds_selected": float(selection["cds"].mean()) if len(selection) else None,
        },
        "skipped": corpus_stats["skipped"],
        "flagged": corpus_stats["flagged"],
        "skipped_examples": corpus_stats["examples"],
        "clusters": json.loads(per_cluster.to_json(orient="records")),
        "strategy": {"name": config.selection.strategy, "options": config.selection.options, **result.stats},
        "clustering": {
            "n_clusters": clustering.n_clusters,
            "n_landmarks": clustering.n_landmarks,
            "eigenvalues": None if clustering.eigenvalues is None else [float(v) for v in clustering.eigenvalues],
            "seconds": clustering.seconds,
            "details": clustering.details,
        },
        "embedding": embedding_summary,
        "models": model_info,
        "versions": package_versions(),
        "seconds": {name: round(value, 3) for name, value in timings.items()},
        "config": config_to_dict(config),
    }


def format_summary(output: SelectOutput, max_clusters: int = 12) -> str:
    """A one-screen summary of a selection run: totals, skips, the largest clusters, artifact paths."""
    stats = output.stats
    totals = stats["totals"]
    if totals.get("budget_kind") == "tokens":
        budget = f"budget {totals['budget_requested']}: {totals['selected_tokens']:,} tokens used"
    else:
        budget = f"budget {totals['budget_requested']} -> {totals['budget']:,}"
    lines = [
        f"paser select — {stats['strategy']['name']}: {totals['selected']:,} of {totals['rows_scored']:,} scored rows "
        f"({budget}), {totals['clusters']} clusters",
        f"rows read {totals['rows_read']:,}, valid {totals['rows_valid']:,}, scored {totals['rows_scored']:,}; "
        f"mean CDS {totals['mean_cds']:.4f} (selected {totals['mean_cds_selected'] or 0:.4f})",
    ]
    if totals["rows_scored"] and totals["mean_cds"] == 0:
        lines.append(f"warning: {IDENTICAL_MODELS}")
    if stats["skipped"]:
        lines.append("skipped: " + ", ".join(f"{reason} {count:,}" for reason, count in stats["skipped"].items()))
    if stats.get("flagged"):
        lines.append("kept but flagged: " + ", ".join(f"{flag} {count:,}" for flag, count in stats["flagged"].items()))
    embedding = stats["embedding"]
    if embedding["rows_over_limit"]:
        lines.append(
            f"embedding: {embedding['rows_over_limit']:,} of {embedding['rows']:,} rows are over the embedder's "
            f"{embedding['max_tokens']} tokens (long_text: {embedding['long_text']})"
        )
    for key, change in stats["clustering"].get("details", {}).get("clamped", {}).items():
        lines.append(f"clustering.{key}: {change['asked']} is too large for this pool, {change['used']} was used")
    ccg = stats["strategy"].get("ccg")
    if ccg:
        lines.append(
            f"CCG ({ccg['rule']} rule): offered {ccg['offered']:,}, rejected {ccg['rejected']:,} "
            f"({ccg['rejection_rate']:.0%}), readmitted {stats['strategy'].get('ccg_readmitted', 0):,}"
        )
    clusters = sorted(stats["clusters"], key=lambda row: -row["mean_cds"])
    header = f"{'cluster':>7} {'size':>8} {'mean CDS':>9} {'budget':>7} {'selected':>8} {'CCG rej':>7}"
    lines += ["", header]
    for row in clusters[:max_clusters]:
        lines.append(
            f"{row['cluster']:>7} {row['size']:>8,} {row['mean_cds']:>9.4f} {row.get('budget', '-'):>7} "
            f"{row['selected']:>8} {row.get('ccg_rejected', '-'):>7}"
        )
    if len(clusters) > max_clusters:
        lines.append(f"… {len(clusters) - max_clusters} more clusters in stats.json")
    seconds = stats["seconds"]
    lines += ["", "time: " + ", ".join(f"{name} {value:.1f}s" for name, value in seconds.items())]
    lines += [f"{name:>9}: {path}" for name, path in output.paths.items()]
    return "\n".join(lines)
