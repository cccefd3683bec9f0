"""Every notebook in notebooks/ runs top to bottom at reduced size (ASYMRE_NOTEBOOK_SMALL=1)."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # each notebook starts a kernel and trains: minutes in all

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMRE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("ASYMRE_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device in the kernel
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
