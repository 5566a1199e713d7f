"""A run folder is as readable as the umask says: every file paser writes gets the mode an ordinary `open()` gives
under the umask, every folder the mode `mkdir` gives (staged writes included: mkstemp's 0600, mkdtemp's 0700 and
safetensors' owner-only files are not what is published)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from paser.pipelines.cli import main
from tests.pipelines.test_faults import _run_command

UMASKS = {"umask022": 0o022, "umask027": 0o027}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, perturbed_model_dir) -> dict[str, Path]:
    """The tiny run (`paser run`, report included), once under each umask."""
    root = tmp_path_factory.mktemp("modes")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folders = {}
    try:
        for name, umask in UMASKS.items():
            folders[name] = root / name
            argv = _run_command(root, tiny_model_dir, perturbed_model_dir, folders[name])[3:]  # after `-m module`
            previous = os.umask(umask)
            try:
                assert main(argv) == 0
            finally:
                os.umask(previous)
    finally:
        torch.set_num_threads(threads)
    return folders


@pytest.mark.parametrize("name", UMASKS)
def test_every_file_and_folder_of_a_run_gets_the_mode_its_umask_gives(runs, name):
    out, umask = runs[name], UMASKS[name]
    written = [out, *out.rglob("*")]
    # What the modes come from: datasets, peft and transformers (safetensors), plots, shards, the report.
    assert {"dataset", "adapter", "merged", "report_files", "score_shards", "report.html"} <= {p.name for p in written}
    expected = {True: 0o777 & ~umask, False: 0o666 & ~umask}
    wrong = [
        f"{oct(stat.S_IMODE(path.stat().st_mode))} {path.relative_to(out)}"
        for path in written
        if stat.S_IMODE(path.stat().st_mode) != expected[path.is_dir()]
    ]
    assert wrong == []
