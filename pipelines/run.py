"""`paser run`: one config from pruning to report, every (strategy, budget, seed) combination, cached by stage.

Stages and what each writes under the run directory (layout in the README, "Run directory"):

    prune             pruned/                       (only when the config gives a pruning spec)
    score             shared/corpus.parquet, score_shards/, scores.parquet, corpus.json
    heldout           shared/heldout.jsonl          rows kept out of every selection, for the held-out NLL
    heldout/{name}    shared/heldout/{name}.jsonl   a named held-out set's rows (a file or a built-in set)
    embed             shared/embed_shards/          the selection pool's embeddings
    cluster/s{seed}   shared/clusters-s{seed}.parquet, clustering-s{seed}.json
    select/{combo}    combos/{combo}/select/        selection.jsonl, stats.json
    recover/{combo}   combos/{combo}/recover/       adapter/, merged/, recovery.json, ...
    eval/{combo}      combos/{combo}/eval/          metrics.json (tasks + held-out response NLL)
    eval/original, eval/pruned   baselines/{name}/eval/metrics.json

Every stage has a hash of its inputs: its own config section, the identity of the files it reads (corpus
content, checkpoint fingerprints) and the hashes of the stages it builds on. `manifest.json` records, per
stage, the hash it last finished with; a stage whose hash is unchanged and whose artifacts exist is skipped
(and not even its inputs are loaded), so a second invocation recomputes nothing and a budget added to the
config runs only its own select, recover and eval stages. A stage that starts with a different hash than
its folder was last started with clears its artifacts first; one that was interrupted resumes (scores and
embeddings keep their finished shards). `events.jsonl` says, per invocation, which stages ran and which were
cached. `results.json` gathers every metric for `paser report`.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from data.heldout import get_heldout_builder, heldout_source, write_heldout
from pipelines.accounting import combo_compute, shared_cost
from pipelines.config import (
    ENGINES,
    PLUGINS_HELP,
    ConfigError,
    EmbeddingConfig,
    FormattingConfig,
    ModelPairConfig,
    SelectConfig,
    SelectionConfig,
    TopkConfig,
    config_to_dict,
    load_config,
)
from pipelines.heldout import (
    HeldoutSet,
    category_metric_names,
    copy_rows,
    heldout_metrics,
    heldout_nll,
    parse_heldout,
)
from pipelines.lock import folder_lock
from pipelines.ray_engine import RayConfig
from pipelines.results import combo_name, gap_recovered
from pipelines.select import (
    RESPONSE_SHARDS,
    ScoredCorpus,
    check_before_scoring,
    cluster_table,
    clustering_features,
    effective_config,
    embed_rows,
    response_embeddings,
    score_stage,
    select_from,
    write_json,
    write_jsonl,
    write_parquet,
)
from pipelines.uncertainty import metric_summary, versus_random
from recovery.tracking import log_eval_metrics
from selection.allocate import TokenBudget, parse_budget
from selection.atomic import file_sha256, write_atomic
from selection.cluster import ClusterConfig, ClusterResult, cluster_embeddings
from selection.corpus import Corpus, CorpusConfig, CorpusStats
from selection.degradation import DegradationConfig
from selection.embed import read_embedding_summary
from selection.store import CorpusStore, StoredSamples
from selection.strategies import get_strategy, strategy_class

MANIFEST_VERSION = 1
BUILTIN_DEMO_CORPUS = "builtin:demo"
DEMO_CONFIG = Path(__file__).parent / "configs" / "run" / "demo.yaml"


# ------------------------------------------------------------------------------------------------ config


@dataclasses.dataclass
class PruneSpec:
    """Prune the original inside the run (stage `prune`) instead of naming a pruned checkpoint."""

    method: str = dataclasses.field(default="wanda", metadata={"help": "magnitude, wanda, sparsegpt or layer_drop."})
    sparsity: float | None = dataclasses.field(default=None, metadata={"help": "Unstructured fraction in (0, 1)."})
    pattern: str | None = dataclasses.field(default=None, metadata={"help": "N:M pattern, e.g. 2:4."})
    drop: float | None = dataclasses.field(default=None, metadata={"help": "layer_drop: fraction of blocks."})
    calibration: str | None = dataclasses.field(
        default=None, metadata={"help": "Calibration text: a corpus file, a .txt file, demo, wikitext2 or c4."}
    )
    calibration_samples: int = dataclasses.field(default=128, metadata={"help": "Calibration windows."})
    seqlen: int | None = dataclasses.field(default=None, metadata={"help": "Tokens per calibration window."})
    seed: int = dataclasses.field(default=0, metadata={"help": "Seed of the calibration draw."})
    device: str | None = dataclasses.field(default=None, metadata={"help": "Device to prune on (default cpu)."})

    def target(self) -> Any:
        from recovery.prune import PruneTarget

        sparsity = self.sparsity
        if sparsity is None and self.pattern is None and self.drop is None and self.method != "layer_drop":
            sparsity = 0.5
        return PruneTarget.from_args(sparsity=sparsity, pattern=self.pattern, drop=self.drop)

    def apply(self, model: str, out: Path) -> dict[str, Any]:
        """Prune `model` as this spec says into `out` (`recovery.prune.prune_checkpoint`); returns its record."""
        from recovery.prune import prune_checkpoint

        return prune_checkpoint(
            model,
            self.method,
            self.target(),
            Path(out),
            device=self.device,
            calibration_source=self.calibration,
            calibration_samples=self.calibration_samples,
            calibration_seqlen=self.seqlen,
            seed=self.seed,
        )


@dataclasses.dataclass
class RunModelsConfig:
    original: str = dataclasses.field(
        default="smollm2", metadata={"help": "Original model: local path, hub id, or the offline alias `smollm2`."}
    )
    pruned: str | None = dataclasses.field(
        default=None, metadata={"help": "A pruned checkpoint (path or hub id); or give `prune` instead."}
    )
    prune: PruneSpec | None = dataclasses.field(
        default=None, metadata={"help": "Pruning spec: prune the original in the run (stage `prune`)."}
    )
    dtype: str = dataclasses.field(default="auto", metadata={"help": "auto, bf16, fp16 or fp32 (scoring, eval)."})
    device: str | None = dataclasses.field(default=None, metadata={"help": "cuda or cpu; default cuda if present."})
    exclude_calibration_rows: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "When prune.calibration is the corpus file itself, leave the rows the calibration windows came "
            "from out of the pool (counted as `excluded`), so no row the pruning saw is selected or held out."
        },
    )

    def __post_init__(self) -> None:
        if (self.pruned is None) == (self.prune is None):
            raise ValueError("give exactly one of models.pruned (a checkpoint) or models.prune (a pruning spec)")


@dataclasses.dataclass
class SweepConfig:
    strategies: list[str] = dataclasses.field(
        default_factory=lambda: ["paser", "random"],
        metadata={"help": "Strategies to compare: paser, random, full, cds_topk, loss, ifd, kmeans_diverse."},
    )
    budgets: list[float | str] = dataclasses.field(
        default_factory=lambda: [0.1],
        metadata={
            "help": "Budgets: fractions in (0, 1] of the pool, row counts, or training tokens written <int>t "
            "(e.g. 200000t), to compare strategies at equal compute."
        },
    )
    seeds: list[int] = dataclasses.field(
        default_factory=lambda: [0], metadata={"help": "Seeds: each one reclusters, reselects and retrains."}
    )
    options: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=dict, metadata={"help": "Options per strategy, e.g. {paser: {ccg: false}}."}
    )
    variants: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=dict,
        metadata={
            "help": "Named variants of a registered strategy, compared in one sweep like strategies (list them in "
            "strategies; one left out is not run): {paser_no_ccg: {strategy: paser, ccg: false}}; the other keys "
            "are its options."
        },
    )

    def __post_init__(self) -> None:
        budgets = [sweep_budget(budget, f"selection.budgets[{index}]") for index, budget in enumerate(self.budgets)]
        for name, values in (("strategies", self.strategies), ("budgets", budgets), ("seeds", self.seeds)):
            if not values:
                raise ValueError(f"selection.{name} is empty")
            if len(set(values)) != len(values):
                raise ValueError(f"selection.{name} repeats a value: {values}")
        unknown = sorted(set(self.options) - set(self.strategies))
        if unknown:
            raise ValueError(f"selection.options names strategies not in selection.strategies: {unknown}")
        for name, variant in self.variants.items():
            if not isinstance(variant, dict) or not isinstance(variant.get("strategy"), str):
                raise ValueError(f"selection.variants.{name} needs `strategy: <a registered strategy>`")
            if variant["strategy"] in self.variants:
                raise ValueError(f"selection.variants.{name}: a variant's strategy must be a registered strategy")

    def base_strategy(self, name: str) -> str:
        """The registered strategy behind `name`: a variant's `strategy`, else `name` itself."""
        return self.variants[name]["strategy"] if name in self.variants else name

    def strategy_options(self, name: str) -> dict[str, Any]:
        """The options `name` selects with: a variant's own, then `options[name]` over them."""
        variant = {key: value for key, value in self.variants.get(name, {}).items() if key != "strategy"}
        return {**variant, **self.options.get(name, {})}


@dataclasses.dataclass
class EvaluationConfig:
    tasks: list[str] = dataclasses.field(
        default_factory=lambda: ["wikitext2"],
        metadata={"help": "wikitext2, ptb, boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa."},
    )
    limit: int | None = dataclasses.field(default=None, metadata={"help": "Items per task (windows for ppl)."})
    seqlen: int | None = dataclasses.field(default=None, metadata={"help": "Perplexity window (default model max)."})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "Windows / requests per batch."})
    source: str = dataclasses.field(default="local", metadata={"help": "Zero-shot data: local files or hub."})
    data_dir: str | None = dataclasses.field(default=None, metadata={"help": "Offline data folder."})
    heldout_rows: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Corpus rows kept out of every selection to measure the held-out response NLL (0: none; "
            "default 200, or 0 with heldout_file). Reported as heldout_nll / heldout_ppl."
        },
    )
    heldout_file: str | None = dataclasses.field(
        default=None, metadata={"help": "A separate held-out corpus file instead of rows split off the corpus."}
    )
    heldout: dict[str, int | str] | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Held-out sets by name, each reported on its own (heldout_<name>_nll / _ppl, and per "
            "category for labelled rows): a row count split off the corpus (at most one), builtin:NAME[:LIMIT] "
            "(gsm8k, humaneval, t0) or a .jsonl/.jsonl.gz/.json/.json.gz file; instead of heldout_rows/_file."
        },
    )

    def __post_init__(self) -> None:
        if self.heldout is not None:
            if self.heldout_rows is not None or self.heldout_file is not None:
                raise ValueError(
                    "give evaluation.heldout (named sets) or the older evaluation.heldout_rows / heldout_file, not both"
                )
            parse_heldout(self.heldout)
            return
        if self.heldout_rows is None:
            self.heldout_rows = 0 if self.heldout_file is not None else 200
        if self.heldout_rows < 0:
            raise ValueError(f"evaluation.heldout_rows must be >= 0, got {self.heldout_rows}")
        if self.heldout_file is not None and self.heldout_rows:
            raise ValueError("give evaluation.heldout_file or evaluation.heldout_rows, not both (set heldout_rows: 0)")

    def heldout_sets(self) -> list[HeldoutSet]:
        """The held-out sets: those of `heldout`, or the older keys' one unnamed set (none when it is empty)."""
        if self.heldout is not None:
            return parse_heldout(self.heldout)
        if self.heldout_file is None and not self.heldout_rows:
            return []
        return [HeldoutSet(None, rows=self.heldout_rows or None, file=self.heldout_file)]

    def split_rows(self) -> int:
        """How many corpus rows the held-out split keeps out of every selection."""
        return sum(spec.rows for spec in self.heldout_sets() if spec.rows is not None)


@dataclasses.dataclass
class ReportConfig:
    label_field: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Raw-row field to show cluster purity against (a confusion heat map, NMI, ARI), e.g. dataset; "
            "None: `category` or `label` where the corpus rows have one, else no purity section."
        },
    )


def _train_config_type() -> type:
    from recovery.train import TrainConfig

    return TrainConfig


@dataclasses.dataclass
class RunConfig:
    """Everything `paser run` needs: the select config's sections plus the sweep, pruning, recovery, eval and
    what the report shows."""

    corpus: CorpusConfig
    models: RunModelsConfig
    formatting: FormattingConfig = dataclasses.field(default_factory=FormattingConfig)
    scoring: DegradationConfig = dataclasses.field(default_factory=DegradationConfig)
    topk: TopkConfig = dataclasses.field(default_factory=TopkConfig)
    embedding: EmbeddingConfig = dataclasses.field(default_factory=EmbeddingConfig)
    clustering: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)
    selection: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    recovery: Any = dataclasses.field(default_factory=lambda: _train_config_type()())
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    recipe: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Normalise corpus.path with this data/ recipe first (alpaca, dolly, lamini, sharegpt; stage "
            "`recipe`), e.g. a Dolly or ShareGPT file or hub id."
        },
    )
    engine: str = dataclasses.field(default="local", metadata={"help": "Scoring and embedding: local or ray."})
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    plugins: list[str] = dataclasses.field(default_factory=list, metadata={"help": PLUGINS_HELP})

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        if self.recipe is not None:
            from data.recipes import get_recipe

            get_recipe(self.recipe)
        if isinstance(self.recovery, dict):
            from pipelines.config import build_config

            self.recovery = build_config(_train_config_type(), self.recovery, "recovery")


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config (YAML) with dotted `overrides`; no path: the built-in demo config."""
    return load_config(RunConfig, path if path is not None else DEMO_CONFIG, overrides)


@dataclasses.dataclass(frozen=True)
class Combo:
    strategy: str
    budget: float | str
    seed: int

    @property
    def name(self) -> str:
        return combo_name(self.strategy, self.budget, self.seed)


def combos(config: RunConfig) -> list[Combo]:
    """Every (strategy, budget, seed) of the sweep, seeds innermost."""
    sweep = config.selection
    return [
        Combo(s, sweep_budget(b), int(seed)) for s in sweep.strategies for b in sweep.budgets for seed in sweep.seeds
    ]


def sweep_budget(value: float | str, key: str = "selection.budgets") -> float | str:
    """A budget of the sweep as combos, stage hashes and results.json hold it: a row budget as a float (as before
    token budgets existed, so cached runs keep their names and hashes), a token budget as its text, e.g.
    "200000t". Refuses (ValueError naming `key`) what `selection.allocate.parse_budget` refuses."""
    budget = parse_budget(value, key)
    return str(budget) if isinstance(budget, TokenBudget) else float(budget)


# ------------------------------------------------------------------------------------------------ hashing


def stable_hash(payload: Any) -> str:
    """sha256 of the canonical JSON of `payload` (sorted keys; tuples as lists)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def source_identity(source: str) -> str:
    """What a corpus source is, for a hash: a file's content digest, a folder's file names/sizes/times, or the
    hub id itself (a hub dataset is identified by its name; pin a revision by saving it locally)."""
    path = Path(source).expanduser()
    if path.is_file():
        return "file:" + file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(item for item in path.rglob("*") if item.is_file()):
            status = file.stat()
            digest.update(f"{file.relative_to(path)}:{status.st_size}:{status.st_mtime_ns}".encode())
        return "dir:" + digest.hexdigest()
    return "hub:" + source


def model_identity(name: str) -> str:
    """A checkpoint's fingerprint (config, pruning record, weight files) for a local folder or alias; the hub id
    otherwise."""
    from recovery.identity import checkpoint_identity
    from recovery.models import resolve_model

    resolved = resolve_model(name)
    return checkpoint_identity(resolved) or f"hub:{resolved}"


# ------------------------------------------------------------------------------------------------ manifest


class Manifest:
    """`manifest.json` (stage -> hash, status, artifacts, seconds) and `events.jsonl` of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "manifest.json"
        self.events_path = run_dir / "events.jsonl"
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != MANIFEST_VERSION:
                raise ValueError(f"{self.path}: manifest version {data.get('version')}, expected {MANIFEST_VERSION}")
            self.stages = data["stages"]
        self.invocation = 1 + max((event["invocation"] for event in self.events()), default=0)

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text(encoding="utf-8").splitlines() if line]

    def fresh(self, stage: str, digest: str, artifacts: list[Path]) -> bool:
        entry = self.stages.get(stage)
        return (
            entry is not None
            and entry["hash"] == digest
            and entry["status"] == "done"
            and all(path.exists() for path in artifacts)
        )

    def start(self, stage: str, digest: str, artifacts: list[Path]) -> None:
        """Mark `stage` started with `digest`; artifacts left by a run with another hash are removed first."""
        entry = self.stages.get(stage)
        if entry is not None and entry["hash"] != digest:
            for path in artifacts:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.stages[stage] = {"hash": digest, "status": "started", "artifacts": self._relative(artifacts)}
        self._save()

    def finish(self, stage: str, digest: str, artifacts: list[Path], seconds: float) -> None:
        self.stages[stage] = {
            "hash": digest,
            "status": "done",
            "artifacts": self._relative(artifacts),
            "seconds": round(seconds, 3),
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        self._save()

    def event(self, stage: str, action: str, seconds: float) -> None:
        line = {"invocation": self.invocation, "stage": stage, "action": action, "seconds": round(seconds, 3)}
        with self.events_path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(line) + "\n")

    def _relative(self, paths: list[Path]) -> list[str]:
        return [str(path.relative_to(self.run_dir)) for path in paths]

    def _save(self) -> None:
        payload = {"version": MANIFEST_VERSION, "stages": self.stages}
        write_json(self.path, payload)


def _log(message: str) -> None:
    print(f"[paser run] {message}", flush=True)


# ------------------------------------------------------------------------------------------------ the run


class Run:
    """One invocation of `paser run` over a run directory: stage hashes, lazily loaded inputs, the stages."""

    def __init__(self, config: RunConfig, run_dir: str | Path) -> None:
        self.config = config
        self.dir = Path(run_dir)
        self.shared = self.dir / "shared"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shared.mkdir(exist_ok=True)
        self.manifest = Manifest(self.dir)
        self._memo: dict[str, Any] = {}
        self.ran: list[str] = []
        self.cached: list[str] = []

    # -- stage machinery

    def stage(self, name: str, inputs: dict[str, Any], artifacts: list[Path], compute: Callable[[], Any]) -> str:
        """Run `compute` unless `name` finished before with the same input hash and its artifacts exist."""
        digest = stable_hash(inputs)
        if self.manifest.fresh(name, digest, artifacts):
            self.manifest.event(name, "cached", 0.0)
            self.cached.append(name)
            _log(f"{name}: cached")
            return digest
        _log(f"{name}: running")
        self.manifest.start(name, digest, artifacts)
        started = time.perf_counter()
        compute()
        seconds = time.perf_counter() - started
        missing = [str(path) for path in artifacts if not path.exists()]
        if missing:
            raise RuntimeError(f"stage {name} finished without writing {', '.join(missing)}")
        self.manifest.finish(name, digest, artifacts, seconds)
        self.manifest.event(name, "ran", seconds)
        self.ran.append(name)
        _log(f"{name}: done in {seconds:.1f} s")
        return digest

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # -- paths

    def combo_dir(self, combo: Combo) -> Path:
        return self.dir / "combos" / combo.name

    @property
    def corpus_path(self) -> str:
        path = self.config.corpus.path
        if path == BUILTIN_DEMO_CORPUS:
            return str(self.dir / "demo_corpus.jsonl")
        if self.config.recipe is not None:
            return str(self.shared / "recipe_corpus.jsonl")
        return path

    def corpus_identity(self) -> str:
        """What the scored corpus is: the demo corpus's digest, the recipe stage's hash, or the source's."""

        def make() -> str:
            if self.config.corpus.path == BUILTIN_DEMO_CORPUS:
                self._demo_corpus()
            if self.config.recipe is None:
                return source_identity(self.corpus_path)
            corpus = self.config.corpus
            inputs = {
                "source": source_identity(corpus.path),
                "recipe": self.config.recipe,
                "split": corpus.split,
                "limit": corpus.limit,
            }

            def compute() -> None:
                from data.recipes import prepare_corpus

                stats = prepare_corpus(
                    self.config.recipe, corpus.path, Path(self.corpus_path), split=corpus.split, limit=corpus.limit
                )
                _log(stats.summary())

            return "recipe:" + self.stage("recipe", inputs, [Path(self.corpus_path)], compute)

        return self.memo("corpus_identity", make)

    @property
    def pruned_path(self) -> str:
        return str(self.dir / "pruned") if self.config.models.prune is not None else str(self.config.models.pruned)

    def select_config(self, combo: Combo | None = None, out: Path | None = None) -> SelectConfig:
        """The `paser select` config of one combination (or, without one, of the shared scoring)."""
        config = self.config
        sweep = config.selection
        options = {} if combo is None else sweep.strategy_options(combo.strategy)
        strategies = [sweep.base_strategy(name) for name in sweep.strategies]
        # Every combination scores once, so one strategy that needs the unconditioned NLL makes all score it.
        needs_unconditioned = any(strategy_class(name).needs_unconditioned_nll for name in strategies)
        scoring = dataclasses.replace(
            config.scoring, unconditioned_nll=config.scoring.unconditioned_nll or needs_unconditioned
        )
        select = SelectConfig(
            corpus=dataclasses.replace(
                config.corpus,
                path=self.corpus_path,
                exclude_rows=self.calibration_rows_path() or config.corpus.exclude_rows,
            ),
            models=ModelPairConfig(
                original=config.models.original,
                pruned=self.pruned_path,
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
            out=str(out or self.shared),
        )
        return effective_config(select)

    # -- checks

    def check(self) -> None:
        """Refuse, before anything loads, unknown strategies/tasks, malformed budgets and missing files."""
        from recovery.evaluate import parse_tasks, required_files

        for combo in combos(self.config):
            config = self.select_config(combo)
            get_strategy(config.selection.strategy, **config.selection.options)
            check_before_scoring(config)
        evaluation = self.config.evaluation
        required_files(parse_tasks(evaluation.tasks), evaluation.data_dir, evaluation.source)
        if evaluation.heldout_file is not None and not Path(evaluation.heldout_file).is_file():
            raise FileNotFoundError(f"evaluation.heldout_file {evaluation.heldout_file} does not exist")
        for spec in evaluation.heldout_sets():
            if spec.builtin is not None:
                heldout_source(spec.builtin, evaluation.data_dir)

    # -- stages

    def prune(self) -> str:
        """The pruned model's identity for later hashes: the prune stage's hash, or the checkpoint fingerprint."""
        spec = self.config.models.prune
        if spec is None:
            return self.memo("pruned_identity", lambda: model_identity(self.pruned_path))
        inputs = {"original": model_identity(self.config.models.original), "spec": config_to_dict(spec)}

        def compute() -> None:
            spec.apply(self.config.models.original, Path(self.pruned_path))

        return self.memo(
            "prune", lambda: self.stage("prune", inputs, [Path(self.pruned_path) / "pruning.json"], compute)
        )

    def _demo_corpus(self) -> str:
        from data.demo import write_demo_corpus

        path = Path(self.corpus_path)
        if not path.exists():
            write_demo_corpus(path)
        return str(path)

    def calibration_rows_path(self) -> str | None:
        """`shared/calibration_rows.txt` (written by `write_calibration_rows`) when the pruning calibrates on the
        corpus file itself and `models.exclude_calibration_rows` holds; else None."""
        models, corpus = self.config.models, self.config.corpus
        spec = models.prune
        if spec is None or spec.calibration is None or not models.exclude_calibration_rows or self.config.recipe:
            return None
        calibration, source = Path(spec.calibration).expanduser(), Path(corpus.path).expanduser()
        if not (calibration.is_file() and source.is_file() and calibration.resolve() == source.resolve()):
            return None
        if corpus.exclude_rows is not None:
            raise ValueError(
                "corpus.exclude_rows is set and the calibration rows of the corpus file are excluded too: give one "
                "(set models.exclude_calibration_rows: false to use corpus.exclude_rows alone)"
            )
        return str(self.shared / "calibration_rows.txt")

    def write_calibration_rows(self) -> None:
        """Write the row positions the pruning's calibration used (from its pruning.json) to
        `calibration_rows_path()`, after the prune stage; refuses a pruning.json without them."""
        path = self.calibration_rows_path()
        if path is None:
            return
        self.prune()
        record_path = Path(self.pruned_path) / "pruning.json"
        calibration = json.loads(record_path.read_text(encoding="utf-8")).get("calibration") or {}
        positions = calibration.get("rows_used_positions")
        if positions is None:
            raise RuntimeError(
                f"{record_path} does not list the calibration rows (rows_used_positions): delete "
                f"{self.pruned_path} to prune again, or set models.exclude_calibration_rows: false"
            )
        text = "".join(f"{position}\n" for position in positions)
        write_atomic(Path(path), lambda staging: staging.write_text(text, encoding="utf-8"))

    def score_hash(self) -> str:
        def make() -> str:
            config = self.select_config()
            self.write_calibration_rows()
            corpus_config = {**config_to_dict(config.corpus), "path": None}
            # Keys added after runs were cached are hashed only when set, so older runs keep their hashes.
            for key in ("exclude_rows", "sample"):
                if corpus_config[key] is None:
                    del corpus_config[key]
            if "sample" not in corpus_config:
                del corpus_config["sample_seed"]
            if "exclude_rows" in corpus_config:
                corpus_config["exclude_rows"] = file_sha256(Path(config.corpus.exclude_rows))
            inputs = {
                "corpus": self.corpus_identity(),
                "corpus_config": corpus_config,
                "original": model_identity(config.models.original),
                "pruned": self.prune(),
                "models": {"dtype": config.models.dtype, "device": config.models.device},
                "formatting": config_to_dict(config.formatting),
                "scoring": {**config_to_dict(config.scoring), "show_progress": None},
                "topk": config_to_dict(config.topk),
            }
            return self.stage("score", inputs, self._score_artifacts(), lambda: self._compute_scores(config))

        return self.memo("score_hash", make)

    def _score_artifacts(self) -> list[Path]:
        names = ("corpus.parquet", "scores.parquet", "corpus.json")
        return [self.shared / name for name in names] + [self.shared / "score_shards"]

    def _compute_scores(self, config: SelectConfig) -> None:
        (self.shared / "score_shards").mkdir(exist_ok=True)
        scored = score_stage(config, self.shared)
        write_parquet(self.shared / "scores.parquet", scored.scores)
        write_json(
            self.shared / "corpus.json",
            {"source": scored.corpus.source, "stats": scored.corpus.stats.to_dict(), "models": scored.model_info},
        )
        self._memo["scored"] = scored

    def scored(self) -> ScoredCorpus:
        """The scored corpus: from this invocation's score stage, or read back from `shared/`."""
        self.score_hash()

        def load() -> ScoredCorpus:
            record = json.loads((self.shared / "corpus.json").read_text(encoding="utf-8"))
            stats = record["stats"]
            corpus_stats = CorpusStats(
                rows_read=stats["rows_read"],
                skipped=dict(stats["skipped"]),
                flagged=dict(stats["flagged"]),
                examples={reason: list(places) for reason, places in stats["examples"].items()},
            )
            store = CorpusStore(self.shared / "corpus.parquet")
            scores = pd.read_parquet(self.shared / "scores.parquet")
            corpus = Corpus(StoredSamples(store), corpus_stats, record["source"])
            return ScoredCorpus(corpus, store, scores, record["models"])

        return self.memo("scored", load)

    def heldout_hash(self) -> str:
        def make() -> str:
            evaluation = self.config.evaluation
            inputs = {
                "score": self.score_hash(),
                "rows": evaluation.split_rows(),
                "file": None if evaluation.heldout_file is None else source_identity(evaluation.heldout_file),
            }
            return self.stage("heldout", inputs, [self.shared / "heldout.json"], self._compute_heldout)

        return self.memo("heldout_hash", make)

    def _compute_heldout(self) -> None:
        """Choose the held-out rows (seeded, spread over the corpus) and write them; an empty split is allowed."""
        evaluation = self.config.evaluation
        scored = self.scored()
        ids: list[str] = []
        if evaluation.heldout_file is not None:
            copy_rows(evaluation.heldout_file, self.shared / "heldout.jsonl")
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
                write_jsonl(self.shared / "heldout.jsonl", rows)
            source = "corpus"
        write_json(self.shared / "heldout.json", {"ids": ids, "source": source})

    def heldout_ids(self) -> set[str]:
        self.heldout_hash()
        return set(json.loads((self.shared / "heldout.json").read_text(encoding="utf-8"))["ids"])

    def heldout_file(self) -> Path | None:
        self.heldout_hash()
        path = self.shared / "heldout.jsonl"
        return path if path.exists() else None

    def heldout_set_hash(self, spec: HeldoutSet) -> str:
        """Stage `heldout/{name}`: a named file or built-in set's rows as `shared/heldout/{name}.jsonl`, keyed by
        the file's content, or by the built-in set's name, row limit and data file's content."""

        def make() -> str:
            path = self.heldout_set_path(spec)
            data_dir = self.config.evaluation.data_dir
            if spec.file is not None:
                inputs = {"file": source_identity(spec.file)}
                return self.stage(f"heldout/{spec.name}", inputs, [path], lambda: copy_rows(spec.file, path))
            limit = spec.limit or get_heldout_builder(spec.builtin).default_limit
            source = heldout_source(spec.builtin, data_dir)
            inputs = {"builtin": spec.builtin, "limit": limit, "data": source_identity(str(source))}

            def compute() -> None:
                _log(f"held-out set {spec.name}: {write_heldout(spec.builtin, path, limit, data_dir)} rows")

            return self.stage(f"heldout/{spec.name}", inputs, [path], compute)

        return self.memo(f"heldout_hash/{spec.name}", make)

    def heldout_set_path(self, spec: HeldoutSet) -> Path:
        return self.shared / "heldout" / f"{spec.name}.jsonl"

    def heldout_files(self) -> list[tuple[HeldoutSet, Path]]:
        """Every held-out set with the file of its rows: `shared/heldout.jsonl` for the split off the corpus
        (and the older keys' set), `shared/heldout/{name}.jsonl` for a named file or built-in set."""
        files = []
        for spec in self.config.evaluation.heldout_sets():
            if spec.name is not None and spec.rows is None:
                self.heldout_set_hash(spec)
                files.append((spec, self.heldout_set_path(spec)))
            elif self.heldout_file() is not None:
                files.append((spec, self.heldout_file()))
        return files

    def pool(self) -> ScoredCorpus:
        """The scored corpus minus the held-out rows: what every strategy selects from."""

        def make() -> ScoredCorpus:
            scored = self.scored()
            held = self.heldout_ids()
            scores = scored.scores[~scored.scores["id"].astype(str).isin(held)].reset_index(drop=True)
            return dataclasses.replace(scored, scores=scores)

        return self.memo("pool", make)

    def embed_hash(self) -> str:
        def make() -> str:
            embedding = {**config_to_dict(self.config.embedding), "batch_size": None}
            if embedding["long_text"] == "truncate":
                # What runs embedded before the option existed did: their embed stage stays cached.
                del embedding["long_text"]
            inputs = {
                "heldout": self.heldout_hash(),
                "embedding": embedding,
                "embed_fields": list(self.config.corpus.embed_fields),
            }
            return self.stage("embed", inputs, [self.shared / "embed_shards"], lambda: self.embeddings())

        return self.memo("embed_hash", make)

    def embeddings(self) -> np.ndarray:
        def make() -> np.ndarray:
            pool = self.pool()
            return embed_rows(
                self.config, pool.store, pool.scores["id"].astype(str).tolist(), self.shared / "embed_shards"
            )

        return self.memo("embeddings", make)

    def embed_response_hash(self) -> str | None:
        """The responses' embedding stage, when the clustering weighs them (else None: no such stage)."""
        if self.config.clustering.response_weight <= 0:
            return None

        def make() -> str:
            embedding = {**config_to_dict(self.config.embedding), "batch_size": None}
            inputs = {"heldout": self.heldout_hash(), "embedding": embedding}
            artifacts = [self.shared / RESPONSE_SHARDS]
            return self.stage("embed_response", inputs, artifacts, lambda: self.response_embeddings())

        return self.memo("embed_response_hash", make)

    def response_embeddings(self) -> np.ndarray | None:
        def make() -> np.ndarray | None:
            pool = self.pool()
            return response_embeddings(self.config, pool.store, pool.scores["id"].astype(str).tolist(), self.shared)

        return self.memo("response_embeddings", make)

    def cluster_seed(self, seed: int) -> int:
        """The clustering's seed for run seed `seed`: `clustering.seed` where one is set, else `seed`."""
        return seed if self.config.clustering.seed is None else self.config.clustering.seed

    def cluster_hash(self, seed: int) -> str:
        def make() -> str:
            inputs = {
                "embed": self.embed_hash(),
                "clustering": config_to_dict(self.config.clustering),
                "seed": self.cluster_seed(seed),
            }
            response_hash = self.embed_response_hash()
            if response_hash is not None:
                inputs["embed_response"] = response_hash
            artifacts = self._cluster_artifacts(seed)
            return self.stage(f"cluster/s{seed}", inputs, artifacts, lambda: self._compute_clusters(seed))

        return self.memo(f"cluster_hash/{seed}", make)

    def _cluster_artifacts(self, seed: int) -> list[Path]:
        return [self.shared / f"clusters-s{seed}.parquet", self.shared / f"clustering-s{seed}.json"]

    def _compute_clusters(self, seed: int) -> None:
        """Cluster the pool's embeddings under `seed` and write the clusters and the 2-D map (stage compute)."""
        config = dataclasses.replace(self.config.clustering, seed=self.cluster_seed(seed))
        pool = self.pool()
        ids = pool.scores["id"].astype(str).tolist()
        features = clustering_features(
            self.config, pool.store, ids, self.embeddings(), self.response_embeddings(), config
        )
        result = cluster_embeddings(features, config)
        table = cluster_table(ids, result, self.embeddings(), seed)
        table_path, record_path = self._cluster_artifacts(seed)
        write_parquet(table_path, table)
        eigenvalues = None if result.eigenvalues is None else [float(v) for v in result.eigenvalues]
        write_json(
            record_path,
            {
                "n_clusters": result.n_clusters,
                "eigenvalues": eigenvalues,
                "n_landmarks": result.n_landmarks,
                "seconds": result.seconds,
                "details": result.details,
            },
        )
        self._memo[f"clusters/{seed}"] = result

    def clusters(self, seed: int) -> ClusterResult:
        """The clustering of `seed`: from this invocation's cluster stage, or read back from `shared/`."""
        self.cluster_hash(seed)

        def load() -> ClusterResult:
            table_path, record_path = self._cluster_artifacts(seed)
            table = pd.read_parquet(table_path)
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if table["id"].astype(str).tolist() != self.pool().scores["id"].astype(str).tolist():
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

        return self.memo(f"clusters/{seed}", load)

    def select(self, combo: Combo) -> str:
        out = self.combo_dir(combo) / "select"
        config = self.select_config(combo, out)
        inputs = {
            "cluster": self.cluster_hash(combo.seed),
            "strategy": combo.strategy,
            "budget": combo.budget,
            "options": config.selection.options,
        }

        def compute() -> None:
            pool = self.pool()
            embeddings = self.embeddings()  # first: embedding (re)writes the summary read below
            select_from(
                config,
                pool,
                embeddings,
                self.clusters(combo.seed),
                out,
                concept_cache_dir=self.shared / "concept_cache",
                embedding_summary=read_embedding_summary(self.shared / "embed_shards"),
                write_tables=False,
            )

        return self.stage(f"select/{combo.name}", inputs, [out / "selection.jsonl", out / "stats.json"], compute)

    def recovery_config(self, combo: Combo) -> Any:
        return dataclasses.replace(self.config.recovery, seed=combo.seed)

    def recover(self, combo: Combo) -> str:
        out = self.combo_dir(combo) / "recover"
        training = self.recovery_config(combo)
        settings = {**config_to_dict(training), "show_progress": None}
        settings.pop("report_to")  # trackers only watch: a run keeps its hashes whatever it reports to
        if not settings["padding_free"]:
            del settings["padding_free"]  # added after runs were cached: hashed only when set
        inputs = {"select": self.select(combo), "pruned": self.prune(), "recovery": settings}

        def compute() -> None:
            from recovery.train import recover

            recover(
                self.pruned_path,
                self.combo_dir(combo) / "select" / "selection.jsonl",
                out,
                training,
                original=self.config.models.original,
                data_dir=self.config.evaluation.data_dir,
                run_name=combo.name,
            )
            gc.collect()

        return self.stage(f"recover/{combo.name}", inputs, [out / "recovery.json", out / "merged"], compute)

    def eval_inputs(self) -> dict[str, Any]:
        evaluation = config_to_dict(self.config.evaluation)
        for key in ("heldout_rows", "heldout_file", "heldout"):
            evaluation.pop(key)
        inputs = {
            "evaluation": evaluation,
            "heldout": self.heldout_hash(),
            "heldout_tokens": {
                "max_length": self.config.recovery.max_length,
                "template": self.config.recovery.template,
                "overflow": self.config.recovery.overflow,
            },
            "dtype": self.config.models.dtype,
            "device": self.config.models.device,
        }
        if self.config.evaluation.heldout is not None:
            # Only named sets add this key: runs with the older keys keep their eval hashes.
            inputs["heldout_sets"] = {
                spec.name: "split" if spec.rows else self.heldout_set_hash(spec)
                for spec in self.config.evaluation.heldout_sets()
            }
        return inputs

    def evaluate(self, name: str, model: str, model_hash: str, out: Path) -> str:
        inputs = {"model": model_hash, **self.eval_inputs()}
        return self.stage(f"eval/{name}", inputs, [out / "metrics.json"], lambda: self._compute_eval(model, out))

    def _compute_eval(self, model_name: str, out: Path) -> None:
        from recovery.evaluate import evaluate_model, response_nll, write_results
        from recovery.models import load_model
        from recovery.train import load_training_rows

        evaluation = self.config.evaluation
        model, tokenizer = load_model(model_name, dtype=self.config.models.dtype, device=self.config.models.device)
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
            ),
        }
        for spec, heldout in self.heldout_files():
            if spec.name is None:
                rows = load_training_rows(heldout, tokenizer, self.config.recovery)
                record["heldout"] = {
                    **response_nll(model, rows.encoded, batch_size=evaluation.batch_size),
                    "skipped": rows.skipped,
                }
            else:
                record[spec.metric_prefix] = heldout_nll(
                    model, tokenizer, heldout, self.config.recovery, batch_size=evaluation.batch_size
                )
            result = record[spec.metric_prefix]
            _log(f"{spec.metric_prefix}: response NLL {result['nll']:.4f} on {result['rows']} rows")
        write_results(record, out)
        del model
        gc.collect()

    # -- the whole run

    def execute(self) -> dict[str, Any]:
        """Run (or skip) every stage of every combination, then write `results.json`; returns its content."""
        self.check()
        write_atomic(
            self.dir / "config.yaml",
            lambda path: path.write_text(yaml.safe_dump(config_to_dict(self.config), sort_keys=False)),
        )
        started = time.perf_counter()
        original_hash = self.memo("original_identity", lambda: model_identity(self.config.models.original))
        self.evaluate("original", self.config.models.original, original_hash, self.dir / "baselines/original/eval")
        self.evaluate("pruned", self.pruned_path, self.prune(), self.dir / "baselines/pruned/eval")
        all_combos = combos(self.config)
        for index, combo in enumerate(all_combos, 1):
            _log(f"combination {index}/{len(all_combos)}: {combo.name}")
            merged = str(self.combo_dir(combo) / "recover" / "merged")
            self.evaluate(combo.name, merged, self.recover(combo), self.combo_dir(combo) / "eval")
            metrics = _read_metrics(self.combo_dir(combo) / "eval" / "metrics.json")
            log_eval_metrics(self.config.recovery.report_to, self.combo_dir(combo) / "recover", combo.name, metrics)
        results = collect_results(self.dir, self.config)
        results.update(statistics_blocks(results, self.dir))
        write_json(self.dir / "results.json", results)
        _log(
            f"{len(self.ran)} stage(s) ran, {len(self.cached)} cached, "
            f"{time.perf_counter() - started:.1f} s (invocation {self.manifest.invocation})"
        )
        return results


# ------------------------------------------------------------------------------------------------ results


def flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    """An evaluation record as flat metric columns: `{task}_ppl`, `{task}_acc`, `avg_acc`, `heldout_nll/ppl`."""
    from recovery.evaluate import PPL_TASKS

    metrics: dict[str, float] = {}
    accuracies = []
    for task, result in record["tasks"].items():
        if task in PPL_TASKS:
            metrics[f"{task}_ppl"] = float(result["metrics"]["ppl"])
        else:
            metrics[f"{task}_acc"] = float(result["metrics"]["acc"])
            accuracies.append(metrics[f"{task}_acc"])
    if accuracies:
        metrics["avg_acc"] = float(np.mean(accuracies))
    if "heldout" in record:
        metrics["heldout_nll"] = float(record["heldout"]["nll"])
        metrics["heldout_ppl"] = float(record["heldout"]["ppl"])
    for key, result in record.items():
        if key.startswith("heldout_") and isinstance(result, dict):
            metrics.update(heldout_metrics(key.removeprefix("heldout_"), result))
    return metrics


def _read_metrics(path: Path) -> dict[str, float] | None:
    return flat_metrics(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None


def collect_results(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """The `results.json` payload: baselines and every combination's metrics (None where missing)."""
    baselines = {
        name: _read_metrics(run_dir / "baselines" / name / "eval" / "metrics.json") for name in ("original", "pruned")
    }
    rows = []
    for combo in combos(config):
        folder = run_dir / "combos" / combo.name
        stats_path = folder / "select" / "stats.json"
        recovery_path = folder / "recover" / "recovery.json"
        stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else {}
        recovery = json.loads(recovery_path.read_text(encoding="utf-8")) if recovery_path.exists() else {}
        rows.append(
            {
                "combo": combo.name,
                "strategy": combo.strategy,
                "budget": combo.budget,
                "budget_rows": stats.get("totals", {}).get("budget"),
                "seed": combo.seed,
                "metrics": _read_metrics(folder / "eval" / "metrics.json"),
                "train_seconds": recovery.get("seconds", {}).get("train"),
                "train_tokens": recovery.get("tokens_per_epoch", {}).get("total"),
            }
        )
    names: list[str] = []
    for metrics in [*baselines.values(), *(row["metrics"] for row in rows)]:
        for name in metrics or {}:
            if name not in names:
                names.append(name)
    named_sets = [spec.name for spec in config.evaluation.heldout_sets() if spec.name is not None]
    return {
        "metrics": names,
        "category_metrics": category_metric_names(names, named_sets),
        "lower_is_better": {name: not name.endswith("_acc") for name in names},
        "baselines": baselines,
        "combos": rows,
        "seeds": list(config.selection.seeds),
        "strategies": list(config.selection.strategies),
        "budgets": [sweep_budget(budget) for budget in config.selection.budgets],
    }


def statistics_blocks(results: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The blocks of `results.json` computed from a `collect_results` payload and the run folder: `summary` (mean,
    sd and t-interval over seeds) and `versus_random` (paired differences with bootstrap intervals) from
    `pipelines.uncertainty`; `compute` (per combination) and `shared_cost` from `pipelines.accounting`."""
    manifest_path = run_dir / "manifest.json"
    stages = json.loads(manifest_path.read_text(encoding="utf-8"))["stages"] if manifest_path.exists() else {}
    return {
        "summary": metric_summary(results),
        "versus_random": versus_random(results, run_dir),
        "compute": combo_compute(results, stages, run_dir),
        "shared_cost": shared_cost(stages),
    }


def run(config: RunConfig, run_dir: str | Path) -> Run:
    """Execute `config` into `run_dir` (stages cached across invocations); returns the finished `Run`."""
    runner = Run(config, run_dir)
    with folder_lock(runner.dir, "run"):
        runner.execute()
    return runner


__all__ = [
    "Combo",
    "ConfigError",
    "EvaluationConfig",
    "Manifest",
    "PruneSpec",
    "Run",
    "RunConfig",
    "RunModelsConfig",
    "SweepConfig",
    "collect_results",
    "combos",
    "gap_recovered",
    "load_run_config",
    "run",
    "statistics_blocks",
]
