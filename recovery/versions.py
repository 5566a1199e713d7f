"""Installed versions of the packages a result depends on, recorded beside the result (select, train, evaluate)."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable

NOT_INSTALLED = "not installed"


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """`{name: version}` for each distribution in `packages`, in their order: `python` is the interpreter's
    version, a distribution that is not installed is recorded as "not installed"."""
    versions = {}
    for name in packages:
        if name == "python":
            versions[name] = platform.python_version()
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions
