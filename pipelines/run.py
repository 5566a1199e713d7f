"""`paser run`: one config from pruning to report, every (strategy, budget, seed) combination, cached by stage.

Stages and what each writes under the run directory (every path from `paser.pipelines.layout.RunLayout`):

    prune             pruned/                       (only when the config gives a pruning spec)
    score             shared/corpus.parquet, score_shards/, scores.parquet, corpus.json
    heldout           shared/heldout.jsonl          rows kept out of every selection, for the held-out NLL
    heldout/{name}    shared/heldout/{name}.jsonl   a named held-out set's rows (a file or a built-in set)
    embed             shared/embed_shards/          the selection pool's embeddings
    cluster/s{seed}   shared/clusters-s{seed}.parquet, clustering-s{seed}.json
    select/{combo}    combos/{combo}/select/        selection.jsonl, stats.json
    recover/{combo}   combos/{combo}/recover/       adapter/, merged/, recovery.json, ...
    eval/{combo}      combos/{combo}/eval/          metrics.json (tasks + held-out response NLL)
    recover/{combo}@{variant}, eval/{combo}@{variant}    with `recovery.variants`: the selection of
                      combos/{combo}/select/ trained and evaluated once per variant, in combos/{combo}@{variant}/
    eval/original, eval/pruned   baselines/{name}/eval/metrics.json

Every stage has a hash of what it declares it reads (`paser.pipelines.stages.stage_key`): its config sections
and fields, the identity of the files it reads (corpus content, checkpoint fingerprints) and the hashes of the
stages it builds on. `manifest.json` records, per
stage, the hash it last finished with; a stage whose hash is unchanged and whose artifacts exist is skipped
(and not even its inputs are loaded), so a second invocation recomputes nothing and a budget added to the
config runs only its own select, recover and eval stages. A stage that starts with a different hash than
its folder was last started with clears its artifacts first; one that was interrupted resumes (scores and
embeddings keep their finished shards). `events.jsonl` says, per invocation, which stages ran and which were
cached. `results.json` gathers every metric for `paser report`.

Each stage is an object (`paser.pipelines.stages.Stage`) built in `paser.pipelines.run_stages`; `Run` composes
them and its `Executor` (`paser.pipelines.stages`) runs or skips them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from paser.common.io import write_atomic, write_json
from paser.data.heldout import heldout_source
from paser.pipelines.analysis.accounting import combo_compute, shared_cost
from paser.pipelines.analysis.metrics import gap_recovered
from paser.pipelines.analysis.reader import LABEL_FIELDS, combo_name
from paser.pipelines.analysis.uncertainty import metric_summary, versus_random
from paser.pipelines.config import (
    ConfigError,
    CorpusSections,
    config_to_dict,
    load_config,
)
from paser.pipelines.heldout import (
    DEV,
    TEST,
    HeldoutSet,
    category_metric_names,
    heldout_metrics,
    parse_heldout,
    split_metric_names,
)
from paser.pipelines.layout import RECOVERY_SEPARATOR, RunLayout, pruning_record
from paser.pipelines.lock import output_folder
from paser.pipelines.run_stages import (
    RUN_TOKEN_JSD,
    EvalSections,
    ModelPair,
    SharedStages,
    eval_stage,
    reads_run_token_jsd,
    recover_stage,
    select_config,
    select_stage,
    shared_stages,
    write_builtin_demo,
    write_calibration_rows,
)
from paser.pipelines.select import check_before_scoring, holds_scores
from paser.pipelines.stages import Executor, InputValues, Manifest, Stage, log, model_identity
from paser.recovery.config import PruneSpec, TrainConfig, setting_owners, split_settings
from paser.recovery.models import check_checkpoint
from paser.recovery.objectives import objective_config_class
from paser.recovery.tracking import log_eval_metrics
from paser.selection.allocate import TokenBudget, is_one_row, parse_budget
from paser.selection.corpus import check_corpus
from paser.selection.strategies import get_strategy

BUILTIN_DEMO_CORPUS = "builtin:demo"
DEMO_CONFIG = Path(__file__).parent / "configs" / "run" / "demo.yaml"


# ------------------------------------------------------------------------------------------------ config


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
        metadata={"help": "Strategies to compare: registered names (`paser select --help` lists them) or variants."},
    )
    budgets: list[float | str] = dataclasses.field(
        default_factory=lambda: [0.1],
        metadata={
            "help": "Budgets: fractions in (0, 1] of the pool, row counts, or training tokens written <int>t "
            "(e.g. 200000t). Compare strategies in tokens: PASER prefers short rows, so at equal rows it trains on "
            "fewer tokens than the others (studies/smollm2-wanda50-alpaca/)."
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
        if sum(budget == 1 for budget in budgets) > sum(map(is_one_row, budgets)) > 0:
            # Two budgets, one number: the results and the report find a budget's combos by its value.
            raise ValueError("selection.budgets holds both 1 (one row) and 1.0 (every row); sweep one of them")
        for name, values in (("strategies", self.strategies), ("budgets", budgets), ("seeds", self.seeds)):
            if not values:
                raise ValueError(f"selection.{name} is empty")
            if len(set(values)) != len(values):
                raise ValueError(f"selection.{name} repeats a value: {values}")
        for name in self.strategies:
            if RECOVERY_SEPARATOR in name:
                raise ValueError(
                    f"selection.strategies: {name!r} holds {RECOVERY_SEPARATOR!r}, which names recovery variants"
                )
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


# What a recovery variant may be called: its name ends the combination's folder name and stage names.
VARIANT_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclasses.dataclass
class RunRecoveryConfig(TrainConfig):
    """A run's `recovery` section: how every combination is trained (`TrainConfig`, written flat), and named
    variants of it, each trained and evaluated on the same selections (`variants`).

    Token weighting (`token_weighting: jsd | top_fraction`, here or in a variant) reads the run's own per-token
    JSD where `token_jsd` is left out: it is then `RUN_TOKEN_JSD`, the score stage keeps the JSD and the recover
    stage points the training at `shared/score_shards/`."""

    variants: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=dict,
        metadata={
            "help": "Named variants of this section, compared in one sweep on the same selections (each "
            "(strategy, budget, seed) selected once, trained and evaluated once per variant): {sft: {}, kd: "
            "{objective: distill}, kd_t2: {objective: distill, temperature: 2.0}}; each is this section with its "
            "keys over it (a variant of another objective takes none of the section's objective settings its "
            "objective lacks). None: one training per combination, as before."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.variants:
            self.variant(name)

    @classmethod
    def nest_flat_settings(cls, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, type]]:
        """`TrainConfig.nest_flat_settings` of the section but its `variants` (with the run's `token_jsd`)."""
        settings = dict(settings)
        variants = settings.pop("variants", {})
        nested, types = TrainConfig.nest_flat_settings(with_run_token_jsd(settings))
        return {**nested, "variants": variants}, types

    def flat_settings(self) -> dict[str, Any]:
        """`TrainConfig.flat_settings`, then `variants` where there are any (what config.yaml holds)."""
        flat = TrainConfig.flat_settings(self)
        return {**flat, "variants": self.variants} if self.variants else flat

    def training(self, variant: str | None = None) -> TrainConfig:
        """How a combination trains: the section itself (`variant` None) or the variant named `variant`, as a
        `TrainConfig` (what the recover stage hashes)."""
        if variant is not None:
            return self.variant(variant)
        return TrainConfig.from_flat(TrainConfig.flat_settings(self))

    def variant(self, name: str) -> TrainConfig:
        """The variant `name`: the section's settings with the variant's over them, routed by
        `TrainConfig.from_flat`. Refuses (ValueError naming `recovery.variants.<name>.<key>`) a name that cannot
        end a folder name, a key no objective has, one of another objective and a value the config refuses."""
        where = f"recovery.variants.{name}"
        overrides = self.variants[name]
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
            raise ValueError(f"{where}: a variant's name is letters, digits and _ . + - only")
        if not isinstance(overrides, dict):
            raise ValueError(f"{where}: expected a mapping of recovery settings, got {overrides!r}")
        base = TrainConfig.flat_settings(self)
        if base.get("token_jsd") == RUN_TOKEN_JSD:
            del base["token_jsd"]
        objective = overrides.get("objective", self.objective)
        if objective != self.objective:
            # A variant of another objective takes the section's shared settings and those of the section's
            # objective that its own has too (sft_weight, token weighting), not one it lacks (sft's padding_free).
            try:
                own = {field.name for field in dataclasses.fields(objective_config_class(objective))}
            except ValueError as error:
                raise ValueError(f"{where}.objective: {error}") from None
            lacks = {field.name for field in dataclasses.fields(self.objective_config)} - own
            base = {key: value for key, value in base.items() if key not in lacks}
        merged = with_run_token_jsd({**base, **overrides})
        known = {field.name for field in dataclasses.fields(TrainConfig)} - {"objective_config"} | set(setting_owners())
        for key, value in merged.items():
            if key not in known:
                raise ValueError(f"{where}.{key}: unknown recovery setting; known: {', '.join(sorted(known))}")
            try:
                split_settings({"objective": merged.get("objective", TrainConfig.objective), key: value})
            except ValueError as error:
                raise ValueError(f"{where}.{key}: {error}") from None
        from paser.pipelines.config import build_config

        return build_config(TrainConfig, merged, where)


def with_run_token_jsd(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` (a flat recovery section) with `token_jsd: RUN_TOKEN_JSD` where it weights tokens and names no
    per-token JSD of its own (a file or shard folder scored elsewhere, read as given)."""
    if settings.get("token_weighting", "none") != "none" and settings.get("token_jsd") is None:
        return {**settings, "token_jsd": RUN_TOKEN_JSD}
    return settings


@dataclasses.dataclass
class EvaluationConfig:
    tasks: list[str] = dataclasses.field(
        default_factory=lambda: ["wikitext2"],
        metadata={
            "help": "wikitext2, ptb, boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa, and "
            "the generation tasks gen_labels, gen_longform (greedy answers to prompts outside the selection pool)."
        },
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
            "category for labelled rows): a row count split off the corpus (at most one; also reported as its "
            "dev and test halves, heldout_<name>_dev_nll / _test_nll), builtin:NAME[:LIMIT] (gsm8k, humaneval, "
            "t0, t0_labels, alpaca_longform) or a .jsonl/.jsonl.gz/.json/.json.gz file; instead of "
            "heldout_rows/_file."
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
            "help": "Raw-row field to show cluster purity against (a confusion heat map, NMI, ARI), any categorical "
            f"field, e.g. dataset; None: the first of {', '.join(LABEL_FIELDS)} whose values in the corpus rows are "
            "categories (at least two, at least two rows each on average), else no purity section."
        },
    )


@dataclasses.dataclass(kw_only=True)
class RunConfig(CorpusSections):
    """Everything `paser run` needs: the sections it shares with `paser select` (`CorpusSections`) plus the
    models and pruning, the sweep, recovery, evaluation and what the report shows."""

    models: RunModelsConfig
    selection: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    recovery: RunRecoveryConfig = dataclasses.field(default_factory=RunRecoveryConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    recipe: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Normalise corpus.path with this data/ recipe first (alpaca, dolly, lamini, sharegpt; stage "
            "`recipe`), e.g. a Dolly or ShareGPT file or hub id."
        },
    )
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.recipe is not None:
            from paser.data.recipes import get_recipe

            get_recipe(self.recipe)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config (YAML) with dotted `overrides`; no path: the built-in demo config."""
    return load_config(RunConfig, path if path is not None else DEMO_CONFIG, overrides)


@dataclasses.dataclass(frozen=True)
class Combo:
    """One (strategy, budget, seed) of the sweep, and the recovery variant it trains with (None: the section)."""

    strategy: str
    budget: float | str
    seed: int
    recovery: str | None = None

    @property
    def name(self) -> str:
        return combo_name(self.strategy, self.budget, self.seed, self.recovery)

    @property
    def selection(self) -> Combo:
        """The combination whose selection this one trains on: itself without the recovery variant."""
        return dataclasses.replace(self, recovery=None)


def combos(config: RunConfig) -> list[Combo]:
    """Every (strategy, budget, seed) of the sweep, seeds innermost, then each recovery variant of it."""
    sweep = config.selection
    recoveries = list(config.recovery.variants) or [None]
    return [
        Combo(s, sweep_budget(b), int(seed), recovery)
        for s in sweep.strategies
        for b in sweep.budgets
        for seed in sweep.seeds
        for recovery in recoveries
    ]


def sweep_budget(value: float | str, key: str = "selection.budgets") -> float | str:
    """A budget of the sweep as combos, stage hashes and results.json hold it: a row budget as a float (as before
    token budgets existed, so cached runs keep their names and hashes) but the int 1, one row, which as a float
    would be every row (`is_one_row`); a token budget as its text, e.g. "200000t". Refuses (ValueError naming
    `key`) what `paser.selection.allocate.parse_budget` refuses."""
    budget = parse_budget(value, key)
    if isinstance(budget, TokenBudget):
        return str(budget)
    return budget if is_one_row(budget) else float(budget)


# ------------------------------------------------------------------------------------------------ the run


class Run:
    """One invocation of `paser run` over a run directory: composes the stages (`paser.pipelines.run_stages`) and has
    its executor (`paser.pipelines.stages.Executor`: manifest, cache decision, events) run or skip each one."""

    def __init__(self, config: RunConfig, run_dir: str | Path) -> None:
        self.config = config
        self.dir = Path(run_dir)
        self.layout = RunLayout(self.dir)
        self.executor = Executor(self.dir)

    @property
    def manifest(self) -> Manifest:
        return self.executor.manifest

    @property
    def ran(self) -> list[str]:
        """The stages that ran in this invocation, in order."""
        return self.executor.ran

    @property
    def cached(self) -> list[str]:
        """The stages this invocation found done with the same hash, in order."""
        return self.executor.cached

    # -- paths and configs

    @property
    def corpus_path(self) -> str:
        path = self.config.corpus.path
        if path == BUILTIN_DEMO_CORPUS:
            return str(self.layout.demo_corpus)
        if self.config.recipe is not None:
            return str(self.layout.shared.recipe_corpus)
        return path

    @property
    def pruned_path(self) -> str:
        return str(self.layout.pruned) if self.config.models.prune is not None else str(self.config.models.pruned)

    # -- the model pair

    @functools.cached_property
    def prune_stage(self) -> Stage | None:
        """Stage `prune` (`pruned/`) when the config gives a pruning spec instead of a pruned checkpoint."""
        spec = self.config.models.prune
        if spec is None:
            return None

        def compute(values: InputValues) -> None:
            spec.apply(self.config.models.original, Path(self.pruned_path))

        sources = {"original": lambda: self.original_identity}
        return Stage("prune", compute, [pruning_record(self.pruned_path)], settings={"spec": spec}, sources=sources)

    def prune(self) -> str:
        """Run the prune stage where there is one; returns the pruned model's identity (`pruned_identity`)."""
        if self.prune_stage is not None:
            self.executor.ensure(self.prune_stage)
        return self.pruned_identity

    @functools.cached_property
    def original_identity(self) -> str:
        return model_identity(self.config.models.original)

    @functools.cached_property
    def pruned_identity(self) -> str:
        """The pruned model's identity for later hashes: the prune stage's hash, or the checkpoint fingerprint."""
        return model_identity(self.pruned_path) if self.prune_stage is None else self.prune_stage.digest

    @functools.cached_property
    def pair(self) -> ModelPair:
        """The model pair as the stages that load it declare it (identities read on first hashing)."""
        original, pruned = (lambda: self.original_identity), (lambda: self.pruned_identity)
        return ModelPair(self.config.models.original, self.pruned_path, original, pruned, self.prune_stage)

    # -- the whole run

    @functools.cached_property
    def stages(self) -> SharedStages:
        """The stages every combination builds on (building them reads nothing)."""
        return shared_stages(self)

    @functools.cached_property
    def eval_sections(self) -> EvalSections:
        """What every evaluation stage reads: the evaluation, recovery and models sections, the shared folder."""
        config = self.config
        return EvalSections(config.evaluation, config.recovery, config.models, self.layout.shared)

    def baseline_stage(self, name: str) -> Stage:
        """Stage `eval/original` or `eval/pruned`: a model of the pair evaluated as it is."""
        out, pair = self.layout.baseline(name), self.pair
        if name == "original":
            sources = {"model": pair.original_identity}
            return eval_stage(self.eval_sections, self.stages, name, pair.original, out, {}, sources)
        return eval_stage(self.eval_sections, self.stages, name, pair.pruned, out, *pair.pruned_model("model"))

    def combo_stage(self, combo: Combo) -> Stage:
        """Stage `eval/{combo}`, after the combination's select and recover stages, each given its sections."""
        folder, config = self.layout.combo(combo.name), self.config
        select = select_stage(
            select_config(self, combo, folder.select.root), self.layout.shared, self.stages, folder.select, combo
        )
        training = config.recovery.training(combo.recovery)
        token_jsd = (self.stages.score, self.layout.shared.score_shards)
        recover = recover_stage(training, config.evaluation.data_dir, self.pair, folder, select, combo, token_jsd)
        merged, model = str(folder.recover.merged), {"model": recover}
        # A variant's evaluation tokenises the held-out rows as its training did.
        sections = self.eval_sections
        if combo.recovery is not None:
            sections = dataclasses.replace(sections, recovery=training)
        return eval_stage(sections, self.stages, combo.name, merged, folder.eval, model, {})

    def execute(self) -> dict[str, Any]:
        """Run (or skip) every stage of every combination, then write `results.json`; returns its content."""
        check_run(self)
        write_atomic(
            self.layout.config,
            lambda path: path.write_text(yaml.safe_dump(config_to_dict(self.config), sort_keys=False)),
        )
        started = time.perf_counter()
        write_builtin_demo(self)  # the score stage hashes what these two write
        write_calibration_rows(self)
        self.executor.ensure(self.baseline_stage("original"))
        self.executor.ensure(self.baseline_stage("pruned"))
        all_combos = combos(self.config)
        for index, combo in enumerate(all_combos, 1):
            log(f"combination {index}/{len(all_combos)}: {combo.name}")
            self.executor.ensure(self.combo_stage(combo))
            folder = self.layout.combo(combo.name)
            metrics = _read_metrics(folder.eval.metrics)
            log_eval_metrics(self.config.recovery.report_to, folder.recover.root, combo.name, metrics)
        results = collect_results(self.dir, self.config)
        results.update(statistics_blocks(results, self.dir))
        write_json(self.layout.results, results)
        log(
            f"{len(self.ran)} stage(s) ran, {len(self.cached)} cached, "
            f"{time.perf_counter() - started:.1f} s (invocation {self.manifest.invocation})"
        )
        return results


def check_run(run: Run) -> None:
    """Refuse, before anything loads, unknown strategies/tasks, malformed budgets and missing files."""
    from paser.recovery.evaluate import parse_tasks, required_files

    for combo in combos(run.config):
        config = select_config(run, combo)
        get_strategy(config.selection.strategy, **config.selection.options)
        check_before_scoring(config)
    if reads_run_token_jsd(run.config.recovery):
        check_keeps_token_jsd(run.config)
    evaluation = run.config.evaluation
    required_files(parse_tasks(evaluation.tasks), evaluation.data_dir, evaluation.source)
    if evaluation.heldout_file is not None and not Path(evaluation.heldout_file).is_file():
        raise FileNotFoundError(f"evaluation.heldout_file {evaluation.heldout_file} does not exist")
    for spec in evaluation.heldout_sets():
        if spec.builtin is not None:
            heldout_source(spec.builtin, evaluation.data_dir)


# ------------------------------------------------------------------------------------------------ results


def flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    """An evaluation record as flat metric columns: `{task}_ppl`, `{task}_acc`, `avg_acc`, `{task}_{metric}` of
    the generation tasks, `heldout_nll/ppl` and every held-out set's (`heldout_<name>_...`, its halves included)."""
    from paser.recovery.evaluate import PPL_TASKS
    from paser.recovery.generation import GENERATION_TASKS, flat_generation_metrics

    metrics: dict[str, float] = {}
    accuracies = []
    for task, result in record["tasks"].items():
        if task in PPL_TASKS:
            metrics[f"{task}_ppl"] = float(result["metrics"]["ppl"])
        elif task in GENERATION_TASKS:
            metrics.update(flat_generation_metrics(task, result))
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
    """The `results.json` payload: baselines and every combination's metrics (None where missing). With
    `recovery.variants`, each combination names its variant (`recovery`) and `recoveries` lists them."""
    layout = RunLayout(run_dir)
    baselines = {name: _read_metrics(layout.baseline(name).metrics) for name in ("original", "pruned")}
    rows = []
    for combo in combos(config):
        folder = layout.combo(combo.name)
        stats_path = folder.select.stats
        recovery_path = folder.recover.record
        stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else {}
        recovery = json.loads(recovery_path.read_text(encoding="utf-8")) if recovery_path.exists() else {}
        row = {
            "combo": combo.name,
            "strategy": combo.strategy,
            "budget": combo.budget,
            "budget_rows": stats.get("totals", {}).get("budget"),
            "seed": combo.seed,
            "metrics": _read_metrics(folder.eval.metrics),
            "train_seconds": recovery.get("seconds", {}).get("train"),
            "train_tokens": recovery.get("tokens_per_epoch", {}).get("total"),
        }
        rows.append(row if combo.recovery is None else {**row, "recovery": combo.recovery})
    names: list[str] = []
    for metrics in [*baselines.values(), *(row["metrics"] for row in rows)]:
        for name in metrics or {}:
            if name not in names:
                names.append(name)
    from paser.recovery.generation import higher_is_better

    sets = config.evaluation.heldout_sets()
    named_sets = [spec.name for spec in sets if spec.name is not None]
    variants = {"recoveries": list(config.recovery.variants)} if config.recovery.variants else {}
    return {
        "metrics": names,
        "category_metrics": category_metric_names(names, named_sets),
        # What a choice may read (paser.pipelines.choose), and the in-distribution half it must never read.
        "dev_metrics": [name for name in split_metric_names(sets, DEV) if name in names],
        "test_metrics": [name for name in split_metric_names(sets, TEST) if name in names],
        "lower_is_better": {name: not (name.endswith("_acc") or higher_is_better(name)) for name in names},
        "baselines": baselines,
        "combos": rows,
        "seeds": list(config.selection.seeds),
        "strategies": list(config.selection.strategies),
        "budgets": [sweep_budget(budget) for budget in config.selection.budgets],
        **variants,
    }


def statistics_blocks(results: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The blocks of `results.json` computed from a `collect_results` payload and the run folder: `summary` (mean,
    sd and t-interval over seeds) and `versus_random` (paired differences with bootstrap intervals) from
    `paser.pipelines.analysis.uncertainty`; `compute` (per combination) and `shared_cost` from
    `paser.pipelines.analysis.accounting`."""
    manifest_path = RunLayout(run_dir).manifest
    stages = json.loads(manifest_path.read_text(encoding="utf-8"))["stages"] if manifest_path.exists() else {}
    return {
        "summary": metric_summary(results),
        "versus_random": versus_random(results, run_dir),
        "compute": combo_compute(results, stages, run_dir),
        "shared_cost": shared_cost(stages, run_dir),
    }


def check_keeps_token_jsd(config: RunConfig) -> None:
    """Refuse (ValueError, one line) a recovery that weights tokens where the scoring cannot keep the per-token
    JSD (`paser.selection.degradation.refuse_token_jsd`): the ray engine and top-k scoring do not."""
    if config.engine == "ray":
        path = "the ray engine (engine: ray)"
    elif config.topk.k is not None:
        path = "top-k scoring (topk.k)"
    else:
        return
    raise ValueError(
        f"recovery.token_weighting needs the per-token JSD, which {path} does not keep: score exactly on the local "
        "engine, or train without token weighting"
    )


def check_inputs(config: RunConfig) -> None:
    """Refuse, before the run folder is made, inputs the run cannot read: a corpus source that does not exist or
    has an unsupported format (`paser.selection.corpus.check_corpus`) and a checkpoint of the model pair that
    cannot be read (`paser.recovery.models.check_checkpoint`, naming the file)."""
    if config.corpus.path != BUILTIN_DEMO_CORPUS:
        check_corpus(config.corpus)
    check_checkpoint(config.models.original)
    if config.models.prune is None:
        check_checkpoint(str(config.models.pruned))


def run(config: RunConfig, run_dir: str | Path) -> Run:
    """Execute `config` into `run_dir` (stages cached across invocations); returns the finished `Run`.

    The settings (`Run.check`) and the inputs (`check_inputs`) are checked before `run_dir` is made, and a
    run refused before it finished a stage leaves `run_dir` as it was found (`paser.pipelines.lock.output_folder`).
    """
    runner = Run(config, run_dir)
    check_run(runner)
    check_inputs(config)
    with output_folder(runner.dir, "run", keeps_work=holds_finished_work):
        runner.layout.shared.root.mkdir(exist_ok=True)
        runner.execute()
    return runner


def holds_finished_work(run_dir: Path) -> bool:
    """Whether a run folder holds work a rerun resumes: a stage done in its manifest, or scores in `shared/`
    (`paser.pipelines.select.holds_scores`). A manifest that cannot be read counts as work, to be safe."""
    layout = RunLayout(run_dir)
    if holds_scores(layout.shared.root):
        return True
    manifest = layout.manifest
    if not manifest.is_file():
        return False
    try:
        stages = json.loads(manifest.read_text(encoding="utf-8"))["stages"]
        return any(entry["status"] == "done" for entry in stages.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return True


__all__ = [
    "Combo",
    "ConfigError",
    "EvaluationConfig",
    "Manifest",
    "PruneSpec",
    "Run",
    "RunConfig",
    "RunModelsConfig",
    "RunRecoveryConfig",
    "SweepConfig",
    "collect_results",
    "combos",
    "gap_recovered",
    "load_run_config",
    "run",
    "statistics_blocks",
]
