"""paser's one progress logger: a line prefixed `[paser]` (or `[paser <component>]`), flushed at once.

Progress goes to stdout, warnings and the evaluation's progress to stderr (so `paser eval`'s table on stdout stays
clean to pipe). Light on purpose: every layer (selection, recovery, pipelines) imports it.
"""

from __future__ import annotations

import sys


def say(message: str, *, component: str | None = None, stderr: bool = False) -> None:
    """Print `[paser] message` (or `[paser component] message`) on stdout, or on stderr with `stderr`."""
    prefix = "[paser]" if component is None else f"[paser {component}]"
    print(f"{prefix} {message}", file=sys.stderr if stderr else sys.stdout, flush=True)
