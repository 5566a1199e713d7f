"""Shared by the recovery benches (`recipe_tuning.py`, `recovery_objectives.py`): seeded disjoint Alpaca-52K row
draws, settings given on the command line, response NLL per row set, the share of the pruning gap closed, a
process's peak resident memory, and the pruned model made when it is missing.

Imported as `bench.recovery_bench` (the scripts put the repository root on `sys.path`); it imports torch and
transformers only inside the functions that need them.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"


def parse_setting(text: str) -> tuple[str, dict]:
    """`NAME:key=value,...` -> (NAME, {key: value}); values are read as JSON where they parse, else strings."""
    name, _, body = text.partition(":")
    if not name or not body:
        raise SystemExit(f"--setting {text!r}: expected NAME:key=value[,key=value]")
    values = {}
    for pair in body.split(","):
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--setting {text!r}: {pair!r} is not key=value")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw.strip()
    return name, values


def write_rows(path: Path, rows: Iterable[dict]) -> None:
    """Rows as JSON Lines."""
    with path.open("w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps(row) + "\n")


def split_rows(rows: list, seed: int, sizes: dict[str, int]) -> dict[str, list]:
    """`rows` shuffled with `random.Random(seed)` and cut into consecutive disjoint parts of `sizes` (in their
    order); refuses (ValueError) sizes that add up to more rows than there are."""
    if sum(sizes.values()) > len(rows):
        raise ValueError(f"{sum(sizes.values())} rows asked for ({sizes}), only {len(rows)} there")
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    parts, start = {}, 0
    for name, size in sizes.items():
        parts[name] = shuffled[start : start + size]
        start += size
    return parts


def on_tuning_rows(setting: dict) -> bool:
    """Whether a `recipe_tuning.py` setting trained on the tuning's own rows: a curve point with `train_rows` is
    another budget, never a candidate for the recipe chosen on dev."""
    return setting.get("train_rows") is None


def draw_alpaca_rows(folder: Path, seed: int, sizes: dict[str, int], only: Iterable[str] | None = None) -> None:
    """Write disjoint seeded parts of Alpaca-52K (`split_rows`) as `folder/NAME.jsonl`, Alpaca fields + id; with
    `only`, just those parts (the others drawn, so the parts are the same, but not written)."""
    from paser.data.paths import data_file
    from paser.selection.corpus import CorpusConfig, load_corpus

    folder.mkdir(parents=True, exist_ok=True)
    alpaca = list(load_corpus(CorpusConfig(path=str(data_file(ALPACA_FILE)))).samples)
    for name, samples in split_rows(alpaca, seed, sizes).items():
        if only is not None and name not in only:
            continue
        write_rows(folder / f"{name}.jsonl", ({**sample.raw, "id": sample.id} for sample in samples))


def load_scoring_model(model_path: str, dtype: str) -> tuple[Any, Any]:
    """(model, tokenizer) of `model_path` on the CPU in `dtype`, for `response_nlls`."""
    from paser.recovery.models import load_model, load_tokenizer

    model, _ = load_model(model_path, dtype=dtype, device="cpu")
    return model, load_tokenizer(model_path)


def response_nlls(model: Any, tokenizer: Any, rows_folder: Path, names: Iterable[str]) -> dict[str, dict]:
    """Response NLL of `model` on each row set `rows_folder/NAME.jsonl` (rows encoded as training encodes them):
    {name: {"nll", "tokens", "rows"}}."""
    from paser.recovery.config import TrainConfig
    from paser.recovery.evaluate import response_nll
    from paser.recovery.train import load_training_rows

    config = TrainConfig(show_progress=False)
    scores = {}
    for name in names:
        rows = load_training_rows(rows_folder / f"{name}.jsonl", tokenizer, config)
        result = response_nll(model, rows.encoded, batch_size=8)
        scores[name] = {"nll": result["nll"], "tokens": result["tokens"], "rows": result["rows"]}
    return scores


def write_json(path: Path, payload: Any) -> None:
    """`payload` as indented JSON, written to a staging file and moved into place (a killed run leaves none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(payload, indent=2, default=str))
    staging.replace(path)


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """The JSON at `path`; when there is none, `compute()`'s result, written there first (`write_json`)."""
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    write_json(path, result)
    return result


def gap_closed(value: float, original: float, pruned: float) -> float:
    """Share of the pruning gap closed: (pruned - value) / (pruned - original), for a lower-is-better metric (NLL,
    perplexity); 1 is the original's value, 0 the pruned model's, negative worse than pruned."""
    return (pruned - value) / (pruned - original)


def peak_rss_gb() -> float:
    """This process's peak resident set size so far (VmHWM of /proc/self/status), in GB (10^9 bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError("no VmHWM in /proc/self/status")


def make_pruned(pruned: str, original: str, calibration_samples: int, seqlen: int) -> None:
    """When the folder `pruned` is missing, make it with `paser prune --method wanda --sparsity 0.5`, calibrated on
    `calibration_samples` windows of `seqlen` tokens of Alpaca-52K."""
    if Path(pruned).exists():
        return
    from paser.data.paths import data_file

    calibration = str(data_file(ALPACA_FILE))
    subprocess.run(
        [sys.executable, "-m", "paser.pipelines.cli", "prune", "--model", original, "--method", "wanda",
         "--sparsity", "0.5", "--calibration", calibration, "--calibration-samples", str(calibration_samples),
         "--seqlen", str(seqlen), "--out", pruned],
        check=True,
    )  # fmt: skip
