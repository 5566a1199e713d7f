"""PASER from Python: pick the post-training data that best repairs a pruned LLM, then repair it.

The public face of the `selection`, `recovery` and `pipelines` packages: one function per `paser` command,
each a thin wrapper over the library call the CLI makes, so a notebook and the command line run the same code.

    import paser

    output = paser.select("pipelines/configs/select.yaml", {"models.pruned": "pruned/wanda-50"})
    output.selection.head()

`import paser` is cheap: torch, transformers and the models load on the first call that needs them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paser.pipelines.analysis.reader import RunReader
    from paser.pipelines.config import SelectConfig
    from paser.pipelines.run import Run
    from paser.pipelines.select import SelectOutput
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import RecoveryResult
    from paser.selection.cluster import ClusterResult
    from paser.selection.config import ClusterConfig

__all__ = ["__version__", "cluster_texts", "evaluate", "load_run", "prune", "recover", "run", "select"]


def _version() -> str:
    """The installed distribution's version; from a source tree that was never installed, pyproject's."""
    from importlib import metadata

    try:
        return metadata.version("paser")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
        return found.group(1) if found else "unknown"


def __getattr__(name: str) -> Any:
    """`paser.__version__`, read on first use: importing importlib.metadata would add a tenth of a second to every
    `paser` command, `paser --help` included."""
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'paser' has no attribute {name!r}")


def select(
    config: str | os.PathLike[str] | SelectConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SelectOutput:
    """Run `paser select`: score the corpus with the model pair, cluster it, pick the budget; returns the
    `paser.pipelines.select.SelectOutput` (the selection, scores and clusters as DataFrames, stats.json's payload
    and the paths written under `out`).

    `config` is a YAML file (as `paser select --config`), a `SelectConfig`, or None for the defaults.
    `overrides` maps dotted keys to values, set verbatim after the file as the CLI flags are
    (`{"models.pruned": "pruned/wanda-50", "selection.budget": 0.05, "out": "runs/sel"}`): a value is not
    re-read as YAML, so pass numbers and lists as Python values. Refuses (`paser.pipelines.config.ConfigError`)
    a missing file and unknown keys, naming the known ones, and what `run_select` refuses.
    """
    from paser.pipelines.config import SelectConfig, build_config, config_to_dict, load_config, set_dotted
    from paser.pipelines.select import run_select

    if isinstance(config, SelectConfig):
        data = config_to_dict(config)
        for key, value in (overrides or {}).items():
            set_dotted(data, key, value)
        resolved = build_config(SelectConfig, data)
    else:
        resolved = load_config(SelectConfig, config, values=dict(overrides or {}))
    return run_select(resolved)


def prune(model: str, out: str | os.PathLike[str], method: str = "wanda", **spec: Any) -> dict[str, Any]:
    """Run `paser prune`: prune `model` (a path, hub id or alias) with `method` into the folder `out`;
    returns the pruning record (also written there).

    `spec` takes the other fields of `paser.recovery.config.PruneSpec`: `sparsity` (a fraction in (0, 1); 0.5 when
    no target is given), `pattern` ("2:4"), `drop` (layer_drop's fraction of blocks), `calibration`,
    `calibration_samples`, `seqlen`, `seed`, `device`. Refuses an unknown method or field and a malformed
    target.
    """
    from paser.recovery.config import PruneSpec

    return PruneSpec(method=method, **spec).apply(model, Path(out))


def recover(
    pruned: str,
    subset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    original: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> RecoveryResult:
    """Run `paser recover`: LoRA-tune the `pruned` model on `subset` (a `selection.jsonl`) into `out`
    (adapter, merged model, records); returns `paser.recovery.train.RecoveryResult`.

    The training settings are `config` or, without one, `TrainConfig.from_flat(settings)` (`objective`,
    `learning_rate`, `epochs`, `lora_r`, and the objective's own, e.g. `sft_weight` for distill); not both.
    `original` is the teacher for `objective="distill"` and only recorded otherwise. Refuses what
    `paser.recovery.train.recover` refuses.
    """
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import recover as recover_model

    if config is not None and settings:
        raise TypeError(f"pass the training settings either as config or as keywords, not both: {sorted(settings)}")
    config = config or TrainConfig.from_flat(settings)
    return recover_model(pruned, subset, out, config, original=original, data_dir=data_dir)


def evaluate(
    model: str,
    *,
    adapter: str | os.PathLike[str] | None = None,
    tasks: str | Iterable[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run `paser eval`: evaluate `model` (optionally with a peft `adapter` folder) on `tasks` (default:
    all of `paser.recovery.evaluate`'s tasks); returns the metrics record and, with `out`, writes `metrics.json`,
    `metrics.md` and `items.npz` there.

    `options` are `paser.recovery.evaluate.run_eval`'s other keywords: `limit`, `data_dir`, `source`, `dtype`,
    `device`, `batch_size`, `seqlen`, `seed`. Refuses what `run_eval` refuses.
    """
    from paser.recovery.evaluate import run_eval

    if tasks is not None:
        options["tasks"] = tasks
    return run_eval(model, adapter=adapter, out_dir=out, **options)


def run(config: str | os.PathLike[str] | None, out: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Run:
    """Run `paser run`: the whole experiment of the YAML `config` (None: the built-in demo) into the folder
    `out`, each stage cached across calls; returns the finished `paser.pipelines.run.Run` (read its results with
    `load_run(out)`). `overrides` are `key=value` strings with YAML values, as `paser run --set`.
    """
    from paser.pipelines.run import load_run_config
    from paser.pipelines.run import run as run_experiment

    return run_experiment(load_run_config(config, list(overrides)), out)


def load_run(run_dir: str | os.PathLike[str]) -> RunReader:
    """The reader of a `paser run` folder (`paser.pipelines.analysis.reader.RunReader`), which the analyses of
    `paser.pipelines.analysis` (`metrics`, `selections`, `accounting`) take; refuses
    (`paser.pipelines.analysis.reader.RunError`) a folder `paser run` did not finish writing."""
    from paser.pipelines.analysis.reader import load_run as read_run

    return read_run(run_dir)


def cluster_texts(
    texts: Sequence[str],
    config: ClusterConfig | None = None,
    responses: Sequence[str] | None = None,
    **options: Any,
) -> ClusterResult:
    """Embed and cluster `texts` (prompts; `responses`, one per text, optional) as `paser select` does,
    without a corpus store: `paser.selection.cluster.cluster_texts`, whose keywords (`embedder`, `batch_size`,
    `device`, `cache_dir`, `show_progress`) `options` takes. Returns the `ClusterResult` (labels per text)."""
    from paser.selection.cluster import cluster_texts as cluster

    return cluster(texts, config, responses, **options)
