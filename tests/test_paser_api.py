"""`import paser`: the public Python API, a thin face over the pipelines' functions."""

import json
import subprocess
import sys

import pytest

import paser
from paser.data.demo import demo_rows
from tests.pipelines.fake_run import build_fake_run


def test_version_is_the_distributions():
    from importlib import metadata

    assert paser.__version__ == metadata.version("paser")


def test_import_paser_loads_neither_torch_nor_transformers():
    code = "import sys, paser; print(sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.fixture(scope="module")
def selected(tiny_model_dir, perturbed_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    corpus = folder / "rows.jsonl"
    corpus.write_text("\n".join(json.dumps(row) for row in demo_rows(rows_per_skill=8)) + "\n")
    config = folder / "select.yaml"
    config.write_text(f"models:\n  original: {tiny_model_dir}\n  dtype: fp32\nclustering:\n  n_clusters: 4\n")
    return paser.select(
        config,
        {
            "models.pruned": str(perturbed_model_dir),
            "corpus.path": str(corpus),
            "selection.budget": 10,
            "out": str(folder / "out"),
        },
    )


def test_select_returns_the_selection_written_to_its_folder(selected):
    written = [json.loads(line) for line in (selected.out_dir / "selection.jsonl").read_text().splitlines()]
    assert len(selected.selection) == 10
    assert selected.selection["id"].tolist() == [row["id"] for row in written]
    assert selected.stats["config"]["models"]["dtype"] == "fp32"


def test_select_writes_a_dataset_others_load_without_paser(selected):
    from datasets import load_from_disk

    rows = load_from_disk(str(selected.out_dir / "dataset"))
    assert rows["id"] == selected.selection["id"].tolist()
    assert {"instruction", "output", "id", "cluster", "cds", "ies"} <= set(rows.column_names)
    assert rows["cds"] == pytest.approx(selected.selection["cds"].tolist())


def test_the_dataset_card_has_a_yaml_header_and_the_cluster_table(selected):
    import yaml

    text = (selected.out_dir / "dataset" / "README.md").read_text()
    lines = text.splitlines()
    end = lines.index("---", 1)
    header = yaml.safe_load("\n".join(lines[1:end]))
    assert header["license"] == "unknown"
    assert header["task_categories"] == ["text-generation"]
    assert header["size_categories"] == ["n<1K"]
    assert header["tags"] == ["paser", "data-selection"]
    assert "| cluster | size | mean CDS | budget | selected |" in text
    table = [line for line in lines if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert sum(int(line.split("|")[5]) for line in table) == 10
    assert "load_from_disk" in text
    assert "file:" in text  # the source's content digest


def test_select_takes_a_config_object_and_a_rerun_replaces_the_dataset(selected):
    from datasets import load_from_disk

    from paser.pipelines.config import SelectConfig, build_config

    config = build_config(SelectConfig, selected.stats["config"])
    again = paser.select(config, {"selection.budget": 5})
    assert len(load_from_disk(str(again.out_dir / "dataset"))) == 5
    assert not [item.name for item in again.out_dir.iterdir() if item.name.startswith(".dataset")]


def test_load_run_reads_a_run_folder(tmp_path):
    run = paser.load_run(build_fake_run(tmp_path / "run"))
    assert set(run.combos()["strategy"]) == {"paser", "random"}


def test_unknown_select_key_is_refused_naming_it(tmp_path):
    from paser.pipelines.config import ConfigError

    with pytest.raises(ConfigError, match="nope"):
        paser.select(None, {"selection.nope": 1})
