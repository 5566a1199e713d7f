"""Recovery against compute (issue 26): the share of the pruning gap each finished `bench/recipe_tuning.py` setting
closes, against its estimated training FLOPs, per objective and capacity (LoRA rank, full fine-tuning).

Reads a `recipe_tuning.py --out` folder (its `baselines/` and `settings/*.json`), groups the settings into lines
by (objective, adapter, LoRA rank, learning rate, temperature, CE weight) and orders each line by FLOPs, so points
of one line differ only in how many rows they trained on (`train_rows`). Prints a table per set and writes
`curve.png` (gap closed on dev and test against FLOPs, log scale) and `curve.json` into `--into`.

    python bench/recovery_curve.py --out /work/tune-out --into bench/results/recovery_curve
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recovery_bench import gap_closed, write_json  # noqa: E402

SETS = ("dev", "test", "t0", "gsm8k")


def line_of(config: dict) -> str:
    """The curve a setting belongs to: what it trained with, but not on how many rows."""
    capacity = "full" if config.get("adapter") == "full" else f"LoRA r{config.get('lora_r', 8)}"
    parts = [config["objective"], capacity, f"lr {config.get('learning_rate')}"]
    if config.get("temperature", 1.0) != 1.0:
        parts.append(f"T {config['temperature']}")
    if config.get("sft_weight"):
        parts.append(f"CE {config['sft_weight']}")
    return ", ".join(parts)


def load_points(out: Path, default_rows: int, patterns: list[str]) -> tuple[list[dict], dict, dict]:
    original = json.loads((out / "baselines" / "original.json").read_text())
    pruned = json.loads((out / "baselines" / "pruned.json").read_text())
    points = []
    for path in sorted((out / "settings").glob("*.json")):
        if patterns and not any(fnmatch.fnmatch(path.stem, pattern) for pattern in patterns):
            continue
        payload = json.loads(path.read_text())
        compute = payload.get("compute") or {}
        flops = compute.get("flops", {}).get("total")
        if flops is None:
            continue
        closed = {
            name: gap_closed(payload["scores"][name]["nll"], original[name]["nll"], pruned[name]["nll"])
            for name in SETS
        }
        points.append(
            {
                "setting": path.stem,
                "line": line_of(payload["config"]),
                "rows": payload.get("train_rows", default_rows),
                "steps": payload["steps"],
                "trained_tokens": compute.get("tokens", {}).get("trained"),
                "flops": flops,
                "train_seconds": payload["train_seconds"],
                "closed": closed,
            }
        )
    points.sort(key=lambda point: (point["line"], point["flops"]))
    return points, original, pruned


def plot(points: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    figure = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(figure)
    for index, name in enumerate(("dev", "test")):
        axes = figure.add_subplot(1, 2, index + 1)
        for line in sorted({point["line"] for point in points}):
            members = [point for point in points if point["line"] == line]
            axes.plot(
                [point["flops"] for point in members],
                [100 * point["closed"][name] for point in members],
                marker="o",
                label=line,
            )
            for point in members:
                axes.annotate(f"{point['rows']}", (point["flops"], 100 * point["closed"][name]), fontsize=7)
        axes.set_xscale("log")
        # Only the decades are labelled: the minor ticks' labels (2e13, 3e13, ...) overlap on a short axis.
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("estimated training FLOPs (teacher included)")
        axes.set_ylabel(f"% of the pruning gap closed ({name})")
        axes.set_title(f"{name} (labels: training rows)")
        axes.grid(True, alpha=0.3)
        if index == 0:
            axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="a recipe_tuning.py --out folder")
    parser.add_argument("--into", required=True, help="folder for curve.png and curve.json")
    parser.add_argument("--train-rows", type=int, default=160, help="rows of the settings without train_rows")
    parser.add_argument("--settings", nargs="*", default=[], help="setting names or patterns (default: all)")
    args = parser.parse_args()
    points, original, pruned = load_points(Path(args.out), args.train_rows, args.settings)
    into = Path(args.into)
    into.mkdir(parents=True, exist_ok=True)
    print(f"{'line':<34} {'rows':>5} {'steps':>5} {'FLOPs':>9} " + " ".join(f"{name:>7}" for name in SETS))
    for point in points:
        closed = " ".join(f"{100 * point['closed'][name]:>6.1f}%" for name in SETS)
        print(f"{point['line']:<34} {point['rows']:>5} {point['steps']:>5} {point['flops']:>9.2e} {closed}")
    write_json(into / "curve.json", {"original": original, "pruned": pruned, "points": points})
    if points and all(math.isfinite(point["flops"]) for point in points):
        plot(points, into / "curve.png")


if __name__ == "__main__":
    main()
