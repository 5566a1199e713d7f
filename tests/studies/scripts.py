"""Loading a study's script (studies/<name>/<script>.py, not a package) as a module, for its tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def load_script(study: str, script: str) -> ModuleType:
    """The module of studies/`study`/`script`, executed once per call."""
    spec = importlib.util.spec_from_file_location(f"{study.replace('-', '_')}_{script}", STUDIES / study / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
