"""Where scoring and embedding run: an `Engine`, chosen once from `engine` in the config.

`LocalEngine` runs the models in this process (`paser.selection.degradation`, `paser.selection.topk`,
`paser.selection.embed`); `RayEngine` runs the same code on Ray actors (`paser.pipelines.ray_engine`).
Both score the pair side by side (`score`) or one model at a time through the original's top-k cache
(`score_topk`), and embed texts in resumable shards (`embed`). A new engine is a class with these three
methods, built with the `ray` settings and registered in `paser.pipelines.config.ENGINES`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from paser.common.console import say
from paser.pipelines.config import ENGINES, ModelPairConfig, RayConfig, TopkConfig
from paser.pipelines.layout import SelectFolder
from paser.pipelines.ray_engine import embed_on_ray, require_ray, score_on_ray, score_topk_on_ray
from paser.recovery.models import describe_model, load_model
from paser.selection.config import DegradationConfig
from paser.selection.degradation import score_degradation
from paser.selection.embed import embed_in_shards
from paser.selection.formatting import EncodedSample
from paser.selection.topk import score_degradation_topk


class Engine(Protocol):
    """Scores a model pair's degradation over encoded rows and embeds texts; every method is resumable from
    the shards it leaves in the folders it is given. `score*` return (scores, {"original": ModelInfo dict,
    "pruned": ...})."""

    name: ClassVar[str]

    def score(
        self, models: ModelPairConfig, encoded: Sequence[EncodedSample], scoring: DegradationConfig, out_dir: Path
    ) -> tuple[pd.DataFrame, dict[str, Any]]: ...

    def score_topk(
        self,
        models: ModelPairConfig,
        encoded: Sequence[EncodedSample],
        scoring: DegradationConfig,
        topk: TopkConfig,
        out_dir: Path,
    ) -> tuple[pd.DataFrame, dict[str, Any]]: ...

    def embed(self, ids: Sequence[str], texts: Sequence[str], shard_dir: Path, **options: Any) -> np.ndarray: ...


class LocalEngine:
    """Both models (or one at a time, for top-k) in this process, on `models.device`."""

    name: ClassVar[str] = "local"

    def __init__(self, ray: RayConfig | None = None) -> None:
        """`ray` is not used: every engine is built with the same arguments."""

    def score(
        self, models: ModelPairConfig, encoded: Sequence[EncodedSample], scoring: DegradationConfig, out_dir: Path
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        info: dict[str, Any] = {}
        load = _loader(models, info)
        original, pruned = load("original"), load("pruned")
        scores = score_degradation(original, pruned, encoded, scoring, shard_dir=SelectFolder(out_dir).score_shards)
        del original, pruned
        gc.collect()
        return scores, info

    def score_topk(
        self,
        models: ModelPairConfig,
        encoded: Sequence[EncodedSample],
        scoring: DegradationConfig,
        topk: TopkConfig,
        out_dir: Path,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        info: dict[str, Any] = {}
        load = _loader(models, info)
        scores = score_degradation_topk(
            lambda: load("original"),
            lambda: load("pruned"),
            encoded,
            scoring,
            SelectFolder(out_dir).topk_cache,
            k=topk.k,
            tail_samples=topk.tail_samples,
            estimator=topk.estimator,
            shard_dir=SelectFolder(out_dir).topk_score_shards,
        )
        return scores, info

    def embed(self, ids: Sequence[str], texts: Sequence[str], shard_dir: Path, **options: Any) -> np.ndarray:
        return embed_in_shards(ids, texts, shard_dir, **options)


class RayEngine:
    """The same work on Ray actors (`ray` settings); this process only reads tokenizers and configs."""

    name: ClassVar[str] = "ray"

    def __init__(self, ray: RayConfig) -> None:
        require_ray()
        self.ray = ray

    def score(
        self, models: ModelPairConfig, encoded: Sequence[EncodedSample], scoring: DegradationConfig, out_dir: Path
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        return score_on_ray(
            models.original, models.pruned, models.dtype, encoded, scoring, SelectFolder(out_dir).score_shards, self.ray
        )

    def score_topk(
        self,
        models: ModelPairConfig,
        encoded: Sequence[EncodedSample],
        scoring: DegradationConfig,
        topk: TopkConfig,
        out_dir: Path,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        return score_topk_on_ray(
            models.original,
            models.pruned,
            models.dtype,
            encoded,
            scoring,
            SelectFolder(out_dir).topk_cache,
            SelectFolder(out_dir).topk_score_shards,
            self.ray,
            k=topk.k,
            tail_samples=topk.tail_samples,
            estimator=topk.estimator,
        )

    def embed(self, ids: Sequence[str], texts: Sequence[str], shard_dir: Path, **options: Any) -> np.ndarray:
        return embed_on_ray(ids, texts, shard_dir, self.ray, **options)


def get_engine(name: str, ray: RayConfig) -> Engine:
    """The engine registered as `name` in `ENGINES` (`local`, `ray` or a plug-in's), built with the `ray` settings
    it may use; refuses an unknown name listing the known ones, and `ray` without Ray Data installed
    (ModuleNotFoundError)."""
    return ENGINES.get(name)(ray)


def _loader(models: ModelPairConfig, info: dict[str, Any]) -> Callable[[str], Any]:
    """`load(role)`: the `role` ("original" or "pruned") model of the pair, its description put in `info`."""

    def load(role: str) -> Any:
        name = getattr(models, role)
        say(f"loading {role} model {name}")
        model, _ = load_model(name, models.dtype, models.device)
        info[role] = describe_model(name, model).to_dict()
        return model

    return load
