"""The built wheel installs one top-level package, `paser`, and works from a folder that holds a user's own
`data.py`, `pipelines.py` and `selection/` package (names that shadowed paser's folders before they moved under
`paser.`).

The wheel is built from this checkout without build isolation (no index needed) and installed with `--no-deps`
into a fresh virtual environment; the dependencies come from the environment running the tests, through a `.pth`
line naming its site-packages (a path line adds the folder without processing its own `.pth` files, so this
checkout's editable install does not leak in: the test checks that `paser` is imported from the fresh
environment).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_FIXTURE = REPO / "tests" / "fixtures" / "tiny_run"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    # build from a copy, so the build's own build/ and *.egg-info never land in the checkout
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", "runs", "studies", "tests")
    shutil.copytree(REPO, source / "paser", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    subprocess.run([*command, str(source / "paser")], check=True, capture_output=True, text=True)
    (built,) = out.glob("paser-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("env")
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # install the wheel by unpacking it (what pip does for a pure wheel), so no network or pip in the new env
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    scripts = env / "bin" / "paser"
    scripts.write_text(f"#!{python}\nimport sys\nfrom paser.pipelines.cli import main\nsys.exit(main())\n")
    scripts.chmod(0o755)
    (Path(site) / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A notebook folder with the generic names a user is likely to have."""
    (tmp_path / "data.py").write_text("raise RuntimeError('the user data.py was imported')\n")
    (tmp_path / "pipelines.py").write_text("raise RuntimeError('the user pipelines.py was imported')\n")
    (tmp_path / "selection").mkdir()
    (tmp_path / "selection" / "__init__.py").write_text("raise RuntimeError('the user selection was imported')\n")
    return tmp_path


def test_the_wheel_installs_only_the_paser_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [name for name in names if name.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["paser"]
        entry_points = archive.read(top_level.replace("top_level.txt", "entry_points.txt")).decode()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"paser"}
    for module in ("paser/selection/cluster.py", "paser/recovery/train.py", "paser/pipelines/cli.py"):
        assert module in names
    assert "paser/data/demo.py" in names and "paser/pipelines/configs/run/demo.yaml" in names
    assert "paser = paser.pipelines.cli:main" in entry_points


def test_the_installed_cli_and_api_work_beside_a_users_data_py(fresh_env, user_folder):
    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=user_folder, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    paser = str(fresh_env / "bin" / "paser")
    assert "usage: paser" in run(paser, "--help")
    assert "usage: paser run" in run(paser, "run", "--help")
    code = (
        "import paser, paser.pipelines.run, paser.data.heldout; "
        f"results = paser.load_run({str(RUN_FIXTURE)!r}); "
        "print(paser.__file__); print(sorted(results.strategies))"
    )
    printed = run(str(fresh_env / "bin" / "python"), "-c", code).splitlines()
    assert printed[0].startswith(str(fresh_env)), "paser was not imported from the fresh environment"
    assert printed[1] == "['paser', 'random']"
