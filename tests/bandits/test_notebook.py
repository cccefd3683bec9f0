"""notebooks/bandit_phase_transition.ipynb runs top to bottom at reduced sizes."""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = (
    pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "bandit_phase_transition.ipynb"
)


def test_bandit_notebook_executes_without_errors(monkeypatch):
    monkeypatch.setenv("ASYMRE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "small run" in text  # the environment variable reached the kernel
