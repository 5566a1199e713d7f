"""The run folder's paths are spelled in one module, `paser.pipelines.layout`; everything else asks it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from paser.pipelines.analysis.reader import load_run
from paser.pipelines.layout import RunLayout, pruning_record
from tests.pipelines.fake_run import build_fake_run

REPO = Path(__file__).resolve().parents[2]
# The packages searched for a run-folder file name, and those for a folder name joined onto a path (the others
# have folders of their own that share a name, e.g. the data folder's `shared/data`). recovery/ is left out: it
# writes its own commands' outputs (`paser recover`, `paser eval`, `paser prune`), whose names the layout reads.
LIBRARY = ("paser", "common", "data", "selection", "pipelines")
RUN_ENGINE = ("paser", "pipelines")
VARIABLE = "VARIABLE"  # what the layout's methods are called with: their variable part, in its names


def layout_paths(value: object) -> list[Path]:
    """Every path `value` (a layout object) names: its properties' and its methods' (called with `VARIABLE`),
    those of the layout objects they return too."""
    paths = []
    for name, member in inspect.getmembers(type(value)):
        if name.startswith("_") or name == "root":
            continue
        if isinstance(member, property):
            found = getattr(value, name)
        elif inspect.isfunction(member):
            arguments = [VARIABLE] * (len(inspect.signature(member).parameters) - 1)
            found = getattr(value, name)(*arguments)
        else:
            continue
        for item in found if isinstance(found, tuple) else (found,):
            paths += [item] if isinstance(item, Path) else [item.root, *layout_paths(item)]
    return paths


def layout_names() -> set[str]:
    """Every file and folder name of the run layout, the variable part of a name as `VARIABLE`."""
    root = Path("/run")
    paths = [*layout_paths(RunLayout(root)), pruning_record(root / "pruned")]
    return {part for path in paths for part in path.relative_to(root).parts if part != VARIABLE}


def literal_patterns(name: str) -> list[re.Pattern[str]]:
    """How source code would spell `name` as a path: a file name (it has a dot) as a string literal or the last
    part of one, a folder as the right side of `/`; a variable part as an f-string's `{...}`."""
    text = re.escape(name).replace(VARIABLE, r"\{[^}]*\}")
    if is_file_name(name):
        return [re.compile(rf"""(?<!["'])(["'])(?:[^"'\s]*/)?{text}\1""")]
    return [re.compile(rf"""/\s*f?["']{text}["'/]""")]


def is_file_name(name: str) -> bool:
    return "." in name.lstrip(".")


def test_the_layout_names_the_run_folder_files():
    names = layout_names()
    assert {"manifest.json", "results.json", "selection.jsonl", "recovery.json", "items.npz"} <= names
    assert {"shared", "combos", "baselines", f"clusters-s{VARIABLE}.parquet"} <= names


def test_no_run_folder_path_literal_outside_the_layout():
    names = sorted(layout_names())
    found = []
    for package in LIBRARY:
        searched = [name for name in names if package in RUN_ENGINE or is_file_name(name)]
        patterns = [(name, pattern) for name in searched for pattern in literal_patterns(name)]
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "pipelines" / "layout.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                found += [
                    f"{path.relative_to(REPO)}:{number}: {name}" for name, pattern in patterns if pattern.search(line)
                ]
    assert not found, "run-folder paths spelled outside paser.pipelines.layout:\n" + "\n".join(found)


def test_the_layout_agrees_with_the_names_recovery_writes():
    from paser.recovery.evaluate import GENERATIONS_DIR
    from paser.recovery.items import ITEMS_FILE

    folder = RunLayout("run").combo("c").eval
    assert folder.items.name == ITEMS_FILE
    assert folder.generations.name == GENERATIONS_DIR


@pytest.mark.parametrize("fixture", ["built", "committed"])
def test_a_run_folder_reads_back_through_the_layout(tmp_path, fixture):
    run_dir = build_fake_run(tmp_path / "run") if fixture == "built" else REPO / "tests" / "fixtures" / "tiny_run"
    run = load_run(run_dir)
    layout = RunLayout(run_dir)
    assert run.missing() == []
    for combo in run.combos()["combo"]:
        assert run.selection_path(combo) == layout.combo(combo).select.selection
        assert layout.combo(combo).eval.metrics.is_file()
    assert layout.shared.scores.is_file() and layout.shared.corpus.is_file()


def test_the_fake_run_built_through_the_layout_has_the_committed_fixtures_files(tmp_path):
    # The committed fixture was written before the layout existed: the same files mean the same on-disk format.
    def files(root: Path) -> set[str]:
        return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}

    assert files(build_fake_run(tmp_path / "run")) == files(REPO / "tests" / "fixtures" / "tiny_run")
