"""paser's one progress logger: a line prefixed `[paser]` (or `[paser <component>]`), flushed at once; and its
progress bars (`progress_bar`).

Progress goes to stdout, warnings and the evaluation's progress to stderr (so `paser eval`'s table on stdout stays
clean to pipe). Light on purpose: every layer (data, selection, recovery, pipelines) imports it.

Progress bars are a live display: each clears its line when its step ends, finished or failed, and the `paser`
command shows them only when stderr is a terminal (`show_progress_bars`), so stderr piped or logged holds warnings
and the one line of a refusal, never a bar's remains. From Python (a notebook) they show as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

_bars_shown = True


def say(message: str, *, component: str | None = None, stderr: bool = False) -> None:
    """Print `[paser] message` (or `[paser component] message`) on stdout, or on stderr with `stderr`."""
    prefix = "[paser]" if component is None else f"[paser {component}]"
    print(f"{prefix} {message}", file=sys.stderr if stderr else sys.stdout, flush=True)


def show_progress_bars(shown: bool) -> None:
    """Show or hide every progress bar of this process: paser's own (`progress_bar`, `bars_shown`) and, hidden,
    those of the Hugging Face libraries it calls (datasets, the hub: through the environment, which they read on
    import, unless it already says otherwise)."""
    global _bars_shown
    _bars_shown = shown
    if not shown:
        for variable in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(variable, "1")


def bars_shown(show: bool = True) -> bool:
    """Whether a bar asked for with `show` (a config's `show_progress`) shows: for the libraries that draw their
    own (sentence-transformers' `show_progress_bar`, the Trainer's `disable_tqdm`)."""
    return show and _bars_shown


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: int | None = None,
    initial: int = 0,
    unit: str = "rows",
    show: bool = True,
) -> Any:
    """A tqdm bar named `desc` over `iterable` (or `total` steps, `initial` of them done), shown when
    `bars_shown(show)`; it clears its line when closed."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, leave=False, disable=not bars_shown(show))
