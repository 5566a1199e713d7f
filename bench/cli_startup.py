"""Start-up time of the `paser` command: `paser --help`, each `paser <command> --help` and an early refusal.

Each command line is a fresh process of the `paser` console script next to this Python (or `--paser`), timed
from start to exit: wall seconds, and the CPU seconds (user + system) the operating system charged it, which a
busy machine stretches less than the wall clock. The early refusal is `paser select` on a corpus file that does
not exist. One warm-up round is not counted (the first start reads the files from disk); then `--runs` rounds,
every command line in turn, so a drift of the machine's speed spreads over all of them.

`--baseline DIR` times a checkout of an earlier commit beside this one, the two alternating command by command
(make one with `git worktree add --detach DIR COMMIT`). Its packages are linked under a scratch folder as
`paser` (`paser/__init__.py` and the folders pyproject maps to `paser.*`) and put first on PYTHONPATH, so the
same console script and environment import that checkout instead of this one.

    python bench/cli_startup.py --runs 7
    python bench/cli_startup.py --runs 7 --baseline /tmp/startup-before
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = ["select", "prune", "eval", "recover", "run", "report", "data"]
# The folders pyproject maps onto paser.<name> (common/ since issue 28).
PACKAGE_FOLDERS = ["common", "data", "selection", "recovery", "pipelines"]


def command_lines(paser: str, scratch: Path) -> dict[str, list[str]]:
    """The command lines timed, by label."""
    lines = {"paser --help": [paser, "--help"]}
    lines.update({f"paser {command} --help": [paser, command, "--help"] for command in COMMANDS})
    corpus, out = str(scratch / "missing.jsonl"), str(scratch / "out")
    lines["paser select --corpus missing.jsonl (refused)"] = [paser, "select", "--corpus", corpus, "--out", out]
    return lines


def link_checkout(checkout: Path, scratch: Path) -> Path:
    """A folder that imports `checkout` as `paser`: its paser/ files and its mapped folders linked under
    `scratch/paser`. Returns the folder to put on PYTHONPATH."""
    package = scratch / "paser"
    package.mkdir(parents=True)
    for entry in (checkout / "paser").iterdir():
        (package / entry.name).symlink_to(entry)
    for folder in PACKAGE_FOLDERS:
        if (checkout / folder).is_dir():
            (package / folder).symlink_to(checkout / folder)
    return scratch


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (user + system) from start to exit of `argv`, and its exit status."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, process.returncode


def summary(times: list[float]) -> str:
    return f"{min(times):5.2f} {statistics.median(times):6.2f} {max(times):5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="counted rounds (default 7)")
    parser.add_argument(
        "--paser", default=str(Path(sys.executable).with_name("paser")), help="the console script to time"
    )
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier commit, timed beside this one")
    args = parser.parse_args()

    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, {args.paser}")
    print(f"# load average at start {os.getloadavg()[0]:.1f}; {args.runs} rounds after 1 warm-up")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        lines = command_lines(args.paser, scratch)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        versions = {"this checkout": env}
        if args.baseline is not None:
            linked = link_checkout(args.baseline.resolve(), scratch / "baseline")
            versions["baseline"] = {**env, "PYTHONPATH": str(linked)}
            print(f"# baseline: {args.baseline}")
        wall = {(version, label): [] for version in versions for label in lines}
        cpu = {key: [] for key in wall}
        exits = {key: set() for key in wall}
        for round_index in range(args.runs + 1):
            for label, argv in lines.items():
                for version, version_env in versions.items():
                    seconds, cpu_seconds, status = time_once(argv, version_env)
                    exits[version, label].add(status)
                    if round_index:
                        wall[version, label].append(seconds)
                        cpu[version, label].append(cpu_seconds)
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    width = max(map(len, lines))
    print(f"{'command':<{width}}  {'version':<13}  exit  wall s: min median max  cpu s: min median max")
    for label in lines:
        for version in versions:
            key = (version, label)
            status = ",".join(map(str, sorted(exits[key])))
            print(f"{label:<{width}}  {version:<13}  {status:>4}  {summary(wall[key]):>25}  {summary(cpu[key]):>24}")


if __name__ == "__main__":
    main()
