"""Every committed study's config loads and passes the run's checks (strategies, variants, held-out sets)."""

from pathlib import Path

import pytest

from paser.pipelines.run import Run, check_run, combos, load_run_config

ROOT = Path(__file__).resolve().parents[2] / "studies"
# Every study's configs, and the planned settings kept inside a study folder (setting-b/config.yaml).
STUDIES = sorted([*ROOT.glob("*/*.yaml"), *ROOT.glob("*/setting-*/*.yaml")])


@pytest.mark.parametrize("path", STUDIES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_a_study_config_loads_and_its_sweep_checks(path, tmp_path):
    config = load_run_config(path)
    assert combos(config)
    if not Path(config.corpus.path).exists():
        pytest.skip(f"shared data {config.corpus.path} is absent")
    check_run(Run(config, tmp_path / "run"))


def test_there_is_a_study():
    assert STUDIES
