"""The stages of `paser run` (what each writes: pipelines/run.py), one builder each: a function of the config
section(s) the stage reads, the run-folder paths it writes, the model pair where it loads a model (`ModelPair`) and
the stages it builds on, that returns a `paser.pipelines.stages.Stage`. No builder sees the whole run: the
composers (`shared_stages` here, `Run` for each combination) hand each its sections, and the shared selection's
sections as one `SelectConfig` (`select_config`: what `paser select` would read). Building a stage runs, hashes and
writes nothing; `Run`'s executor runs them. Two steps come before the stages because the score
stage hashes what they write: the demo corpus (`write_builtin_demo`) and the calibration rows
(`write_calibration_rows`).

Each builder declares what its stage reads (`Stage.inputs`, `settings`, `sources`); its cache key is derived
from those declarations alone (`paser.pipelines.stages.stage_key`). A path a stage reads is declared as a source,
by content, not by name (so no key holds a path of the run's own folder), but for the evaluation data folder
(`evaluation.data_dir`: fixed public test files), named by its path.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from paser.common.io import file_sha256, write_atomic, write_json, write_jsonl, write_parquet
from paser.data.heldout import get_heldout_builder, heldout_source, prompt_key, write_heldout
from paser.pipelines.config import ModelPairConfig, SelectConfig, SelectionConfig
from paser.pipelines.heldout import DEV_SHARE, SPLIT_SALT, HeldoutSet, copy_rows, heldout_nll
from paser.pipelines.layout import ComboFolder, EvalFolder, SelectFolder, SharedFolder, pruning_record
from paser.pipelines.select import (
    ScoredCorpus,
    cluster_table,
    clustering_features,
    effective_config,
    embed_rows,
    response_embeddings,
    select_from,
)
from paser.pipelines.select import score_stage as read_and_score_corpus
from paser.pipelines.stages import InputValues, Stage, log, settings_except, source_identity
from paser.selection.cluster import ClusterResult, cluster_embeddings
from paser.selection.config import ClusterConfig
from paser.selection.corpus import Corpus, CorpusConfig, CorpusStats
from paser.selection.embed import read_embedding_summary
from paser.selection.store import CorpusStore, StoredSamples
from paser.selection.strategies import get_strategy, strategy_class

if TYPE_CHECKING:
    from paser.pipelines.run import Combo, EvaluationConfig, Run, RunModelsConfig, RunRecoveryConfig
    from paser.recovery.config import TrainConfig


# `token_jsd` of a run's recovery section that weights tokens and names no file: the run's own score shards
# (`shared/score_shards/`), which the recover stage reads through the score stage, by content, never by this path.
RUN_TOKEN_JSD = "run:score_shards"


@dataclasses.dataclass(frozen=True)
class ModelPair:
    """The model pair as the stages that load it declare it: the original's name and the pruned model's path, each
    model's identity (read on first hashing, `paser.pipelines.stages.model_identity`) and the prune stage where the
    run prunes."""

    original: str
    pruned: str
    original_identity: Callable[[], str]
    pruned_identity: Callable[[], str]
    prune: Stage | None

    def pruned_model(self, role: str) -> tuple[dict[str, Stage], dict[str, Callable[[], str]]]:
        """The pruned model declared under `role`, as (inputs, sources): the prune stage where the run prunes, else
        the checkpoint's identity."""
        if self.prune is not None:
            return {role: self.prune}, {}
        return {}, {role: self.pruned_identity}


@dataclasses.dataclass
class SharedStages:
    """The stages every combination builds on: the corpus scored (`score`, after `recipe` where the config names
    one), split into held-out rows and the pool (`heldout`), the named held-out sets (`heldout/{name}`), the pool
    embedded (`embed`, `embed_response` when the clustering weighs responses) and clustered per seed
    (`cluster/s{seed}`)."""

    score: Stage
    heldout: Stage
    heldout_sets: dict[str, Stage]
    embed: Stage
    embed_response: Stage | None
    clusters: dict[int, Stage]


def shared_stages(run: Run) -> SharedStages:
    """Every shared stage of `run`, each given its config sections and wired to the stages it builds on."""
    config, shared, select = run.config, run.layout.shared, select_config(run)
    evaluation = config.evaluation
    recipe = recipe_stage(config.recipe, config.corpus, Path(run.corpus_path)) if config.recipe is not None else None
    score = score_stage(select, shared, run.pair, recipe)
    heldout = heldout_stage(evaluation, shared, score)
    heldout_sets = {
        spec.name: heldout_set_stage(spec, evaluation.data_dir, shared)
        for spec in evaluation.heldout_sets()
        if has_own_rows(spec)
    }
    embed = embed_stage(select, shared, heldout)
    embed_response = embed_response_stage(select, shared, heldout) if config.clustering.response_weight > 0 else None
    clusters = {
        int(seed): cluster_stage(config.clustering, select, int(seed), shared, heldout, embed, embed_response)
        for seed in config.selection.seeds
    }
    return SharedStages(score, heldout, heldout_sets, embed, embed_response, clusters)


# ------------------------------------------------------------------------------------------------ the corpus


def select_config(run: Run, combo: Combo | None = None, out: Path | None = None) -> SelectConfig:
    """The `paser select` config of one combination of `run` (or, without one, of the shared scoring)."""
    config = run.config
    sweep = config.selection
    options = {} if combo is None else sweep.strategy_options(combo.strategy)
    strategies = [sweep.base_strategy(name) for name in sweep.strategies]
    # Every combination scores once, so one strategy that needs the unconditioned NLL makes all score it.
    needs_unconditioned = any(strategy_class(name).needs_unconditioned_nll for name in strategies)
    scoring = dataclasses.replace(
        config.scoring,
        unconditioned_nll=config.scoring.unconditioned_nll or needs_unconditioned,
        # A training that weights tokens reads the per-token JSD the score stage keeps (`recover_stage`).
        keep_token_jsd=config.scoring.keep_token_jsd or reads_run_token_jsd(config.recovery),
    )
    select = SelectConfig(
        corpus=dataclasses.replace(
            config.corpus,
            path=run.corpus_path,
            exclude_rows=calibration_rows_path(run) or config.corpus.exclude_rows,
        ),
        models=ModelPairConfig(
            original=config.models.original,
            pruned=run.pruned_path,
            dtype=config.models.dtype,
            device=config.models.device,
        ),
        formatting=config.formatting,
        scoring=scoring,
        topk=config.topk,
        embedding=config.embedding,
        clustering=config.clustering,
        selection=SelectionConfig(
            strategy=sweep.base_strategy(combo.strategy) if combo else strategies[0],
            budget=combo.budget if combo else config.selection.budgets[0],
            seed=combo.seed if combo else config.selection.seeds[0],
            options=options,
        ),
        engine=config.engine,
        ray=config.ray,
        out=str(out or run.layout.shared.root),
    )
    return effective_config(select)


def reads_run_token_jsd(recovery: RunRecoveryConfig) -> bool:
    """Whether the recovery section or one of its variants weights tokens by the run's own per-token JSD
    (`token_jsd` left out: `RUN_TOKEN_JSD`), which the score stage then keeps."""
    trainings = [recovery.training(name) for name in recovery.variants] or [recovery]
    return any(getattr(training.token_weighting, "token_jsd", None) == RUN_TOKEN_JSD for training in trainings)


def write_builtin_demo(run: Run) -> None:
    """Write the built-in demo corpus into the run folder when the config names it (once)."""
    path = Path(run.corpus_path)
    if path != run.layout.demo_corpus or path.exists():
        return
    from paser.data.demo import write_demo_corpus

    write_demo_corpus(path)


def calibration_rows_path(run: Run) -> str | None:
    """`shared/calibration_rows.txt` (written by `write_calibration_rows`) when the pruning calibrates on the
    corpus file itself and `models.exclude_calibration_rows` holds; else None."""
    models, corpus = run.config.models, run.config.corpus
    spec = models.prune
    if spec is None or spec.calibration is None or not models.exclude_calibration_rows or run.config.recipe:
        return None
    calibration, source = Path(spec.calibration).expanduser(), Path(corpus.path).expanduser()
    if not (calibration.is_file() and source.is_file() and calibration.resolve() == source.resolve()):
        return None
    if corpus.exclude_rows is not None:
        raise ValueError(
            "corpus.exclude_rows is set and the calibration rows of the corpus file are excluded too: give one "
            "(set models.exclude_calibration_rows: false to use corpus.exclude_rows alone)"
        )
    return str(run.layout.shared.calibration_rows)


def write_calibration_rows(run: Run) -> None:
    """Write the row positions the pruning's calibration used (from its pruning.json) to
    `calibration_rows_path(run)`, after the prune stage (`Run.prune`); refuses a pruning.json without them. A
    step of its own, before the score stage, whose hash covers the file."""
    path = calibration_rows_path(run)
    if path is None:
        return
    run.prune()
    record_path = pruning_record(run.pruned_path)
    calibration = json.loads(record_path.read_text(encoding="utf-8")).get("calibration") or {}
    positions = calibration.get("rows_used_positions")
    if positions is None:
        raise RuntimeError(
            f"{record_path} does not list the calibration rows (rows_used_positions): delete "
            f"{run.pruned_path} to prune again, or set models.exclude_calibration_rows: false"
        )
    text = "".join(f"{position}\n" for position in positions)
    write_atomic(Path(path), lambda staging: staging.write_text(text, encoding="utf-8"))


def recipe_stage(recipe: str, corpus: CorpusConfig, out: Path) -> Stage:
    """Stage `recipe`: `corpus.path` normalised by the data recipe `recipe` into `out`
    (`shared/recipe_corpus.jsonl`)."""

    def compute(values: InputValues) -> None:
        from paser.data.recipes import prepare_corpus

        stats = prepare_corpus(recipe, corpus.path, out, split=corpus.split, limit=corpus.limit)
        log(stats.summary())

    return Stage(
        "recipe",
        compute,
        [out],
        settings={"recipe": recipe, "split": corpus.split, "limit": corpus.limit},
        sources={"source": lambda: source_identity(corpus.path)},
    )


def score_stage(config: SelectConfig, shared: SharedFolder, pair: ModelPair, recipe: Stage | None) -> Stage:
    """Stage `score`: the corpus of the shared selection config `config` validated into `shared/corpus.parquet` and
    scored with the model pair; its value is the `ScoredCorpus`. Keyed by the corpus's content (or the recipe
    stage's hash), not its path, and by `calibration_rows.txt` where there is one (`write_calibration_rows` writes
    it first)."""
    artifacts = [shared.corpus, shared.scores, shared.corpus_record, shared.score_shards]

    inputs, sources = pair.pruned_model("pruned")
    sources["original"] = pair.original_identity
    if recipe is None:
        sources["corpus"] = lambda: source_identity(config.corpus.path)
    else:
        inputs["recipe"] = recipe
    if config.corpus.exclude_rows is not None:
        sources["exclude_rows"] = lambda: file_sha256(Path(config.corpus.exclude_rows))
    settings = {
        "corpus": settings_except(config.corpus, "path", "exclude_rows"),  # both read as sources, by content
        "models": {"dtype": config.models.dtype, "device": config.models.device},
        "formatting": config.formatting,
        "scoring": settings_except(config.scoring, "show_progress"),
        "topk": config.topk,
    }

    def compute(values: InputValues) -> ScoredCorpus:
        shared.score_shards.mkdir(exist_ok=True)
        scored = read_and_score_corpus(config, shared.root)
        write_parquet(shared.scores, scored.scores)
        write_json(
            shared.corpus_record,
            {"source": scored.corpus.source, "stats": scored.corpus.stats.to_dict(), "models": scored.model_info},
        )
        return scored

    load = lambda values: load_scored(shared)  # noqa: E731
    return Stage("score", compute, artifacts, inputs, settings, sources, load)


def load_scored(shared: SharedFolder) -> ScoredCorpus:
    """The scored corpus read back from `shared/` (the score stage's artifacts)."""
    record = json.loads(shared.corpus_record.read_text(encoding="utf-8"))
    stats = record["stats"]
    corpus_stats = CorpusStats(
        rows_read=stats["rows_read"],
        skipped=dict(stats["skipped"]),
        flagged=dict(stats["flagged"]),
        examples={reason: list(places) for reason, places in stats["examples"].items()},
    )
    store = CorpusStore(shared.corpus)
    scores = pd.read_parquet(shared.scores)
    corpus = Corpus(StoredSamples(store), corpus_stats, record["source"])
    return ScoredCorpus(corpus, store, scores, record["models"])


# ------------------------------------------------------------------------------------------------ held-out rows


def heldout_stage(evaluation: EvaluationConfig, shared: SharedFolder, score: Stage) -> Stage:
    """Stage `heldout`: the rows kept out of every selection (`shared/heldout.json`, their rows in
    `shared/heldout.jsonl`). Its value is the pool: the scored corpus minus those rows, what every strategy
    selects from."""

    sources = {}
    if evaluation.heldout_file is not None:
        sources["file"] = lambda: source_identity(evaluation.heldout_file)

    def pool(values: InputValues) -> ScoredCorpus:
        scored = values["score"]
        held = set(json.loads(shared.heldout_ids.read_text(encoding="utf-8"))["ids"])
        scores = scored.scores[~scored.scores["id"].astype(str).isin(held)].reset_index(drop=True)
        return dataclasses.replace(scored, scores=scores)

    def compute(values: InputValues) -> ScoredCorpus:
        write_heldout_rows(evaluation, shared, values["score"])
        return pool(values)

    settings = {"rows": evaluation.split_rows()}
    return Stage("heldout", compute, [shared.heldout_ids], {"score": score}, settings, sources, pool)


def write_heldout_rows(evaluation: EvaluationConfig, shared: SharedFolder, scored: ScoredCorpus) -> None:
    """Choose the held-out rows (seeded, spread over the corpus) and write them; an empty split is allowed."""
    ids: list[str] = []
    if evaluation.heldout_file is not None:
        copy_rows(evaluation.heldout_file, shared.heldout_rows)
        source = evaluation.heldout_file
    else:
        scored_ids = scored.scores["id"].astype(str).tolist()
        split_rows = evaluation.split_rows()
        if split_rows >= len(scored_ids):
            key = "evaluation.heldout_rows" if evaluation.heldout is None else "the int entry of evaluation.heldout"
            raise ValueError(f"{key}={split_rows} leaves no row to select from ({len(scored_ids)} scored rows)")
        positions = sorted(random.Random(0).sample(range(len(scored_ids)), split_rows))
        ids = [scored_ids[position] for position in positions]
        rows = [{**raw, "id": row_id} for row_id, raw in zip(ids, scored.store.raw_rows(ids), strict=True)]
        if rows:
            write_jsonl(shared.heldout_rows, rows)
        source = "corpus"
    write_json(shared.heldout_ids, {"ids": ids, "source": source})


def heldout_set_stage(spec: HeldoutSet, data_dir: str | None, shared: SharedFolder) -> Stage:
    """Stage `heldout/{name}`: a named file or built-in set's rows as `shared/heldout/{name}.jsonl`, keyed by
    the file's content, or by the built-in set's name, row limit and data file's content (in `data_dir`,
    `evaluation.data_dir`)."""
    path = shared.heldout_set(spec.name)
    if spec.file is not None:
        sources = {"file": lambda: source_identity(spec.file)}
        return Stage(f"heldout/{spec.name}", lambda values: copy_rows(spec.file, path), [path], sources=sources)
    limit = spec.limit or get_heldout_builder(spec.builtin).default_limit

    def compute(values: InputValues) -> None:
        log(f"held-out set {spec.name}: {write_heldout(spec.builtin, path, limit, data_dir)} rows")

    sources = {"data": lambda: source_identity(str(heldout_source(spec.builtin, data_dir)))}
    return Stage(
        f"heldout/{spec.name}", compute, [path], settings={"builtin": spec.builtin, "limit": limit}, sources=sources
    )


# ------------------------------------------------------------------------------------------------ embed, cluster


def embed_stage(config: SelectConfig, shared: SharedFolder, heldout: Stage) -> Stage:
    """Stage `embed`: the pool's embeddings in `shared/embed_shards/` (finished shards kept on a resume), with the
    embedding, corpus fields and engine of the shared selection config `config`."""
    settings = {
        "embedding": settings_except(config.embedding, "batch_size"),
        "embed_fields": list(config.corpus.embed_fields),
    }

    def embeddings(values: InputValues) -> np.ndarray:
        pool = values["pool"]
        return embed_rows(config, pool.store, pool.scores["id"].astype(str).tolist(), shared.embed_shards)

    artifacts = [shared.embed_shards]
    return Stage("embed", embeddings, artifacts, {"pool": heldout}, settings, load=embeddings)


def embed_response_stage(config: SelectConfig, shared: SharedFolder, heldout: Stage) -> Stage:
    """Stage `embed_response`: the pool's responses embedded, for a clustering that weighs them."""

    def embeddings(values: InputValues) -> np.ndarray | None:
        pool = values["pool"]
        return response_embeddings(config, pool.store, pool.scores["id"].astype(str).tolist(), shared.root)

    settings = {"embedding": settings_except(config.embedding, "batch_size")}
    artifacts = [shared.response_embed_shards]
    return Stage("embed_response", embeddings, artifacts, {"pool": heldout}, settings, load=embeddings)


def cluster_stage(
    clustering: ClusterConfig,
    config: SelectConfig,
    seed: int,
    shared: SharedFolder,
    heldout: Stage,
    embed: Stage,
    embed_response: Stage | None,
) -> Stage:
    """Stage `cluster/s{seed}`: the pool clustered by the run's `clustering` section under run seed `seed`
    (`clustering.seed` where one is set), on the features the shared selection config `config` builds:
    `shared/clusters-s{seed}.parquet` (with the 2-D map) and `shared/clustering-s{seed}.json`. Its value is the
    `ClusterResult`."""
    cluster_seed = seed if clustering.seed is None else clustering.seed
    table_path = shared.cluster_table(seed)
    record_path = shared.cluster_record(seed)

    clustering = dataclasses.replace(clustering, seed=cluster_seed)
    inputs = {"pool": heldout, "embed": embed}
    if embed_response is not None:
        inputs["embed_response"] = embed_response
    settings = {"clustering": clustering, "embed_fields": list(config.corpus.embed_fields)}

    def compute(values: InputValues) -> ClusterResult:
        pool = values["pool"]
        ids = pool.scores["id"].astype(str).tolist()
        embeddings = values["embed"]
        responses = values.get("embed_response")
        features = clustering_features(config, pool.store, ids, embeddings, responses, clustering)
        result = cluster_embeddings(features, clustering)
        write_parquet(table_path, cluster_table(ids, result, embeddings, seed))
        eigenvalues = None if result.eigenvalues is None else [float(v) for v in result.eigenvalues]
        record = {
            "n_clusters": result.n_clusters,
            "eigenvalues": eigenvalues,
            "n_landmarks": result.n_landmarks,
            "seconds": result.seconds,
            "details": result.details,
        }
        write_json(record_path, record)
        return result

    def load(values: InputValues) -> ClusterResult:
        return load_clusters(table_path, record_path, lambda: values["pool"].scores["id"].astype(str).tolist())

    return Stage(f"cluster/s{seed}", compute, [table_path, record_path], inputs, settings, load=load)


def load_clusters(table_path: Path, record_path: Path, pool_ids: Callable[[], list[str]]) -> ClusterResult:
    """A clustering read back from its table and record; refuses a table whose rows are not the pool's
    (`pool_ids()`)."""
    table = pd.read_parquet(table_path)
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if table["id"].astype(str).tolist() != pool_ids():
        raise RuntimeError(f"{table_path} does not match the scored pool; delete it and rerun")
    manifold = sorted((c for c in table.columns if c.startswith("manifold_")), key=lambda c: int(c[9:]))
    eigenvalues = record["eigenvalues"]
    return ClusterResult(
        labels=table["cluster"].to_numpy(np.int64),
        n_clusters=record["n_clusters"],
        eigenvalues=None if eigenvalues is None else np.asarray(eigenvalues),
        coordinates=table[manifold].to_numpy() if manifold else None,
        n_landmarks=record["n_landmarks"],
        seconds=record["seconds"],
        details=record.get("details", {}),
    )


# ------------------------------------------------------------------------------------------------ per combination


def select_stage(
    config: SelectConfig, shared: SharedFolder, stages: SharedStages, folder: SelectFolder, combo: Combo
) -> Stage:
    """Stage `select/{combo}`: the combination's selection by its select config `config` (`select_config`) into
    `folder` (`combos/{combo}/select/`: selection.jsonl, stats.json) from the pool, its embeddings and its seed's
    clustering; one per (strategy, budget, seed), whatever recovery variant trains on it."""
    out = folder.root
    cluster = stages.clusters[combo.seed]

    selection = config.selection
    settings = {
        "strategy": selection.strategy,
        "options": strategy_options(selection.strategy, selection.options),
        "budget": selection.budget,
        "seed": selection.seed,
    }

    def compute(values: InputValues) -> None:
        pool = values["pool"]
        embeddings = values["embed"]  # first: embedding (re)writes the summary read below
        select_from(
            config,
            pool,
            embeddings,
            values["cluster"],
            out,
            concept_cache_dir=shared.concept_cache,
            embedding_summary=read_embedding_summary(shared.embed_shards),
            write_tables=False,
        )

    inputs = {"pool": stages.heldout, "embed": stages.embed, "cluster": cluster}
    return Stage(f"select/{combo.selection.name}", compute, [folder.selection, folder.stats], inputs, settings)


def recover_stage(
    recovery: TrainConfig,
    data_dir: str | None,
    pair: ModelPair,
    folder: ComboFolder,
    select: Stage,
    combo: Combo,
    token_jsd: tuple[Stage, Path] | None = None,
) -> Stage:
    """Stage `recover/{combo}`: the pruned model of `pair` trained by `recovery` (the run's section or one of its
    variants) on the combination's selection and merged (`folder.recover`, `combos/{combo}/recover/`: adapter/,
    merged/, recovery.json, targets.jsonl with `targets: original`, ...); `data_dir` is `evaluation.data_dir`,
    where the re-masking check reads its text. A training that weights tokens by the run's own per-token JSD
    (`token_jsd` is `RUN_TOKEN_JSD`) reads it from `token_jsd` (the score stage, its shard
    folder), declared by the score stage: the hashed setting stays that marker, never a path."""
    out = folder.recover.root
    training = dataclasses.replace(recovery, seed=combo.seed)
    inputs, sources = pair.pruned_model("pruned")
    inputs["select"] = select
    sources["original"] = pair.original_identity  # the teacher of the objectives that learn from it
    # The shared settings and the objective's, flat (`TrainConfig.flat_settings`); trackers only watch.
    settings = {"recovery": settings_except(training.flat_settings(), "show_progress", "report_to")}
    if training.remask_eval == "wikitext2":  # the re-masking check reads its text from the data folder
        settings["data_dir"] = data_dir
    if training.token_weighting is not None and training.token_weighting.token_jsd == RUN_TOKEN_JSD:
        if token_jsd is None:
            raise ValueError(f"recover/{combo.name}: token weighting needs the score stage's per-token JSD")
        score, shards = token_jsd
        inputs["score"] = score
        weighted = dataclasses.replace(training.objective_config, token_jsd=str(shards))
        training = dataclasses.replace(training, objective_config=weighted)

    def compute(values: InputValues) -> None:
        from paser.recovery.train import recover

        recover(
            pair.pruned,
            folder.select.selection,
            out,
            training,
            original=pair.original,
            data_dir=data_dir,
            run_name=combo.name,
        )
        gc.collect()

    artifacts = [folder.recover.record, folder.recover.merged]
    return Stage(f"recover/{combo.name}", compute, artifacts, inputs, settings, sources)


# ------------------------------------------------------------------------------------------------ evaluation


@dataclasses.dataclass(frozen=True)
class EvalSections:
    """The config sections an evaluation reads: `evaluation` (tasks, held-out sets), `recovery` (how a held-out row
    is tokenised: as training does), `models` (dtype and device), and the folder of the held-out rows (`shared`)."""

    evaluation: EvaluationConfig
    recovery: TrainConfig
    models: RunModelsConfig
    shared: SharedFolder


def eval_stage(
    sections: EvalSections,
    stages: SharedStages,
    name: str,
    model: str,
    out: EvalFolder,
    model_inputs: dict[str, Stage],
    model_sources: dict[str, Callable[[], str]],
) -> Stage:
    """Stage `eval/{name}`: `model` evaluated on the tasks and every held-out set (`out.metrics`). The model is
    declared by role `model`: the stage that wrote it (`model_inputs`) or its checkpoint's identity
    (`model_sources`)."""
    evaluation, recovery, models = sections.evaluation, sections.recovery, sections.models
    inputs = {**model_inputs, "pool": stages.heldout}
    inputs |= {f"heldout/{set_name}": stage for set_name, stage in stages.heldout_sets.items()}
    settings = {
        # The held-out rows are read through the held-out stages, by content; here only what each set is called.
        "evaluation": settings_except(evaluation, "heldout_rows", "heldout_file", "heldout"),
        "heldout_sets": {spec.metric_prefix: spec.in_distribution for spec in evaluation.heldout_sets()},
        "heldout_tokens": {
            "max_length": recovery.max_length,
            "template": recovery.template,
            "overflow": recovery.overflow,
        },
        "models": {"dtype": models.dtype, "device": models.device},
        "dev_test": {"dev_share": DEV_SHARE, "salt": SPLIT_SALT},  # how the in-distribution set splits in halves
    }
    compute = lambda values: evaluate(sections, model, out, values["pool"])  # noqa: E731
    return Stage(f"eval/{name}", compute, [out.metrics], inputs, settings, model_sources)


def strategy_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option the registered strategy `name` selects with under `options`: those given over its defaults."""
    strategy = get_strategy(name, **options)
    return {field.name: getattr(strategy, field.name) for field in dataclasses.fields(strategy) if field.init}


def heldout_files(evaluation: EvaluationConfig, shared: SharedFolder) -> list[tuple[HeldoutSet, Path]]:
    """Every held-out set of `evaluation` with the file of its rows: `shared/heldout.jsonl` for the split off the
    corpus (and the older keys' set), `shared/heldout/{name}.jsonl` for a named file or built-in set."""
    files = []
    for spec in evaluation.heldout_sets():
        if has_own_rows(spec):
            files.append((spec, shared.heldout_set(spec.name)))
        elif shared.heldout_rows.exists():
            files.append((spec, shared.heldout_rows))
    return files


def has_own_rows(spec: HeldoutSet) -> bool:
    """Whether a held-out set has rows of its own (a named file or built-in set, stage `heldout/{name}`) rather
    than the split off the corpus."""
    return spec.name is not None and spec.rows is None


def pool_prompts(pool: ScoredCorpus) -> frozenset[str]:
    """The prompts (`paser.data.heldout.prompt_key`) of every row a combination may train on (the selection pool):
    what the generation tasks leave out of their prompts."""
    ids = set(pool.scores["id"].astype(str))
    return frozenset(prompt_key(sample.instruction, sample.input) for sample in pool.corpus.samples if sample.id in ids)


def evaluate(sections: EvalSections, model_name: str, out: EvalFolder, pool: ScoredCorpus) -> None:
    """Evaluate `model_name` on the tasks and the held-out sets' response NLL into `out` (the eval stage's
    compute): the in-distribution set also as its dev and test halves (`heldout_<name>_dev`, `_test`), the
    generation tasks on prompts outside the selection pool, formatted as training formats them, their answers
    cached in `out/generations/`."""
    from paser.recovery.evaluate import GENERATION_TASK_NAMES, evaluate_model, write_results
    from paser.recovery.models import load_model

    evaluation, recovery = sections.evaluation, sections.recovery
    generating = any(task in GENERATION_TASK_NAMES for task in evaluation.tasks)
    model, tokenizer = load_model(model_name, dtype=sections.models.dtype, device=sections.models.device)
    model.eval()
    record = {
        "model": model_name,
        "adapter": None,
        **evaluate_model(
            model,
            tokenizer,
            evaluation.tasks,
            limit=evaluation.limit,
            data_dir=evaluation.data_dir,
            source=evaluation.source,
            batch_size=evaluation.batch_size,
            seqlen=evaluation.seqlen,
            template=recovery.template,
            exclude_prompts=pool_prompts(pool) if generating else (),
            generation_cache=out.generations,
        ),
    }
    for spec, heldout in heldout_files(evaluation, sections.shared):
        result = heldout_nll(
            model,
            tokenizer,
            heldout,
            recovery,
            batch_size=evaluation.batch_size,
            split=spec.in_distribution,
        )
        splits = result.pop("splits", {})
        record[spec.metric_prefix] = result
        # Each half is a top-level entry, so its metrics and per-row items are named for it (recovery.items).
        for split, part in splits.items():
            record[f"{spec.metric_prefix}_{split}"] = part
        log(f"{spec.metric_prefix}: response NLL {result['nll']:.4f} on {result['rows']} rows")
    write_results(record, out.root)
    del model
    gc.collect()
