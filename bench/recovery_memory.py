"""Peak resident memory and seconds per step of `paser recover` (sft and distill) with its defaults, before and after
the chunked response loss, side by side; each run in its own process.

The rows: the `--long` longest Alpaca-52K rows (by characters; they reach the 1,024-token cut) and `--rows` minus
those seeded random ones, written to `--out/rows.jsonl`; the default length-grouped sampler puts the longest batch
first. Every run is `paser.recovery.train.recover` with the defaults (batch 8, rows up to 1,024 tokens, LoRA r 8,
the dtype `auto` picks: fp32 on a CPU without bf16) and `--steps` optimiser steps, in a fresh process whose peak
resident set (VmHWM of /proc/self/status) is read when it ends: loading, training, merging and the re-masking
check included. `--before REV` runs the code of that git revision from a worktree (`git worktree add`, in
`--out`), imported as `paser` ahead of the installed checkout; the other runs use this checkout, with gradient
checkpointing off and on. A missing `--pruned` folder is made first with `paser prune --method wanda` (50%, 8
calibration windows of 512 tokens: memory and speed do not depend on the pruning's quality).

    python bench/recovery_memory.py --pruned /tmp/smollm2-wanda50 --out /tmp/recovery-memory --before 26b5441
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.recovery_bench import ALPACA_FILE, make_pruned, peak_rss_gb  # noqa: E402

# What each run is: the code (this checkout, or --before's revision) and the TrainConfig fields it changes from that
# code's defaults.
VARIANTS = {
    "before": {"code": "before", "overrides": {}},
    "after": {"code": "after", "overrides": {}},
    "after-no-trim": {"code": "after", "overrides": {"trim_cpu_memory": False}},
    "after-no-checkpointing": {"code": "after", "overrides": {"gradient_checkpointing": False}},
}
# The top-level folders that install as paser.<name> (pyproject's package-dir), besides paser/ itself.
PACKAGE_FOLDERS = {
    "selection": "selection",
    "recovery": "recovery",
    "pipelines": "pipelines",
    "data": "data",
    "common": "common",
}


def write_rows(path: Path, rows: int, long: int, seed: int) -> dict[str, int]:
    """The `long` longest Alpaca rows plus `rows - long` seeded random others, as JSON Lines with ids."""
    from paser.data.paths import data_file

    with gzip.open(data_file(ALPACA_FILE), "rt", encoding="utf-8") as stream:
        records = [json.loads(line) for line in stream]
    for index, record in enumerate(records):
        record["id"] = f"alpaca-{index}"
    by_length = sorted(records, key=lambda r: len(r["instruction"]) + len(r["input"]) + len(r["output"]))
    longest, others = by_length[len(by_length) - long :], by_length[: len(by_length) - long]
    chosen = longest + random.Random(seed).sample(others, rows - long)
    with path.open("w", encoding="utf-8") as stream:
        for record in chosen:
            stream.write(json.dumps(record) + "\n")
    return {"rows": len(chosen), "long": long}


def before_tree(revision: str, out: Path) -> Path:
    """A folder to put first on PYTHONPATH so `import paser` gives `revision`'s code: a worktree of it and a
    `paser` package of links to the worktree's folders (as pyproject's package-dir maps them)."""
    worktree = out / f"before-{revision}"
    if not worktree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), revision], check=True)
    package = out / "before-path" / "paser"
    package.mkdir(parents=True, exist_ok=True)
    for source in (worktree / "paser").iterdir():
        link = package / source.name
        if not link.exists():
            link.symlink_to(source)
    for name, folder in PACKAGE_FOLDERS.items():
        link = package / name
        if not link.exists() and (worktree / folder).is_dir():
            link.symlink_to(worktree / folder)
    return package.parent


def child(spec: dict) -> None:
    """One recovery run as `spec` says; prints `RESULT {json}` with its peak RSS and seconds per step."""
    import resource

    import torch

    import paser.recovery.objectives.sft as sft_module
    from paser.recovery.config import TrainConfig
    from paser.recovery.train import recover

    torch.set_num_threads(spec["threads"])
    config = TrainConfig(
        objective=spec["objective"], max_steps=spec["steps"], show_progress=False, device="cpu", **spec["overrides"]
    )
    original = spec["original"] if spec["objective"] == "distill" else None
    start = time.perf_counter()
    result = recover(spec["pruned"], spec["rows"], spec["run_out"], config, original=original)
    record = result.record
    print(
        "RESULT "
        + json.dumps(
            {
                "peak_rss_gb": round(peak_rss_gb(), 2),
                "seconds_per_step": round(record["seconds"]["train"] / record["training"]["steps"], 1),
                "wall_s": round(time.perf_counter() - start, 1),
                "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
                "first_loss": record["training"]["first_loss"],
                "dtype": record["dtype"],
                "code_from": str(Path(sft_module.__file__).resolve().parents[2]),
            }
        ),
        flush=True,
    )


def _first_to_go(limit_bytes: int | None) -> None:
    """In the child before it runs: make it the OOM killer's first choice, and cap its address space if asked."""
    import resource

    Path("/proc/self/oom_score_adj").write_text("1000")
    if limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _high_water_gb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if line is None else int(line.split()[1]) * 1024 / 1e9


def run_child(spec: dict, pythonpath: Path | None, memory_limit_gb: float | None) -> dict:
    """Run `spec` in a fresh process that the kernel's OOM killer takes first (on a shared machine a run that needs
    too much dies alone), its address space capped at `memory_limit_gb` if given. Its peak resident set is also
    polled from outside, so a run that dies still says how far it got (`peak_seen_gb`)."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    if pythonpath is not None:
        environment["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])
    limit = int(memory_limit_gb * 1e9) if memory_limit_gb else None
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            command, env=environment, stdout=stdout, stderr=stderr, text=True, preexec_fn=lambda: _first_to_go(limit)
        )
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _high_water_gb(process.pid) or 0.0)
            time.sleep(0.5)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        errors = [line for line in err.splitlines() if "Error" in line or "error" in line]
        reason = "killed (SIGKILL: out of memory)" if process.returncode == -9 else (errors or ["no error line"])[-1]
        return {"error": f"exit {process.returncode}: {reason[:300]}", "peak_seen_gb": round(peak, 2)}
    return json.loads(lines[-1][len("RESULT ") :])


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    return f"{model}, {os.cpu_count()} cores, {int(memory) / 1e6:.1f} GB RAM, {platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruned", help="pruned checkpoint folder (made with paser prune --method wanda if missing)")
    parser.add_argument(
        "--original", default="smollm2", help="original model: the pruned model's source, distill's teacher"
    )
    parser.add_argument("--out", help="work folder (rows, runs, the before worktree); not in the repository")
    parser.add_argument("--before", help="git revision of the code before (its runs are skipped without it)")
    parser.add_argument("--objectives", default="sft,distill", help="comma-separated objectives")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per run")
    parser.add_argument("--rows", type=int, default=24, help="training rows")
    parser.add_argument("--long", type=int, default=8, help="of which the longest Alpaca rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random rows")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument(
        "--memory-limit-gb", type=float, help="cap each run's address space (GB); default: none, the OOM killer's pick"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if not args.pruned or not args.out:
        parser.error("--pruned and --out are required")
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}; torch threads per run: {args.threads}")
    print(f"after: this checkout ({head.stdout.strip()}, working tree); before: {args.before or 'not run'}")
    make_pruned(args.pruned, args.original, calibration_samples=8, seqlen=512)
    rows_file = out / "rows.jsonl"
    print(f"rows: {write_rows(rows_file, args.rows, args.long, args.seed)} -> {rows_file}")
    before_path = before_tree(args.before, out) if args.before else None
    results = []
    for objective in args.objectives.split(","):
        for name in args.variants.split(","):
            variant = VARIANTS[name]
            if variant["code"] == "before" and before_path is None:
                continue
            spec = {
                "variant": name,
                "objective": objective,
                "overrides": variant["overrides"],
                "pruned": args.pruned,
                "original": args.original,
                "rows": str(rows_file),
                "run_out": str(out / f"{objective}-{name}"),
                "steps": args.steps,
                "threads": args.threads,
            }
            pythonpath = before_path if variant["code"] == "before" else None
            result = {"variant": name, "objective": objective}
            result |= run_child(spec, pythonpath, args.memory_limit_gb)
            print(json.dumps(result), flush=True)
            results.append(result)
    print()
    print("| objective | variant | peak RSS (GB) | s/step | first loss | run wall s | run CPU s |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        cells = [result["objective"], result["variant"]]
        if "error" in result:
            cells += [f"> {result['peak_seen_gb']:.2f}: {result['error'][:60]}", "", "", "", ""]
        else:
            loss = result["first_loss"]
            cells += [
                f"{result['peak_rss_gb']:.2f}",
                f"{result['seconds_per_step']:.1f}",
                "n/a" if loss is None else f"{loss:.4f}",
                f"{result['wall_s']:.0f}",
                f"{result['cpu_s']:.0f}",
            ]
        print("| " + " | ".join(cells) + " |")
    print(f"\nwall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
