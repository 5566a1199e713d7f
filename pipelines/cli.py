"""The `paser` command line: parse, build a config, call the library, print a summary and the artifacts."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import typing
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from paser.common.console import show_progress_bars
from paser.pipelines.plugins import load_plugins

if TYPE_CHECKING:
    from paser.pipelines.config import SelectConfig

# CLI flag -> dotted config key, for `paser select`
SELECT_FLAGS = {
    "original": "models.original",
    "pruned": "models.pruned",
    "dtype": "models.dtype",
    "device": "models.device",
    "corpus": "corpus.path",
    "limit": "corpus.limit",
    "budget": "selection.budget",
    "strategy": "selection.strategy",
    "seed": "selection.seed",
    "clusters": "clustering.n_clusters",
    "max_length": "formatting.max_length",
    "out": "out",
}


def budget_value(text: str) -> int | float | str:
    """A `--budget` as typed: a number (`0.1`, `5000`, `1e3`) or a token budget kept as text (`200000t`).

    A whole float above 1 (`1e3`) is the row count it spells; `1.0` stays a float, the fraction that means every
    row, while `1` is one row (`paser.selection.allocate.resolve_budget`)."""
    for number in (int, float):
        try:
            value = number(text)
        except ValueError:
            continue
        return int(value) if number is float and value.is_integer() and value > 1 else value
    return text


def select_config(args: argparse.Namespace) -> SelectConfig:
    """The `paser select` config: the YAML file, then the flags, verbatim (a path may hold '#', '@' or 'yes'),
    then the `--set` overrides, which alone are read as YAML."""
    from paser.pipelines.config import SelectConfig, load_config

    values = {key: getattr(args, flag) for flag, key in SELECT_FLAGS.items() if getattr(args, flag) is not None}
    return load_config(SelectConfig, args.config, list(args.set), values=values)


def select_command(args: argparse.Namespace) -> int:
    from paser.selection.corpus import check_corpus

    config = select_config(args)
    # A corpus that cannot be read is refused before the selection's imports (torch, scikit-learn: seconds);
    # run_select checks it again, among its other refusals.
    check_corpus(config.corpus)
    from paser.pipelines.select import format_summary, run_select

    output = run_select(config)
    print(format_summary(output))
    return 0


def prune_command(args: argparse.Namespace) -> int:
    from paser.recovery.config import PruneSpec

    # A flag not given keeps PruneSpec's default: the one `paser.prune` and a run's models.prune have.
    fields = [field.name for field in dataclasses.fields(PruneSpec)]
    spec = PruneSpec(**{name: getattr(args, name) for name in fields if getattr(args, name) is not None})
    record = spec.apply(args.model, Path(args.out))
    print(format_pruning(record, args.out))
    return 0


def format_pruning(record: dict, out: str) -> str:
    """One line on what `paser prune` did: method, target, what was removed, calibration, time, where."""
    calibration = record.get("calibration")
    source = (
        "no calibration"
        if calibration is None
        else (f"calibration {calibration['n_samples']} x {calibration['seqlen']} tokens from {calibration['source']}")
    )
    if "dropped_layers" in record:
        removed = f"dropped blocks {record['dropped_layers']} ({record['layers_before']} -> {record['layers_after']})"
    elif "per_layer_kept" in record:
        channels, heads = record["intermediate_size"], record["num_attention_heads"]
        removed = (
            f"MLP channels {channels['before']} -> {channels['after']}, attention heads {heads['before']} -> "
            f"{heads['after']} per block, decoder parameters {record['decoder_parameters_before']:,} -> "
            f"{record['decoder_parameters_after']:,}"
        )
    else:
        removed = f"total sparsity {record['total_sparsity']:.4f}"
    return (
        f"pruned {record['model']} with {record['method']} {record['target']['label']}: {removed}; {source}; "
        f"{record['seconds']:.1f} s -> {out}"
    )


def eval_command(args: argparse.Namespace) -> int:
    from paser.pipelines.layout import EvalFolder
    from paser.recovery.evaluate import format_summary, run_eval

    record = run_eval(
        args.model,
        adapter=args.adapter,
        tasks=args.tasks,
        limit=args.limit,
        data_dir=args.data_dir,
        source=args.source,
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
        seqlen=args.seqlen,
        seed=args.seed,
        out_dir=args.out,
    )
    print(format_summary(record))
    if args.out:
        folder = EvalFolder(Path(args.out))
        print(f"metrics: {folder.metrics}, table: {folder.table}")
    return 0


def recover_command(args: argparse.Namespace) -> int:
    from paser.recovery.config import TrainConfig, setting_owners
    from paser.recovery.train import format_summary, recover

    # A flag whose dest is a setting (shared or an objective's) sets it; one not given keeps the default. A flag of
    # another objective than --objective is refused by from_flat, naming the objective it belongs to.
    names = [*(field.name for field in dataclasses.fields(TrainConfig)), *setting_owners()]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    config = TrainConfig.from_flat(given)
    result = recover(args.pruned, args.subset, args.out, config, original=args.original, data_dir=args.data_dir)
    if result.record.get("training"):
        print(format_summary(result))
    return 0


def run_command(args: argparse.Namespace) -> int:
    from paser.pipelines.run import load_run_config, run

    if args.config is None:
        print("[paser run] no config: the built-in demo (SmolLM2-135M-Instruct, Wanda 50%, demo corpus)")
    tracking = [f"recovery.report_to={json.dumps(args.report_to)}"] if args.report_to else []
    config = load_run_config(args.config, [*args.set, *tracking])
    runner = run(config, args.out)
    return _print_report(runner.dir)


def _print_report(run_dir: Path) -> int:
    from paser.pipelines.analysis.report import format_results, write_report

    markdown, html = write_report(run_dir)
    print(format_results(run_dir))
    print(f"[paser] report: {markdown}  (self-contained: {html})")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from paser.pipelines.analysis.report import write_report

    markdown, html = write_report(args.run_dir, args.out)
    print(f"[paser] report: {markdown}  (self-contained: {html})")
    return 0


def data_command(args: argparse.Namespace) -> int:
    if args.recipe_args[:1] == ["heldout"]:
        from paser.data.heldout import main as heldout_main

        return heldout_main(args.recipe_args[1:])
    from paser.data.recipes import main as recipes_main

    return recipes_main(args.recipe_args)


def _add_report_to(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report-to",
        dest="report_to",
        nargs="+",
        metavar="TRACKER",
        help="experiment trackers for the training loss and, in `paser run`, the eval metrics: tensorboard, wandb, "
        "trackio or none (default); they log to the recovery folder's logs/ (recovery.report_to)",
    )


def registered(kind: str) -> str:
    """The names registered as `kind` (strategy, pruner, objective), for help texts: what a plug-in registers
    (`--plugin`, loaded before the parser is built) is listed too."""
    if kind == "strategy":
        from paser.selection.strategies import STRATEGIES

        names = sorted(STRATEGIES)
    elif kind == "pruner":
        from paser.recovery.pruners import known_methods

        names = known_methods()
    else:
        from paser.recovery.objectives import objective_names

        names = objective_names()
    return literal_help(", ".join(names))


def literal_help(text: str) -> str:
    """`text` (prose from a registry, a dataclass field or a default) as an argparse help string, which argparse
    %-formats: a bare % (`~30% slower`) is doubled so it prints as written."""
    return text.replace("%", "%%")


# Every command's --device (and every config's device): one rule.
DEVICE_HELP = "cpu or cuda (default: cuda when a GPU is visible, else cpu)"


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `paser` parser: every command, with the arguments of `commands` (default: of every command).

    `paser --help` lists the commands by name, one line each; a command's arguments read its registries and
    defaults (the strategies for select, the pruning methods for prune, TrainConfig for recover), so `main` adds
    only those of the command it was given."""
    parser = argparse.ArgumentParser(prog="paser", description="Select post-training data that repairs a pruned LLM.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments) in COMMANDS.items():
        command = subparsers.add_parser(name, help=help_text() if callable(help_text) else help_text)
        if commands is None or name in commands:
            add_arguments(command)
            if name != "data":  # its arguments are its recipe's, taken as they come: no --plugin
                command.add_argument(
                    "--plugin", action="append", default=[], metavar="FILE_OR_MODULE", help=PLUGIN_HELP
                )
    return parser


def _select_arguments(select: argparse.ArgumentParser) -> None:
    select.add_argument("--config", help="YAML run config (flags and --set override it)")
    select.add_argument("--original", help="original model (path, hub id, or `smollm2`)")
    select.add_argument("--pruned", help="pruned model (path or hub id)")
    select.add_argument("--corpus", help="JSONL/JSON/Parquet file, datasets folder or hub id")
    select.add_argument(
        "--budget",
        type=budget_value,
        help="fraction of valid rows in (0,1], a row count, or training tokens as e.g. 200000t (the fair unit "
        "to compare strategies in: paser prefers short rows)",
    )
    select.add_argument("--strategy", help=f"a registered strategy: {registered('strategy')} (default paser)")
    select.add_argument("--clusters", type=int, help="fixed number of clusters (default: automatic)")
    select.add_argument("--dtype", help="auto, bf16, fp16, fp32")
    select.add_argument("--device", help=DEVICE_HELP)
    select.add_argument("--seed", type=int, help="random seed")
    select.add_argument("--limit", type=int, help="use only the first N rows of the corpus")
    select.add_argument("--max-length", dest="max_length", type=int, help="token limit per row")
    select.add_argument("--out", help="output directory")
    select.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, dotted")
    select.set_defaults(run=select_command)


def _prune_arguments(prune: argparse.ArgumentParser) -> None:
    from paser.recovery.config import PruneSpec
    from paser.recovery.pruners import known_methods, needs_calibration

    defaults = PruneSpec()
    calibrated = literal_help(", ".join(name for name in known_methods() if needs_calibration(name)))
    prune.add_argument("--model", required=True, help="model to prune (path, hub id, or `smollm2`)")
    prune.add_argument(
        "--method",
        help=f"a registered pruning method: {registered('pruner')} (default {defaults.method}; {calibrated} need "
        "--calibration)",
    )
    amount = prune.add_mutually_exclusive_group()
    amount.add_argument("--sparsity", type=float, help="fraction of weights to zero, in (0,1) (default 0.5)")
    amount.add_argument("--pattern", help="N:M semi-structured sparsity, e.g. 2:4 (N kept in every M inputs)")
    amount.add_argument("--drop", type=float, help="layer_drop: fraction of decoder blocks to remove, in (0,1)")
    amount.add_argument(
        "--ratio", type=float, help="width: fraction of MLP channels and attention heads to remove per block, in (0,1)"
    )
    prune.add_argument("--importance", help="width: activation (default), taylor or random")
    prune.add_argument(
        "--calibration",
        help=f"calibration text for {calibrated}: a corpus file, a .txt file, `demo`, or `wikitext2`/`c4` (hub); "
        "never an evaluation test split",
    )
    prune.add_argument(
        "--calibration-samples",
        dest="calibration_samples",
        type=int,
        help=f"calibration windows (default {defaults.calibration_samples})",
    )
    prune.add_argument("--seqlen", type=int, help="tokens per calibration window (default: min(2048, model max))")
    prune.add_argument("--seed", type=int, help=f"seed for drawing calibration windows (default {defaults.seed})")
    prune.add_argument("--device", help=DEVICE_HELP)
    prune.add_argument("--out", required=True, help="output directory")
    prune.set_defaults(run=prune_command)


def _eval_arguments(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("--model", required=True, help="model to evaluate (path, hub id, or `smollm2`)")
    evaluate.add_argument("--adapter", help="peft adapter folder to apply on top of the model")
    evaluate.add_argument(
        "--tasks",
        default="all",
        help="comma list of wikitext2, ptb, boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, "
        "openbookqa, or `all` (default)",
    )
    evaluate.add_argument("--limit", type=int, help="at most N items per zero-shot task / N windows per ppl task")
    evaluate.add_argument("--data-dir", dest="data_dir", help="offline data folder (default: $PASER_DATA_DIR)")
    evaluate.add_argument(
        "--source", default="local", choices=["local", "hub"], help="zero-shot data: local files or lm-eval's hub tasks"
    )
    evaluate.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="windows / requests per batch")
    evaluate.add_argument("--seqlen", type=int, help="perplexity window (default: min(2048, model maximum))")
    evaluate.add_argument("--dtype", default="auto", help="auto, bf16, fp16, fp32")
    evaluate.add_argument("--device", help=DEVICE_HELP)
    evaluate.add_argument("--seed", type=int, default=0, help="random seed for lm-eval")
    evaluate.add_argument("--out", help="folder for metrics.json and metrics.md (default: print only)")
    evaluate.set_defaults(run=eval_command)


def _recover_arguments(recover: argparse.ArgumentParser) -> None:
    recover.add_argument("--pruned", required=True, help="pruned model folder (or hub id)")
    recover.add_argument("--subset", required=True, help="rows to train on: a selection.jsonl or any corpus file")
    recover.add_argument("--original", help="original model: the teacher for distill (required there)")
    recover.add_argument("--out", required=True, help="output folder (adapter/, merged/, recovery.json, ...)")
    recover.add_argument("--data-dir", dest="data_dir", help="offline data folder (default: $PASER_DATA_DIR)")
    from paser.recovery.config import TrainConfig

    # One flag per TrainConfig field, its help and default read from the field (`recovery.<field>` in a run), then
    # one per objective setting, its help naming the objective(s) it belongs to.
    names = {"objective": f"a registered objective: {registered('objective')}."}
    add_dataclass_flags(recover, TrainConfig, skip=("report_to", "target_modules", "objective_config"), helps=names)
    _add_objective_flags(recover)
    _add_report_to(recover)
    recover.set_defaults(run=recover_command)


def _run_arguments(run_parser: argparse.ArgumentParser) -> None:
    run_parser.add_argument("config", nargs="?", help="run config (YAML); none: the built-in offline demo")
    run_parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    run_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, dotted")
    _add_report_to(run_parser)
    run_parser.set_defaults(run=run_command)


def _report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("run_dir", metavar="RUN", help="run directory written by `paser run`")
    report.add_argument("--out", help="folder for the report (default: the run directory)")
    report.set_defaults(run=report_command)


def _data_names() -> tuple[str, str]:
    """The corpus recipes and the held-out sets, each as a help text's list."""
    from paser.data.heldout import HELDOUT_BUILDERS
    from paser.data.recipes import RECIPES

    return literal_help(", ".join(RECIPES)), literal_help(", ".join(HELDOUT_BUILDERS))


def _data_help() -> str:
    recipes, heldout = _data_names()
    return f"normalise a corpus ({recipes}) to JSONL, or build a held-out set ({heldout})"


def _data_arguments(data: argparse.ArgumentParser) -> None:
    recipes, heldout = _data_names()
    data.description = (
        f"Recipes: {recipes}. Held-out sets: {heldout}. `paser data RECIPE --help` and `paser data heldout --help` "
        "describe each."
    )
    data.add_argument(
        "recipe_args",
        nargs=argparse.REMAINDER,
        help=f"RECIPE --source S --out F [--split] [--limit] (RECIPE: {recipes}), or heldout NAME --out F "
        f"[--limit] [--data-dir] (NAME: {heldout})",
    )
    data.set_defaults(run=data_command)


# The commands, in the order `paser --help` lists them: the one line it shows (or what makes it) and what adds
# the command's arguments.
COMMANDS: dict[str, tuple[str | Callable[[], str], Callable[[argparse.ArgumentParser], None]]] = {
    "select": ("score, cluster and select a subset of a corpus", _select_arguments),
    "prune": ("prune a model into a plain HF checkpoint", _prune_arguments),
    "eval": ("perplexity and zero-shot accuracy (lm-eval, in-process, offline)", _eval_arguments),
    "recover": (
        "LoRA fine-tune a pruned model on a subset, sparsity kept (objectives: see --objective)",
        _recover_arguments,
    ),
    "run": (
        "prune -> select (strategy x budget x seed) -> recover -> evaluate -> report, cached by stage",
        _run_arguments,
    ),
    "report": ("write report.md and report.html for a run directory", _report_arguments),
    "data": (_data_help, _data_arguments),
}


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), helps: dict[str, str] | None = None
) -> None:
    """A `--field-name` flag for each field of dataclass `cls` (but `skip`): its type from the annotation (a bool
    becomes `--name` / `--no-name`), its help from the field's metadata (or `helps`) plus its default, and
    default None, so a flag not given leaves the field's own default."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        help_text = (helps or {}).get(field.name) or field.metadata.get("help", "")
        _add_field_flag(parser, field.name, hints[field.name], _with_default(help_text, field))


def _with_default(help_text: str, field: dataclasses.Field) -> str:
    default = field.default if field.default is not dataclasses.MISSING else None
    return help_text if default is None else f"{help_text} (default {default})"


def _add_field_flag(parser: argparse.ArgumentParser, name: str, hint: Any, help_text: str) -> None:
    """The flag `--name` setting `name` (default None): typed by `hint`, a bool as `--name` / `--no-name`."""
    kind = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=literal_help(help_text))
    else:
        parser.add_argument(flag, dest=name, type=kind, help=literal_help(help_text))


def _add_objective_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per objective setting (`recovery.<setting>` in a run), read from the objectives' configs: its help
    says which objective(s) it belongs to, each with its own help and default where they differ."""
    from paser.recovery.config import setting_owners
    from paser.recovery.objectives import objective_config_class

    for name, owners in setting_owners().items():
        helps: dict[str, list[str]] = {}  # the help (with its default) -> the objectives that give it
        hint = None
        for objective in owners:
            config_class = objective_config_class(objective)
            field = next(field for field in dataclasses.fields(config_class) if field.name == name)
            hint = hint or typing.get_type_hints(config_class)[name]
            helps.setdefault(_with_default(field.metadata.get("help", ""), field), []).append(objective)
        text = " ".join(f"[objective {', '.join(objectives)}] {help_text}" for help_text, objectives in helps.items())
        _add_field_flag(parser, name, hint, text)


PLUGIN_HELP = (
    "a .py file or module to import first (repeatable): the strategies, pruners and objectives it registers "
    "become known by name (see examples/extending/)"
)


def plugins_in(argv: list[str]) -> list[str]:
    """The `--plugin` values of a command line, read before the full parser exists (so what they register is
    listed in its help and accepted by its checks)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--plugin", action="append", default=[])
    known, _ = early.parse_known_args(argv)
    return known.plugin


def _as_written(error: BaseException, args: argparse.Namespace) -> str:
    """An error whose message is already written for users (the library's own refusals)."""
    return str(error)


def _path_hint(path: Path, args: argparse.Namespace) -> str:
    """What to do about a file system refusal at `path`: another `--out` when the path is (under) it."""
    out = getattr(args, "out", None)
    inside_out = out is not None and (path == Path(out) or Path(out) in path.parents)
    return "choose another --out" if inside_out else "check the path"


def _file_system_refusal(error: OSError, args: argparse.Namespace) -> str | None:
    """A folder that is a file or sits under one, a folder that cannot be written to, a read-only or full file
    system; None for any other OSError (a bug or an error whose own message is not for users)."""
    if error.filename is None:
        return None
    path = Path(error.filename)
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((folder for folder in (path, *path.parents) if folder.is_file()), None)
        if blocker is None:
            return None
        where = "is a file" if blocker == path else f"cannot be created: {blocker} is a file"
        return f"{path} {where}, not a folder; {_path_hint(path, args)}"
    # A staging file or a folder to be made does not exist yet: the folder that refused it is its parent.
    place = path if path.exists() else path.parent
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied writing to {place}; make it writable or {_path_hint(path, args)}"
    if error.errno == errno.EROFS:
        return f"{place} is on a read-only file system; {_path_hint(path, args)}"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        # Writes are staged and renamed: nothing half-written is taken as done, so the rerun resumes.
        return f"no space left on device writing to {place}; free some space (or {_path_hint(path, args)}) and rerun"
    return None


def _yaml_refusal(error: yaml.YAMLError, args: argparse.Namespace) -> str:
    """A config file that is not YAML: the file, the line and column, and what the parser expected."""
    source = getattr(args, "config", None) or "a YAML file"
    mark = getattr(error, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{source}{where}: not valid YAML ({problem}); fix the file"


# Failures a user can fix, by exception type: the one-line message `main` prints (exit status 2); a handler
# returning None means the error is not one of them after all. Any other exception is a bug and keeps its
# traceback. The most specific type of an error's class hierarchy decides (FileNotFoundError before OSError).
REFUSALS: dict[type[BaseException], Callable[[Any, argparse.Namespace], str | None]] = {
    ValueError: _as_written,  # ConfigError, ModelLoadError and the library's own refusals
    RuntimeError: _as_written,  # FolderLockedError among them
    FileNotFoundError: _as_written,
    ConnectionError: _as_written,
    OSError: _file_system_refusal,
    yaml.YAMLError: _yaml_refusal,
}


def refusal_message(error: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message for `error` from `REFUSALS`, or None when it is not a failure a user can fix."""
    for kind in type(error).__mro__:
        if kind in REFUSALS:
            return REFUSALS[kind](error, args)
    return None


# What rerunning an interrupted command does: select and run resume from what they finished (shards and stages
# are published whole, staged and renamed); the others start again.
RESUMES = {
    "select": "resume from the finished shards",
    "run": "resume from the finished stages and shards",
}


def interrupted_message(command: str | None) -> str:
    """The one line `main` prints for Ctrl-C (SIGINT) during `command`."""
    return f"interrupted; rerun the same command to {RESUMES.get(command or '', 'start it again')}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `paser` console script. Exit status 0: done; 2: refused, with one line on stderr
    saying what and what to do (`REFUSALS`); 130: interrupted (Ctrl-C), with one line saying how to resume
    (`interrupted_message`); any other error is a bug and keeps its traceback. Progress bars show only when
    stderr is a terminal (`paser.common.console.show_progress_bars`).

    Set PASER_DEBUG=1 to get the traceback of a refusal or an interruption too.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _run(argv)
    except KeyboardInterrupt:
        if os.environ.get("PASER_DEBUG"):
            raise
        command = argv[0] if argv and not argv[0].startswith("-") else None
        print(f"paser{f' {command}' if command else ''}: {interrupted_message(command)}", file=sys.stderr)
        return 130


def hide_checkpoint_loading_bars() -> None:
    """Hide transformers' bars (loading checkpoint shards): paser's own bars (tokenise, degradation, embedding)
    say what runs, those are noise. Without importing transformers, which takes seconds: it reads the Hugging Face
    hub's switch, turned off here, when it is imported (a plug-in that imported it already is told directly)."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    else:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def _run(argv: list[str]) -> int:
    try:
        load_plugins(plugins_in(argv))
    except ValueError as error:
        print(f"paser: error: {error}", file=sys.stderr)
        return 2
    args = build_parser(commands=argv[:1]).parse_args(argv)
    # Bars are a live display for a person at a terminal: piped or logged, stderr holds warnings and errors only.
    show_progress_bars(sys.stderr.isatty())
    hide_checkpoint_loading_bars()
    try:
        return args.run(args)
    except tuple(REFUSALS) as error:
        message = refusal_message(error, args)
        if message is None or os.environ.get("PASER_DEBUG"):
            raise
        print(f"paser {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
