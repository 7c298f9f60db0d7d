"""Notebook conventions (DESIGN.md): a markdown title first, a tagged, fully documented parameters
cell second, no committed outputs, and the .ipynb in sync with its jupytext py:percent source."""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PARAM_LINE = re.compile(r"^([A-Za-z_]\w*)\s*:\s*\w+")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path: Path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    params_cell = nb.cells[1]
    assert "parameters" in params_cell.metadata.get("tags", []), "cell 2 must be tagged 'parameters'"
    declared = [m.group(1) for line in params_cell.source.splitlines() if (m := PARAM_LINE.match(line))]
    inferred = papermill.inspect_notebook(str(path))
    assert declared == list(inferred), f"papermill could not parse {set(declared) - set(inferred)}"
    for name, info in inferred.items():
        assert info["inferred_type_name"] != "None", f"{name} has no type annotation"
        assert info["help"].strip(), f"{name} has no trailing comment"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs are committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_py_percent_source(path: Path):
    source = path.with_suffix(".py")
    assert source.exists(), f"{source.name} (jupytext py:percent pair) is missing"
    paired = jupytext.read(source)
    nb = nbformat.read(path, as_version=4)
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells], "run `make notebooks` to resync"
