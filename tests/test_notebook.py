"""``analysis/explore_records.ipynb`` runs top to bottom (nbclient, in a temporary folder): on
tiny records it makes itself, on the demo's records when they exist, and on given records through
its ``parameters`` cell.
It is committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _records_fixture import shared_explorer_root

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "analysis" / "explore_records.ipynb"


def _execute(folder: Path, **parameters: object):
    """Run the notebook in ``folder``; parameters go in a cell after the ``parameters`` cell,
    as a parameterising runner injects them."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    if parameters:
        index = next(
            i
            for i, c in enumerate(nb.cells)
            if "parameters" in c.get("metadata", {}).get("tags", [])
        )
        source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(index + 1, cell)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()
    return nb


def _text(nb) -> str:  # noqa: ANN001 - a NotebookNode
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def _images(nb) -> int:  # noqa: ANN001 - a NotebookNode
    return sum(
        "image/png" in output.get("data", {})
        for cell in nb.cells
        for output in cell.get("outputs", [])
    )


def test_committed_without_outputs() -> None:
    data = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in data["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    tags = [c.get("metadata", {}).get("tags", []) for c in data["cells"]]
    assert ["parameters"] in tags
    NOTEBOOK.read_text(encoding="ascii")  # ASCII only


def test_runs_on_records_it_makes(tmp_path) -> None:
    nb = _execute(tmp_path)
    text = _text(nb)
    assert "static network:" in text and "paths:" in text  # the extraction and its YAML
    assert "real MMACs avg" in text  # the Table-1-style table, in the unit rule of the reports
    assert "Per-image real cost varies" in text  # the route adaptivity figures
    assert "papermill" not in json.dumps(nbformat.writes(nb))  # not installed here: not suggested
    assert _images(nb) == 2  # Fig. 5 and the common network
    assert not any(tmp_path.iterdir())  # nothing written where it ran


def test_runs_on_given_records(tmp_path, tmp_path_factory) -> None:
    records = shared_explorer_root(tmp_path_factory) / "records" / "tiny"
    nb = _execute(tmp_path, records_dir=str(records), threshold=0.5)
    text = _text(nb)
    assert "Records('tiny', images=6" in text
    assert "more than 50% of 6 images" in text


def test_opens_the_demo_records_when_they_exist(tmp_path, tmp_path_factory) -> None:
    import shutil

    source = shared_explorer_root(tmp_path_factory) / "records" / "tiny"
    shutil.copytree(source, tmp_path / "runs" / "demo" / "records" / "budget")
    nb = _execute(tmp_path)
    text = _text(nb)
    assert "using the demo's records" in text and "Records('tiny', images=6" in text
