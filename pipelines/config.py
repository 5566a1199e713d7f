"""Typed run configs: dataclasses loaded from YAML and overridden from the CLI with dotted keys.

`load_config(SelectConfig, "run.yaml", ["selection.budget=0.05"])` reads the file, applies the overrides
(`section.field=value`, the value parsed as YAML so `0.05`, `true`, `[a, b]` keep their types) and builds
the nested dataclasses, refusing unknown keys with the list of known ones.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from paser.common.registry import Registry
from paser.selection.config import ClusterConfig, DegradationConfig
from paser.selection.corpus import CorpusConfig
from paser.selection.embed import DEFAULT_LONG_TEXT, check_long_text

ConfigT = TypeVar("ConfigT")


@dataclasses.dataclass
class RayConfig:
    """Where Ray runs and how many actors each stage gets."""

    address: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Ray cluster to join ('auto', 'ray://host:10001'); default: the RAY_ADDRESS cluster if set, "
            "else a local one started for this run."
        },
    )
    actors: int = dataclasses.field(
        default=1, metadata={"help": "Actors per stage; each loads the models (or the embedder) once."}
    )
    gpus_per_actor: float | None = dataclasses.field(
        default=None,
        metadata={"help": "GPUs per actor; default 1 when the cluster has GPUs, else 0 (CPU actors)."},
    )
    cpus_per_actor: float = dataclasses.field(
        default=1.0, metadata={"help": "CPUs per actor; CPU actors run that many torch threads."}
    )
    num_cpus: int | None = dataclasses.field(
        default=None, metadata={"help": "CPUs of a local cluster started here; default: all of this machine."}
    )

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"ray.actors must be >= 1, got {self.actors}")
        if self.cpus_per_actor <= 0:
            raise ValueError(f"ray.cpus_per_actor must be > 0, got {self.cpus_per_actor}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ValueError(f"ray.gpus_per_actor must be >= 0, got {self.gpus_per_actor}")


# Where scoring and embedding run (`paser.pipelines.engines`): classes built with the `ray` settings. Declared here
# by where they live, so a config is checked without importing the engines (and the models they load).
ENGINES: Registry[Callable[[RayConfig], Any]] = Registry(
    "engine",
    builtins={"local": "paser.pipelines.engines:LocalEngine", "ray": "paser.pipelines.engines:RayEngine"},
)


PLUGINS_HELP = (
    "Python files or modules imported before the config is built, so the strategies, pruners and objectives "
    "they register are known by name (pipelines.plugins; see examples/extending/)."
)


class ConfigError(ValueError):
    """A config file or override that does not fit the config's schema."""


@dataclasses.dataclass
class ModelPairConfig:
    original: str = dataclasses.field(
        default="smollm2",
        metadata={"help": "Original (unpruned) model: local path, HF hub id, or the offline alias `smollm2`."},
    )
    pruned: str | None = dataclasses.field(
        default=None, metadata={"help": "Pruned model: local path or HF hub id. Must share the tokenizer."}
    )
    dtype: str = dataclasses.field(
        default="auto", metadata={"help": "auto (bf16 where native, else fp32), bf16, fp16 or fp32."}
    )
    device: str | None = dataclasses.field(default=None, metadata={"help": "cuda or cpu; default: cuda if present."})


@dataclasses.dataclass
class FormattingConfig:
    template: str = dataclasses.field(
        default="auto",
        metadata={"help": "auto (the model's chat template where it has one, else Alpaca), chat or alpaca."},
    )
    max_length: int | None = dataclasses.field(
        default=None, metadata={"help": "Token limit per row; default min(2048, the model's context length)."}
    )
    overflow: str = dataclasses.field(
        default="truncate",
        metadata={"help": "Rows over max_length: truncate the response tail, or skip them."},
    )


@dataclasses.dataclass
class EmbeddingConfig:
    model: str | None = dataclasses.field(
        default=None, metadata={"help": "sentence-transformers model; default all-MiniLM-L6-v2 (offline)."}
    )
    batch_size: int = dataclasses.field(default=64, metadata={"help": "Texts per embedding batch."})
    shard_size: int = dataclasses.field(
        default=4096, metadata={"help": "Rows per embedding shard; finished shards are skipped on a rerun."}
    )
    long_text: str = dataclasses.field(
        default=DEFAULT_LONG_TEXT,
        metadata={
            "help": "A text longer than the embedder reads (its max_seq_length: 256 tokens for all-MiniLM-L6-v2): "
            "truncate (embed its first tokens, what the model does) or chunks (embed consecutive windows that fit "
            "the model and take their token-weighted mean, re-normalised). stats.json counts such rows."
        },
    )

    def __post_init__(self) -> None:
        check_long_text(self.long_text, "embedding.long_text")


@dataclasses.dataclass
class TopkConfig:
    k: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Score through the original's top-k log-probs, one model in memory at a time (for a pair "
            "that does not fit one device); None: exact JSD with both models side by side. See selection/topk.py."
        },
    )
    tail_samples: int = dataclasses.field(
        default=16, metadata={"help": "Tokens sampled per position from the original's tail (sampled_tail)."}
    )
    estimator: str = dataclasses.field(
        default="sampled_tail",
        metadata={"help": "sampled_tail (closer to exact) or bucket (a lower bound of the exact JSD)."},
    )

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError(f"topk.k must be >= 1 or null, got {self.k}")


@dataclasses.dataclass
class SelectionConfig:
    strategy: str = dataclasses.field(
        default="paser",
        metadata={"help": "A registered selection strategy (`paser select --help` lists them)."},
    )
    budget: float | str = dataclasses.field(
        default=0.1,
        metadata={
            "help": "What to select: a fraction in (0, 1] of the valid rows, a row count >= 1, or training tokens "
            "written <int>t, e.g. 200000t (prompt + response tokens as scored; rows are whole, so at most that)."
        },
    )
    seed: int = dataclasses.field(default=0, metadata={"help": "Seed for every random choice (selection, clustering)."})
    options: dict[str, Any] = dataclasses.field(
        default_factory=dict,
        metadata={"help": "Strategy options, e.g. {ccg: false} or {ranking: cds} for the paper's ablations."},
    )


@dataclasses.dataclass(kw_only=True)
class CorpusSections:
    """The sections `paser select` and `paser run` share: the corpus and how it is formatted, scored, embedded and
    clustered, where scoring and embedding run, and the plug-ins to import. Each command adds its own `models`
    and `selection`."""

    corpus: CorpusConfig
    formatting: FormattingConfig = dataclasses.field(default_factory=FormattingConfig)
    scoring: DegradationConfig = dataclasses.field(default_factory=DegradationConfig)
    topk: TopkConfig = dataclasses.field(default_factory=TopkConfig)
    embedding: EmbeddingConfig = dataclasses.field(default_factory=EmbeddingConfig)
    clustering: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)
    engine: str = dataclasses.field(
        default="local",
        metadata={"help": "Where scoring and embedding run: 'local' (this process) or 'ray' (Ray Data actors)."},
    )
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    plugins: list[str] = dataclasses.field(default_factory=list, metadata={"help": PLUGINS_HELP})

    def __post_init__(self) -> None:
        ENGINES.check(self.engine)


@dataclasses.dataclass(kw_only=True)
class SelectConfig(CorpusSections):
    """Everything `paser select` needs: the shared sections, the model pair, one strategy and the output."""

    models: ModelPairConfig = dataclasses.field(default_factory=ModelPairConfig)
    selection: SelectionConfig = dataclasses.field(default_factory=SelectionConfig)
    out: str = dataclasses.field(default="runs/select", metadata={"help": "Output directory."})


# A number in exponent form without a dot (1e-3, 5E4): YAML 1.1, as PyYAML reads it, makes it a string.
EXPONENT_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated field type (ints accepted for floats, lists for tuples)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if _is_dataclass_type(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build_config(kind, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML reads 1e-3 (an exponent, no dot) as a string
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(kind, type) and not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def build_config(cls: type[ConfigT], data: dict[str, Any], where: str = "config") -> ConfigT:
    """Build dataclass `cls` from a nested mapping, refusing unknown keys and values of the wrong type.

    A class whose section is written flat though it holds a config of its own (`TrainConfig`: the objective's
    settings beside the shared ones) says how to nest it with `nest_flat_settings(data) -> (data, {field: class})`;
    that field is then built as that class, its types checked like any other."""
    hints = typing.get_type_hints(cls)
    nest = getattr(cls, "nest_flat_settings", None)
    if nest is not None:
        try:
            data, nested = nest(data)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from error
        hints = {**hints, **nested}
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    missing = [
        name
        for name, field in fields.items()
        if name not in values and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


# YAML 1.1 (PyYAML) reads 1e3 as a string; a user writing `--set selection.budget=1e3` means the number.
_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `data[a][b][c] = value` for the key `a.b.c`, making sections on the way (in place)."""
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    node[parts[-1]] = value


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one `dotted.key=value` override to a nested mapping in place (value parsed as YAML; a number
    in scientific notation such as 1e3 is a number)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    key, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({error.problem or error})") from None
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        value = float(value)
    set_dotted(data, key, value)


def load_config(
    cls: type[ConfigT],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> ConfigT:
    """Read YAML `path` (optional), set `values` (dotted key -> value, taken verbatim: what command-line flags
    give, so a path such as `runs/exp #2` is never re-read as YAML), then apply `overrides` (`key=value`,
    YAML values, e.g. `--set`) in order, and build `cls`."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    for key, value in (values or {}).items():
        set_dotted(data, key, value)
    for override in overrides or []:
        apply_override(data, override)
    load_config_plugins(data, where=str(path) if path else "config")
    return build_config(cls, data, where=str(path) if path else "config")


def load_config_plugins(data: dict[str, Any], where: str) -> None:
    """Import the config's `plugins` before its sections are built: what they register (an objective a
    `recovery` section names, a strategy a sweep lists) must be known when those sections check their names."""
    plugins = data.get("plugins")
    if plugins is None:
        return
    if not isinstance(plugins, list) or not all(isinstance(plugin, str) for plugin in plugins):
        raise ConfigError(f"{where}.plugins: expected a list of file paths or module names, got {plugins!r}")
    from paser.pipelines.plugins import load_plugins

    try:
        load_plugins(plugins)
    except ValueError as error:
        raise ConfigError(f"{where}.plugins: {error}") from error


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable mapping of a config (tuples become lists); a section written flat
    (`flat_settings()`, e.g. `TrainConfig`) as that flat mapping, so `build_config` reads it back."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            flat = getattr(value, "flat_settings", None)
            fields = flat() if flat is not None else {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return {key: plain(item) for key, item in fields.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return copy.deepcopy(value)

    return plain(config)
