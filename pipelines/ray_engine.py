"""The Ray engine: degradation scoring and embedding on Ray Data actors, for corpora and models beyond one
process.

Both stages work the same way. The driver decides the shards exactly as the local engine does (same rows,
same fingerprint in `meta.json`), skips the finished ones, and writes the rest's inputs (token ids, or texts)
as one Parquet file per shard (on a filesystem every node sees, for a multi-node cluster). A Ray Dataset of
those shards feeds a pool of actors (`map_batches` with a callable class, one shard per call): each actor loads
its models once, on its own GPU(s) or CPUs, reads its shard and returns per-row results. The driver streams
the results back and writes every shard and its completion marker as soon as it arrives. Each shard is
computed by the same function on the same rows as the local engine, so the results agree up to the float
rounding of different thread counts (tested to 1e-5); a job that dies part-way resumes from its finished
shards on either engine.

Ray is an optional dependency: `pip install 'paser[ray]'`.
"""

from __future__ import annotations

import abc
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from paser.common.console import progress_bar
from paser.common.io import write_atomic
from paser.pipelines.config import RayConfig
from paser.selection.config import DegradationConfig
from paser.selection.degradation import (
    _ModelParts,
    _score_shard,
    _validate,
    bos_token_id_for,
    check_model_pair,
    concat_scores,
    load_score_shard,
    model_signature,
    open_score_shards,
    prepare_bodies,
    refuse_token_jsd,
    scoring_fingerprint,
    shard_rows,
    write_score_shard,
)
from paser.selection.embed import (
    DEFAULT_LONG_TEXT,
    EncodedTexts,
    assemble_embeddings,
    encode_with,
    load_embedder,
    prepare_embedding_shards,
    resolve_embedder,
    summarize_embedding_shards,
    write_embedding_shard,
)
from paser.selection.formatting import EncodedSample
from paser.selection.shards import ShardStore
from paser.selection.topk import (
    CACHE_CONTENTS,
    _cache_shard,
    _score_shard_from_topk,
    _unfinished_shards,
    _write_cache_shard,
    check_pruned_against_cache,
    check_topk_request,
    check_topk_settings,
    topk_cache_fingerprint,
    topk_score_fingerprint,
)

RAY_EXTRA_HINT = "pip install 'paser[ray]' (or pip install 'ray[data]')"
_INPUT_FOLDER = "ray-input"


def require_ray() -> Any:
    """The `ray` module; refuses (ModuleNotFoundError, saying how to install it) when Ray is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ModuleNotFoundError(f"the ray engine needs Ray Data, which is not installed: {RAY_EXTRA_HINT}") from error
    return ray


def connect(config: RayConfig) -> Any:
    """Join (or start) the Ray cluster `config` names, once per process; returns the `ray` module."""
    ray = require_ray()
    if not ray.is_initialized():
        options: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
        if config.address is not None:
            options["address"] = config.address
        elif config.num_cpus is not None:
            options["num_cpus"] = config.num_cpus
        ray.init(**options)
        context = ray.data.DataContext.get_current()
        # Our own bar on the driver reports rows/s and ETA; Ray's per-operator bars would repeat it.
        context.enable_progress_bars = False
        context.print_on_execution_start = False
    return ray


def actor_resources(config: RayConfig, ray: Any) -> dict[str, float]:
    """`num_cpus`/`num_gpus` for each actor: GPUs default to 1 when the cluster has any, else 0."""
    gpus = config.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return {"num_cpus": config.cpus_per_actor, "num_gpus": gpus}


def _set_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


class _ShardActor(abc.ABC):
    """What every scoring actor does per call: for each shard file of the block, decode its encoded rows, check
    once per actor that each model's logits are head(body), run `work` and tag its rows with their shard and
    position for the driver's collector."""

    parts: tuple[_ModelParts, ...] = ()
    checked = False

    @abc.abstractmethod
    def work(self, shard: int, encoded: list[EncodedSample]) -> pd.DataFrame:
        """One row per encoded row (at least its `id`), in their order."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import torch

        frames = []
        with torch.inference_mode():
            for rows in _read_shards(batch):
                shard = int(rows["shard"].iloc[0])
                encoded = _encoded_rows(rows)
                if not self.checked:
                    shortest = min(encoded, key=lambda sample: sample.length).input_ids
                    for parts in self.parts:
                        parts.check_decomposition(shortest)
                    self.checked = True
                frame = self.work(shard, encoded)
                frame.insert(0, "position", rows["position"].to_numpy())
                frame.insert(0, "shard", np.full(len(frame), shard, dtype=np.int64))
                frames.append(frame)
        return pd.concat(frames, ignore_index=True)


class _ScoreActor(_ShardActor):
    """Holds the original and pruned models; scores blocks of encoded rows, shard by shard."""

    def __init__(self, original: str, pruned: str, dtype: str, config: DegradationConfig, cpus: float) -> None:
        self.original, self.pruned = _load_pair(original, pruned, dtype, cpus)
        self.parts = check_model_pair(self.original, self.pruned)
        prepare_bodies(self.parts, config)
        self.config = config
        self.bos_token_id = bos_token_id_for(self.pruned) if config.unconditioned_nll else None

    def work(self, shard: int, encoded: list[EncodedSample]) -> pd.DataFrame:
        return _score_shard(*self.parts, encoded, self.config, self.bos_token_id)


def _encoded_rows(rows: pd.DataFrame) -> list[EncodedSample]:
    """The encoded samples of one shard's input rows (see `_encoded_table`)."""
    return [
        EncodedSample(row_id, [int(token) for token in ids], int(prompt_length), bool(truncated))
        for row_id, ids, prompt_length, truncated in zip(
            rows["id"], rows["input_ids"], rows["prompt_length"], rows["truncated"], strict=True
        )
    ]


def _load_one(name: str, dtype: str, cpus: float) -> Any:
    """One model on this worker's device (its GPU when Ray gave it one), with `cpus` torch threads."""
    from paser.recovery.models import default_device, load_model

    _set_threads(cpus)
    return load_model(name, dtype, default_device())[0]


def _load_pair(original: str, pruned: str, dtype: str, cpus: float) -> tuple[Any, Any]:
    """Both models on this worker's device (its GPU when Ray gave it one), with `cpus` torch threads."""
    return _load_one(original, dtype, cpus), _load_one(pruned, dtype, cpus)


def _probe_model(name: str, dtype: str, role: str, unconditioned: bool, cpus: float) -> dict[str, Any]:
    """Load one model where the actors will (same device kind) and return what the shard fingerprints need:
    its description, vocab size, weight signature and (with `unconditioned`) BOS id. Released on return."""
    from paser.recovery.models import describe_model

    model = _load_one(name, dtype, cpus)
    parts = _ModelParts(model, role)
    return {
        "model": describe_model(name, model).to_dict(),
        "vocab_size": parts.vocab_size,
        "weights_sha256": model_signature(parts),
        "bos_token_id": bos_token_id_for(model) if unconditioned else None,
    }


def _probe_models(original: str, pruned: str, dtype: str, unconditioned: bool, cpus: float) -> dict[str, Any]:
    """`_probe_model` of both models, one after the other; refuses (ValueError) different vocab sizes."""
    probes = {
        "original": _probe_model(original, dtype, "original", False, cpus),
        "pruned": _probe_model(pruned, dtype, "pruned", unconditioned, cpus),
    }
    if probes["original"]["vocab_size"] != probes["pruned"]["vocab_size"]:
        raise ValueError(
            f"the models' vocab sizes differ: original {probes['original']['vocab_size']} "
            f"vs pruned {probes['pruned']['vocab_size']}"
        )
    return {
        "models": {role: probe["model"] for role, probe in probes.items()},
        "vocab_size": probes["original"]["vocab_size"],
        "original_weights_sha256": probes["original"]["weights_sha256"],
        "pruned_weights_sha256": probes["pruned"]["weights_sha256"],
        "bos_token_id": probes["pruned"]["bos_token_id"],
    }


def _write_inputs(folder: Path, tables: dict[int, pa.Table]) -> list[str]:
    """One Parquet file per pending shard (atomic), in shard order; returns their paths."""
    if folder.exists():
        shutil.rmtree(folder)
    paths = []
    for index, table in tables.items():
        path = folder / f"shard-{index:05d}.parquet"
        write_atomic(path, lambda staging, table=table: pq.write_table(table, staging))
        paths.append(str(path))
    return paths


def _run_actors(
    ray: Any,
    paths: list[str],
    actor: type,
    constructor_kwargs: dict[str, Any],
    ray_config: RayConfig,
) -> Iterator[pd.DataFrame]:
    """Stream the actors' results, one shard per call, for the shard input files at `paths`.

    The dataset holds the files' paths and each actor reads its shard's file itself. `read_parquet` would
    read them in separate Ray tasks, and those need a free CPU: with actors holding every CPU of the
    cluster (2 CPUs, 2 actors) the read never starts and the job hangs.
    """
    resources = actor_resources(ray_config, ray)
    dataset = ray.data.from_items([{"path": path} for path in paths], override_num_blocks=len(paths))
    results = dataset.map_batches(
        actor,
        fn_constructor_kwargs={**constructor_kwargs, "cpus": ray_config.cpus_per_actor},
        batch_size=1,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=ray_config.actors),
        **resources,
    )
    yield from results.iter_batches(batch_size=None, batch_format="pandas")


def _read_shards(batch: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """The input rows of every shard file named in `batch`, in their order."""
    for path in batch["path"]:
        yield pq.read_table(path).to_pandas()


def _plain_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with Ray's Arrow-backed columns turned into the dtypes pandas gives the local engine's frames."""
    columns = {}
    for name, column in frame.items():
        if isinstance(column.dtype, pd.ArrowDtype):
            arrow_type = column.dtype.pyarrow_dtype
            if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
                column = column.astype("str")
            elif pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
                column = column.astype(arrow_type.to_pandas_dtype())
        columns[name] = column
    return pd.DataFrame(columns, index=frame.index)


class _ShardCollector:
    """Gathers result rows per shard and hands over each shard once all of its rows have arrived."""

    def __init__(self, sizes: dict[int, int], finish: Callable[[int, pd.DataFrame], None]) -> None:
        self.sizes, self.finish = sizes, finish
        self.parts: dict[int, list[pd.DataFrame]] = {index: [] for index in sizes}
        self.received = dict.fromkeys(sizes, 0)

    def add(self, block: pd.DataFrame) -> int:
        """Take a result block; returns how many rows it held."""
        block = _plain_dtypes(block)
        for shard, rows in block.groupby("shard", sort=False):
            shard = int(shard)
            if shard not in self.sizes:
                raise RuntimeError(f"the ray engine returned rows of shard {shard}, which was not sent")
            self.parts[shard].append(rows)
            self.received[shard] += len(rows)
            if self.received[shard] > self.sizes[shard]:
                raise RuntimeError(
                    f"the ray engine returned {self.received[shard]} rows for shard {shard} of {self.sizes[shard]}"
                )
            if self.received[shard] == self.sizes[shard]:
                frame = pd.concat(self.parts.pop(shard)).sort_values("position")
                self.finish(shard, frame.drop(columns=["shard", "position"]).reset_index(drop=True))
        return len(block)

    def check_complete(self) -> None:
        if self.parts:
            missing = {shard: self.sizes[shard] - self.received[shard] for shard in self.parts}
            raise RuntimeError(f"the ray engine finished without every row; rows missing per shard: {missing}")


def _run_on_ray(
    ray: Any,
    shard_dir: Path,
    tables: dict[int, pa.Table],
    actor: type,
    constructor_kwargs: dict[str, Any],
    ray_config: RayConfig,
    finish: Callable[[int, pd.DataFrame], None],
    total_rows: int,
    desc: str,
    show_progress: bool,
) -> None:
    """Send the pending shards' input `tables` to `actor`s and hand each finished shard to `finish`; the input
    files are removed once every shard is back. Refuses (RuntimeError) a job that returns rows missing."""
    paths = _write_inputs(shard_dir / _INPUT_FOLDER, tables)
    collector = _ShardCollector({index: table.num_rows for index, table in tables.items()}, finish)
    done = total_rows - sum(collector.sizes.values())
    with progress_bar(total=total_rows, initial=done, desc=desc, show=show_progress) as bar:
        for block in _run_actors(ray, paths, actor, constructor_kwargs, ray_config):
            bar.update(collector.add(block))
    collector.check_complete()
    shutil.rmtree(shard_dir / _INPUT_FOLDER, ignore_errors=True)


def score_on_ray(
    original: str,
    pruned: str,
    dtype: str,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    shard_dir: Path,
    ray_config: RayConfig,
    *,
    overwrite: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`score_degradation` of the models at `original` and `pruned` on Ray actors: the same table and the same
    shard files in `shard_dir`; returns (scores, {"original": ModelInfo dict, "pruned": ...}).

    The pair is first loaded once where the actors run, to fingerprint the weights exactly as the local engine
    does (so either engine resumes the other's shards) and to refuse a bad pair before any actor starts.
    """
    refuse_token_jsd(config, "the ray engine")
    ray = connect(ray_config)
    resources = actor_resources(ray_config, ray)
    probe = ray.remote(**resources)(_probe_models)
    info = ray.get(probe.remote(original, pruned, dtype, config.unconditioned_nll, ray_config.cpus_per_actor))
    _validate(encoded, info["vocab_size"])
    fingerprint = scoring_fingerprint(
        encoded, config, info["bos_token_id"], info["original_weights_sha256"], info["pruned_weights_sha256"]
    )
    shard_dir = Path(shard_dir)
    store = open_score_shards(shard_dir, fingerprint, overwrite=overwrite)
    constructor = {"original": original, "pruned": pruned, "dtype": dtype, "config": config}
    frames = _fill_score_shards(ray, store, encoded, config, _ScoreActor, constructor, ray_config, "degradation (ray)")
    return concat_scores(frames, config), info["models"]


def _fill_score_shards(
    ray: Any,
    store: ShardStore,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    actor: type,
    constructor_kwargs: dict[str, Any],
    ray_config: RayConfig,
    desc: str,
) -> list[pd.DataFrame | None]:
    """Every score shard of `encoded` in `store`: the finished ones read back, the rest computed by `actor`s
    (which return score rows) and written with their markers as they arrive."""
    shards = shard_rows(encoded, config)
    frames = [load_score_shard(store, index, [row.id for row in rows]) for index, rows in enumerate(shards)]
    pending = [index for index, frame in enumerate(frames) if frame is None]
    if pending:

        def finish(index: int, frame: pd.DataFrame) -> None:
            expected = [row.id for row in shards[index]]
            if frame["id"].tolist() != expected:
                raise RuntimeError(f"the ray engine returned other ids for shard {index} than were sent")
            write_score_shard(store, index, frame)
            frames[index] = frame

        tables = {index: _encoded_table(index, shards[index]) for index in pending}
        _run_on_ray(
            ray,
            store.folder,
            tables,
            actor,
            constructor_kwargs,
            ray_config,
            finish,
            len(encoded),
            desc,
            config.show_progress,
        )
    return frames


class _TopkCacheActor(_ShardActor):
    """Holds the original model only; computes and writes the top-k cache shard of each block it is given (the
    cache files are large, so they go straight to the shared folder instead of back through the driver)."""

    def __init__(
        self,
        original: str,
        dtype: str,
        config: DegradationConfig,
        cache_dir: str,
        fingerprint: dict[str, Any],
        cpus: float,
    ) -> None:
        self.parts = (_ModelParts(_load_one(original, dtype, cpus), "original"),)
        prepare_bodies(self.parts, config)
        self.config = config
        self.store = ShardStore(Path(cache_dir), fingerprint, suffix=".npz", what=CACHE_CONTENTS)

    def work(self, shard: int, encoded: list[EncodedSample]) -> pd.DataFrame:
        k, tail_samples = self.store.fingerprint["topk"], self.store.fingerprint["tail_samples"]
        # Seeded with the shard index, as the local engine does: the same tail samples on either engine.
        _write_cache_shard(self.store, shard, _cache_shard(self.parts[0], encoded, self.config, k, tail_samples, shard))
        return pd.DataFrame({"id": [sample.id for sample in encoded]})


class _TopkScoreActor(_ShardActor):
    """Holds the pruned model only; scores each block against the original's cached top-k shard."""

    def __init__(
        self,
        pruned: str,
        dtype: str,
        config: DegradationConfig,
        cache_dir: str,
        cache_fingerprint: dict[str, Any],
        estimator: str,
        cpus: float,
    ) -> None:
        model = _load_one(pruned, dtype, cpus)
        self.parts = (_ModelParts(model, "pruned"),)
        prepare_bodies(self.parts, config)
        self.config, self.estimator = config, estimator
        self.cache = ShardStore(Path(cache_dir), cache_fingerprint, suffix=".npz", what=CACHE_CONTENTS)
        self.bos_token_id = bos_token_id_for(model) if config.unconditioned_nll else None

    def work(self, shard: int, encoded: list[EncodedSample]) -> pd.DataFrame:
        return _score_shard_from_topk(
            self.parts[0], self.cache, shard, encoded, self.config, self.estimator, self.bos_token_id
        )


def score_topk_on_ray(
    original: str,
    pruned: str,
    dtype: str,
    encoded: Sequence[EncodedSample],
    config: DegradationConfig,
    cache_dir: Path,
    shard_dir: Path,
    ray_config: RayConfig,
    *,
    k: int = 64,
    tail_samples: int = 16,
    estimator: str = "sampled_tail",
    overwrite: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`paser.selection.topk.score_degradation_topk` on Ray actors, for a pair that does not fit one device: first a
    pool of actors holding only the original model writes the top-k cache shards in `cache_dir`, then a pool
    holding only the pruned model scores against them into `shard_dir`. The same files, fingerprints and
    numbers as the local top-k path, so either engine resumes the other's cache and score shards; returns
    (scores, {"original": ModelInfo dict, "pruned": ...}). `cache_dir` must be on a filesystem every node sees.
    """
    check_topk_request(estimator, tail_samples)
    refuse_token_jsd(config, "top-k scoring (an estimate of the JSD)")
    ray = connect(ray_config)
    probe = ray.remote(**actor_resources(ray_config, ray))(_probe_model)
    cpus = ray_config.cpus_per_actor
    original_info = ray.get(probe.remote(original, dtype, "original", False, cpus))
    check_topk_settings(k, tail_samples, original_info["vocab_size"])
    _validate(encoded, original_info["vocab_size"])
    cache_dir = Path(cache_dir)
    cache_fingerprint = topk_cache_fingerprint(
        encoded, config, k, tail_samples, original_info["vocab_size"], original_info["weights_sha256"]
    )
    cache = ShardStore(cache_dir, cache_fingerprint, suffix=".npz", what=CACHE_CONTENTS, overwrite=overwrite)
    pending = _unfinished_shards(cache, encoded, config)
    if pending:
        shards = shard_rows(encoded, config)

        def cached(index: int, frame: pd.DataFrame) -> None:
            ids = [row.id for row in shards[index]]
            if frame["id"].tolist() != ids or not cache.is_done(index, ids):
                raise RuntimeError(f"the ray engine reported top-k cache shard {index} done, but it is not")

        constructor = {
            "original": original,
            "dtype": dtype,
            "config": config,
            "cache_dir": str(cache_dir),
            "fingerprint": cache_fingerprint,
        }
        tables = {index: _encoded_table(index, shards[index]) for index in pending}
        _run_on_ray(
            ray,
            cache_dir,
            tables,
            _TopkCacheActor,
            constructor,
            ray_config,
            cached,
            len(encoded),
            "top-k cache (ray, original)",
            config.show_progress,
        )
    pruned_info = ray.get(probe.remote(pruned, dtype, "pruned", config.unconditioned_nll, cpus))
    check_pruned_against_cache(estimator, cache_fingerprint, pruned_info["vocab_size"], cache_dir)
    fingerprint = topk_score_fingerprint(
        encoded, config, pruned_info["bos_token_id"], cache_fingerprint, pruned_info["weights_sha256"], estimator
    )
    store = open_score_shards(Path(shard_dir), fingerprint, overwrite=overwrite)
    constructor = {
        "pruned": pruned,
        "dtype": dtype,
        "config": config,
        "cache_dir": str(cache_dir),
        "cache_fingerprint": cache_fingerprint,
        "estimator": estimator,
    }
    frames = _fill_score_shards(
        ray, store, encoded, config, _TopkScoreActor, constructor, ray_config, "top-k scores (ray, pruned)"
    )
    return concat_scores(frames, config), {"original": original_info["model"], "pruned": pruned_info["model"]}


def _encoded_table(index: int, rows: Sequence[EncodedSample]) -> pa.Table:
    return pa.table(
        {
            "shard": pa.array([index] * len(rows), pa.int64()),
            "position": pa.array(range(len(rows)), pa.int64()),
            "id": pa.array([row.id for row in rows], pa.string()),
            "input_ids": pa.array([row.input_ids for row in rows], pa.list_(pa.int32())),
            "prompt_length": pa.array([row.prompt_length for row in rows], pa.int64()),
            "truncated": pa.array([row.truncated for row in rows], pa.bool_()),
        }
    )


class _EmbedActor:
    """Holds the sentence-transformers embedder; embeds blocks of texts, shard by shard, and counts their
    tokens (`paser.selection.embed.encode_with`, as the local engine)."""

    def __init__(self, model_location: str, batch_size: int, long_text: str, cpus: float) -> None:
        from paser.recovery.models import default_device

        _set_threads(cpus)
        self.encoder = load_embedder(model_location, default_device())
        self.batch_size, self.long_text = batch_size, long_text

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        frames = []
        for rows in _read_shards(batch):
            encoded = encode_with(self.encoder, rows["text"].tolist(), self.batch_size, long_text=self.long_text)
            frames.append(
                rows[["shard", "position", "id"]].assign(
                    embedding=list(encoded.embeddings), tokens=encoded.token_counts, max_tokens=encoded.max_tokens
                )
            )
        return pd.concat(frames, ignore_index=True)


def embed_on_ray(
    ids: Sequence[str],
    texts: Sequence[str],
    shard_dir: Path,
    ray_config: RayConfig,
    *,
    model: str | None = None,
    batch_size: int = 64,
    shard_size: int = 4096,
    show_progress: bool = True,
    overwrite: bool = False,
    long_text: str = DEFAULT_LONG_TEXT,
) -> np.ndarray:
    """`paser.selection.embed.embed_in_shards` on Ray actors: the same shards and summary, the same memory-mapped
    result."""
    store, bounds, pending = prepare_embedding_shards(
        ids,
        texts,
        shard_dir,
        model=model,
        batch_size=batch_size,
        shard_size=shard_size,
        long_text=long_text,
        overwrite=overwrite,
    )
    shard_dir = Path(shard_dir)
    if pending:
        ray = connect(ray_config)
        tables = {
            index: pa.table(
                {
                    "shard": pa.array([index] * (bounds[index][1] - bounds[index][0]), pa.int64()),
                    "position": pa.array(range(bounds[index][1] - bounds[index][0]), pa.int64()),
                    "id": pa.array(ids[bounds[index][0] : bounds[index][1]], pa.string()),
                    "text": pa.array(texts[bounds[index][0] : bounds[index][1]], pa.string()),
                }
            )
            for index in pending
        }

        def finish(index: int, frame: pd.DataFrame) -> None:
            start, stop = bounds[index]
            if frame["id"].tolist() != list(ids[start:stop]):
                raise RuntimeError(f"the ray engine returned other ids for embedding shard {index} than were sent")
            encoded = EncodedTexts(
                np.stack(frame["embedding"].to_list()),
                frame["tokens"].to_numpy(np.int64),
                int(frame["max_tokens"].iloc[0]),
            )
            write_embedding_shard(store, index, ids[start:stop], encoded)

        constructor = {"model_location": resolve_embedder(model), "batch_size": batch_size, "long_text": long_text}
        _run_on_ray(
            ray,
            shard_dir,
            tables,
            _EmbedActor,
            constructor,
            ray_config,
            finish,
            len(ids),
            "embedding (ray)",
            show_progress,
        )
    # Only a folder embedded before shards kept their token counts needs the embedder here, to count them.
    summarize_embedding_shards(store, bounds, texts, long_text, lambda: load_embedder(resolve_embedder(model), None))
    return assemble_embeddings(store, bounds, shard_dir / "embeddings.npy")
