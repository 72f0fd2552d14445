"""Notebooks under notebooks/ run headless, top to bottom, in this interpreter's kernel (CI runs this).

They are committed with their outputs (a reader sees results without running anything), kept small;
the test runs them from the repository root (they are stored as run from their own folder), so
both working directories are covered, with MLflow runs going to a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
MAX_BYTES = 300_000


def test_there_is_a_quickstart() -> None:
    assert any(p.name == "quickstart.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_with_small_outputs_and_runs_headless(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    stored = json.loads(path.read_text())
    code = [c for c in stored["cells"] if c["cell_type"] == "code"]
    with_outputs = sum(bool(c.get("outputs")) for c in code)  # a setup cell may print nothing
    assert code[-1].get("outputs") and with_outputs >= len(code) - 1, f"{path}: run it, commit its outputs"
    assert path.stat().st_size < MAX_BYTES, f"{path}: outputs too large"
    assert not [o for c in code for o in c["outputs"] if o.get("output_type") == "error"]
    assert not [o for c in code for o in c["outputs"] if o.get("name") == "stderr"], "warnings in the outputs"

    monkeypatch.setenv("XMC_NOTEBOOK_RUNS", str(tmp_path))  # the kernel inherits it: no writes to runs/
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    nb = nbformat.read(path, as_version=4)
    # "python3" is ipykernel's native kernel: this interpreter (the venv with xmc), not the PATH's python3
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert any(o.get("data", {}).get("image/png") for o in code[-1].outputs)  # the plots rendered
    assert (tmp_path / "mlflow.db").is_file()  # the run it made and showed
