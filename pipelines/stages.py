"""Cached stages: a `Stage` is one step of `paser run` (its name, the inputs its hash covers, the artifacts it
leaves, how it computes them and how its value is read back), and an `Executor` runs or skips each stage against
the run directory's `manifest.json` and says which it did in `events.jsonl`.

A stage declares what it reads: the stages whose outputs it takes (`inputs`), the config sections and fields
(`settings`) and the files and checkpoints from outside the run (`sources`); its hash is derived from those
declarations in one helper, `stage_key`. The keys of its input stages are part of its own, and those stages run
before it, so a change anywhere upstream reruns everything downstream of it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from paser.common.console import say
from paser.common.io import file_sha256, write_json
from paser.pipelines.config import config_to_dict
from paser.pipelines.layout import RunLayout

MANIFEST_VERSION = 1


def log(message: str) -> None:
    """One line of `paser run`'s progress on stdout."""
    say(message, component="run")


# ------------------------------------------------------------------------------------------------ hashing


def stable_hash(payload: Any) -> str:
    """sha256 of the canonical JSON of `payload` (sorted keys; tuples as lists)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def source_identity(source: str) -> str:
    """What a corpus source is, for a hash: a file's content digest, a folder's file names/sizes/times, or the
    hub id itself (a hub dataset is identified by its name; pin a revision by saving it locally).

    Refuses (FileNotFoundError naming it and the working directory) a source that is neither a local path nor
    shaped like a hub id (`paser.selection.corpus.is_hub_id`): a relative path resolved from another working
    directory would otherwise become another "hub" key, and the executor clears a stage's artifacts (hours of
    scoring) before it reruns a stage whose key changed."""
    from paser.selection.corpus import is_hub_id

    path = Path(source).expanduser()
    if path.is_file():
        return "file:" + file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(item for item in path.rglob("*") if item.is_file()):
            status = file.stat()
            digest.update(f"{file.relative_to(path)}:{status.st_size}:{status.st_mtime_ns}".encode())
        return "dir:" + digest.hexdigest()
    if not is_hub_id(source):
        raise FileNotFoundError(f"{source}: no such file or directory (relative to {Path.cwd()})")
    return "hub:" + source


def model_identity(name: str) -> str:
    """A checkpoint's fingerprint (config, pruning record, weight files) for a local folder or alias; the hub id
    otherwise (a local-looking path that does not exist is refused by `resolve_model`)."""
    from paser.recovery.identity import checkpoint_identity
    from paser.recovery.models import resolve_model

    resolved = resolve_model(name)
    return checkpoint_identity(resolved) or f"hub:{resolved}"


# ------------------------------------------------------------------------------------------------ manifest


class Manifest:
    """`manifest.json` (stage -> hash, status, artifacts, seconds) and `events.jsonl` of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = RunLayout(run_dir).manifest
        self.events_path = RunLayout(run_dir).events
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


# ------------------------------------------------------------------------------------------------ stages


@dataclasses.dataclass(eq=False)
class Stage:
    """One cached step, declared: `name` (its manifest key), `compute` (writes the artifacts from its inputs'
    values, an `InputValues`; returns the stage's value where it has one), `artifacts` (what it leaves; it counts
    as done only while all exist), `inputs` (the stages whose outputs it reads, by role: they run first),
    `settings` (the config sections and fields it reads, by name: a config dataclass, whole, or plain values),
    `sources` (what it reads from outside the run folder, by role: a function that gives the file's or
    checkpoint's identity) and `load` (for a stage whose value later stages use: that value read back from the
    artifacts, given its inputs' values too). Its cache key comes from these declarations alone (`stage_key`)."""

    name: str
    compute: Callable[[InputValues], Any]
    artifacts: list[Path]
    inputs: dict[str, Stage] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    sources: dict[str, Callable[[], str]] = dataclasses.field(default_factory=dict)
    load: Callable[[InputValues], Any] | None = None

    @property
    def needs(self) -> tuple[Stage, ...]:
        """The stages to run before this one: its inputs."""
        return tuple(self.inputs.values())

    @functools.cached_property
    def digest(self) -> str:
        """The stage's cache key (`stage_key`), read once."""
        return stage_key(self)


def stage_key(stage: Stage) -> str:
    """The cache key of `stage`: `stable_hash` of what it declares and nothing else: the keys of its input stages,
    its settings in full (a config dataclass with every field, defaults included, so a changed default reruns
    the stage) and the identities of its sources (content, not paths). Reading them runs no stage and writes
    nothing."""
    return stable_hash(
        {
            "inputs": {role: need.digest for role, need in stage.inputs.items()},
            "settings": {name: _plain(value) for name, value in stage.settings.items()},
            "sources": {role: identity() for role, identity in stage.sources.items()},
        }
    )


def settings_except(config: Any, *fields: str) -> dict[str, Any]:
    """A config section (a config dataclass, or its settings as a mapping) as a stage declares it when some of its
    fields do not change what the stage writes (where progress is shown, who watches, how many rows go through at
    once): every other field."""
    plain = dict(config) if isinstance(config, Mapping) else config_to_dict(config)
    unknown = [name for name in fields if name not in plain]
    if unknown:
        raise KeyError(f"{type(config).__name__} has no field(s) {unknown}")
    return {name: value for name, value in plain.items() if name not in fields}


def _plain(value: Any) -> Any:
    """A setting as its key holds it: a config dataclass as its fields; an object no config can write (a concept
    extractor handed to a strategy from Python) as its class, its parameters being settings of their own."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"{type(value).__module__}.{type(value).__qualname__}"


class InputValues(Mapping[str, Any]):
    """What a stage receives: the values of its inputs by role (`Stage.inputs`), each computed or read back by the
    executor when first asked for, so a stage that reads only one of its inputs loads only that one."""

    def __init__(self, executor: Executor, stage: Stage) -> None:
        self._executor, self._stage = executor, stage

    def __getitem__(self, role: str) -> Any:
        return self._executor.value(self._stage.inputs[role])

    def __iter__(self) -> Iterator[str]:
        return iter(self._stage.inputs)

    def __len__(self) -> int:
        return len(self._stage.inputs)


class Executor:
    """Runs each stage at most once per invocation: skipped when the manifest has it done with the same hash
    and its artifacts exist, else run (its old artifacts cleared first when the hash changed); either way an
    event in `events.jsonl` and a log line."""

    def __init__(self, run_dir: Path) -> None:
        self.manifest = Manifest(run_dir)
        self.ran: list[str] = []
        self.cached: list[str] = []
        self._digests: dict[str, str] = {}  # stage name -> hash, for the stages done in this invocation
        self._values: dict[str, Any] = {}  # stage name -> value, once computed or loaded

    def ensure(self, stage: Stage) -> str:
        """Run the stages `stage` needs, then `stage` itself unless it is cached; returns its hash."""
        if stage.name in self._digests:
            return self._digests[stage.name]
        for need in stage.needs:
            self.ensure(need)
        digest = stage.digest
        if self.manifest.fresh(stage.name, digest, stage.artifacts):
            self.manifest.event(stage.name, "cached", 0.0)
            self.cached.append(stage.name)
            log(f"{stage.name}: cached")
        else:
            self._run(stage, digest)
        self._digests[stage.name] = digest
        return digest

    def value(self, stage: Stage) -> Any:
        """`stage`'s value (after `ensure`): what its compute returned in this invocation, else what its `load`
        reads back."""
        self.ensure(stage)
        if stage.name not in self._values:
            if stage.load is None:
                raise RuntimeError(f"stage {stage.name} has no value to read back")
            self._values[stage.name] = stage.load(InputValues(self, stage))
        return self._values[stage.name]

    def _run(self, stage: Stage, digest: str) -> None:
        log(f"{stage.name}: running")
        self.manifest.start(stage.name, digest, stage.artifacts)
        started = time.perf_counter()
        value = stage.compute(InputValues(self, stage))
        seconds = time.perf_counter() - started
        missing = [str(path) for path in stage.artifacts if not path.exists()]
        if missing:
            raise RuntimeError(f"stage {stage.name} finished without writing {', '.join(missing)}")
        self.manifest.finish(stage.name, digest, stage.artifacts, seconds)
        self.manifest.event(stage.name, "ran", seconds)
        self.ran.append(stage.name)
        log(f"{stage.name}: done in {seconds:.1f} s")
        if stage.load is not None:
            self._values[stage.name] = value
