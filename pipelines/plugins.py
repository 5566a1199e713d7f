"""Plug-ins: Python files or modules imported before a command runs, so what they register (a strategy with
`paser.selection.strategies.register_strategy`, a pruner with `paser.recovery.pruners.register_pruner`, an
objective with `paser.recovery.objectives.register_objective`) is known to it, by name, like a built-in one.

Given as `--plugin FILE_OR_MODULE` (repeatable) on every command, or as `plugins: [...]` in a select or run
config. Each is imported once per process, however often it is named. See `examples/extending/`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

_LOADED: dict[str, ModuleType] = {}


def load_plugins(plugins: Iterable[str]) -> list[ModuleType]:
    """Import every plug-in of `plugins`: a `.py` file (by path) or an importable module name; returns the
    modules. Refuses (ValueError naming it) a file that does not exist and a plug-in that fails to import."""
    return [load_plugin(plugin) for plugin in plugins]


def load_plugin(plugin: str) -> ModuleType:
    """Import one plug-in (see `load_plugins`), or return it when this process imported it already."""
    is_file = plugin.endswith(".py")
    key = str(Path(plugin).expanduser().resolve()) if is_file else plugin
    if key in _LOADED:
        return _LOADED[key]
    if is_file and not Path(key).is_file():
        raise ValueError(f"plugin {plugin}: no such file")
    try:
        module = _import_file(Path(key)) if is_file else importlib.import_module(plugin)
    except Exception as error:  # a plug-in's own failure, whatever it is, is reported as the plug-in's
        raise ValueError(f"plugin {plugin} failed to import: {type(error).__name__}: {error}") from error
    _LOADED[key] = module
    return module


def _import_file(path: Path) -> ModuleType:
    # A name unique to the file's path, so two plug-ins named alike in different folders do not collide.
    name = f"paser_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
