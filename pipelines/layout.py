"""Where everything of a run folder lives: `RunLayout` names every file and folder `paser run` writes and
`paser report`, `paser.load_run` and the analyses read, so that no other module spells a path of a run.

    run_dir/
        config.yaml  manifest.json  events.jsonl  results.json
        demo_corpus.jsonl                   corpus.path builtin:demo, written into the run
        report.md  report.html  report_files/           paser report
        pruned/                             the prune stage's checkpoint, with pruning.json
        shared/                             what every combination builds on (`SharedFolder`)
        combos/{combo}/select/              selection.jsonl, stats.json (`SelectFolder`)
        combos/{combo}/recover/             adapter/, merged/, recovery.json (`RecoverFolder`)
        combos/{combo}/eval/                metrics.json, items.npz, generations/ (`EvalFolder`)
        combos/{combo}@{variant}/recover/   with `recovery.variants`: each variant's training of the selection
        combos/{combo}@{variant}/eval/      in combos/{combo}/select/, and its evaluation
        baselines/{original,pruned}/eval/   the model pair evaluated as it is (`EvalFolder`)

`paser select`'s output folder is a `SelectFolder`: the run's `shared/` is one (it scores, embeds and caches
there) and so is each combination's `select/` (it selects there). The layout is the on-disk format of runs
already written: a name changed here no longer reads them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

# Between a combination's name and its recovery variant's (`recovery.variants`): "paser-b0.1-s0@kd". No strategy,
# budget or variant name holds it (the run config refuses one that does), so the name parses back.
RECOVERY_SEPARATOR = "@"


def split_recovery(name: str) -> tuple[str, str | None]:
    """(the selection's combination name, the recovery variant or None) of a combination name."""
    selection, separator, variant = name.rpartition(RECOVERY_SEPARATOR)
    return (selection, variant) if separator else (name, None)


@dataclasses.dataclass(frozen=True)
class SelectFolder:
    """What `paser select` writes into its output folder (and the stages of `paser run` into `shared/` and
    `combos/{combo}/select/`)."""

    root: Path

    @property
    def corpus(self) -> Path:
        """The validated corpus store (`paser.selection.store.CorpusStore`)."""
        return self.root / "corpus.parquet"

    @property
    def incoming_corpus(self) -> Path:
        """Where a corpus is read before it replaces `corpus` (so an unlike corpus cannot overwrite scores)."""
        return self.root / ".corpus-incoming.parquet"

    @property
    def scores(self) -> Path:
        return self.root / "scores.parquet"

    @property
    def clusters(self) -> Path:
        """`paser select`'s clustering table (the run keeps one per seed in `SharedFolder.cluster_table`)."""
        return self.root / "clusters.parquet"

    @property
    def selection(self) -> Path:
        return self.root / "selection.jsonl"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def dataset(self) -> Path:
        """The selection as a dataset folder with its card."""
        return self.root / "dataset"

    @property
    def score_shards(self) -> Path:
        return self.root / "score_shards"

    @property
    def topk_score_shards(self) -> Path:
        return self.root / "topk_score_shards"

    @property
    def topk_cache(self) -> Path:
        return self.root / "topk_cache"

    @property
    def token_cache(self) -> Path:
        return self.root / "token_cache"

    @property
    def embed_shards(self) -> Path:
        return self.root / "embed_shards"

    @property
    def response_embed_shards(self) -> Path:
        """The responses' embeddings, for a clustering that weighs them."""
        return self.root / "embed_shards_response"

    @property
    def concept_cache(self) -> Path:
        return self.root / "concept_cache"

    def score_folders(self) -> tuple[Path, ...]:
        """The folders of finished scoring shards (what a rerun resumes from)."""
        return (self.score_shards, self.topk_score_shards)


@dataclasses.dataclass(frozen=True)
class SharedFolder(SelectFolder):
    """A run's `shared/`: the scored corpus, the held-out rows and the clusterings of every seed."""

    @property
    def corpus_record(self) -> Path:
        """corpus.json: the corpus's source, its validation counts and the scored models."""
        return self.root / "corpus.json"

    @property
    def heldout_ids(self) -> Path:
        """heldout.json: the ids kept out of every selection and where they came from."""
        return self.root / "heldout.json"

    @property
    def heldout_rows(self) -> Path:
        """heldout.jsonl: the rows of the held-out split (or of the older `heldout_file`)."""
        return self.root / "heldout.jsonl"

    def heldout_set(self, name: str) -> Path:
        """The rows of the named held-out set `name` (a file or a built-in set)."""
        return self.root / "heldout" / f"{name}.jsonl"

    def cluster_table(self, seed: int) -> Path:
        return self.root / f"clusters-s{seed}.parquet"

    def cluster_record(self, seed: int) -> Path:
        return self.root / f"clustering-s{seed}.json"

    @property
    def calibration_rows(self) -> Path:
        """The corpus row positions the pruning calibrated on, left out of the pool."""
        return self.root / "calibration_rows.txt"

    @property
    def recipe_corpus(self) -> Path:
        """The corpus normalised by the config's data recipe."""
        return self.root / "recipe_corpus.jsonl"


@dataclasses.dataclass(frozen=True)
class RecoverFolder:
    """A combination's `recover/`, as `paser.recovery.train.recover` writes it."""

    root: Path

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def record(self) -> Path:
        """recovery.json: rows, tokens, compute and seconds of the training."""
        return self.root / "recovery.json"


@dataclasses.dataclass(frozen=True)
class EvalFolder:
    """An evaluation's folder, as `paser.recovery.evaluate.write_results` writes it."""

    root: Path

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def table(self) -> Path:
        """metrics.md: the paper-shaped table."""
        return self.root / "metrics.md"

    @property
    def items(self) -> Path:
        """items.npz: the per-item values (`paser.recovery.items`)."""
        return self.root / "items.npz"

    @property
    def generations(self) -> Path:
        """The generation tasks' cached answers."""
        return self.root / "generations"


@dataclasses.dataclass(frozen=True)
class ComboFolder:
    """`combos/{combo}/`: one (strategy, budget, seed) combination's select, recover and eval stages. A recovery
    variant's combination (`combos/{combo}@{variant}/`) trains and evaluates in its own folder and reads the
    selection of `combos/{combo}/` (`selection_root`), shared by every variant."""

    root: Path
    selection_root: Path

    @property
    def select(self) -> SelectFolder:
        return SelectFolder(self.selection_root / "select")

    @property
    def recover(self) -> RecoverFolder:
        return RecoverFolder(self.root / "recover")

    @property
    def eval(self) -> EvalFolder:
        return EvalFolder(self.root / "eval")


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Every path of the run folder at `root` (module docstring); building one touches no file."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        """config.yaml: the resolved run config."""
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        """manifest.json: per stage, the hash it last finished with (`paser.pipelines.stages.Manifest`)."""
        return self.root / "manifest.json"

    @property
    def events(self) -> Path:
        """events.jsonl: per invocation, which stages ran and which were cached."""
        return self.root / "events.jsonl"

    @property
    def results(self) -> Path:
        """results.json: every metric of the run, for `paser report` and `paser.load_run`."""
        return self.root / "results.json"

    @property
    def demo_corpus(self) -> Path:
        return self.root / "demo_corpus.jsonl"

    @property
    def report_markdown(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_files(self) -> Path:
        """The report's plots."""
        return self.root / "report_files"

    @property
    def pruned(self) -> Path:
        """The checkpoint the prune stage writes (when the config gives a pruning spec)."""
        return self.root / "pruned"

    @property
    def shared(self) -> SharedFolder:
        return SharedFolder(self.root / "shared")

    @property
    def combos(self) -> Path:
        return self.root / "combos"

    def combo(self, name: str) -> ComboFolder:
        """The folder of the combination named `name` (`paser.pipelines.analysis.reader.combo_name`); a recovery
        variant's (`{combo}@{variant}`) selects in its combination's folder."""
        return ComboFolder(self.combos / name, self.combos / split_recovery(name)[0])

    def baseline(self, name: str) -> EvalFolder:
        """The evaluation of the model pair's `name` ("original" or "pruned") as it is."""
        return EvalFolder(self.root / "baselines" / name / "eval")


def pruning_record(checkpoint: str | Path) -> Path:
    """A pruned checkpoint's pruning.json (`paser.recovery.prune`): the method, sparsity and calibration rows."""
    return Path(checkpoint) / "pruning.json"
