"""Fixtures of the pipeline tests: the Jupyter kernel the notebook tests execute with."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "cluster_budgets.ipynb"


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    """The "python3" kernel of this interpreter; installed into a scratch Jupyter path when the environment
    has no kernel spec of that name (ipykernel normally ships one into sys.prefix)."""
    if "python3" not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(prefix=str(tmp_path / "jupyter"))
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    assert "python3" in KernelSpecManager().find_kernel_specs()


def execute_notebook(run_dir: Path, workdir: Path, monkeypatch) -> nbformat.NotebookNode:
    """Execute the cluster-budgets notebook on `run_dir` (through PASER_RUN_DIR) and return it with outputs."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("PASER_RUN_DIR", str(run_dir))
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return notebook
