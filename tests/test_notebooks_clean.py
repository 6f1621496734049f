"""Notebooks are stored clean: no outputs, no execution counts, a kernelspec, valid nbformat."""

import json
from pathlib import Path

import pytest

# the sources, the learner's edition and the Chinese edition (notebooks/zh/...)
ROOT = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(ROOT.rglob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_is_stored_without_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} are stored with outputs or execution "
                       "counts; clear them (Edit > Clear Outputs of All Cells) and save")
    assert notebook["metadata"].get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: add kernelspec metadata so JupyterLab opens it without a kernel picker")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_is_valid_nbformat(path):
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.read(path, as_version=4))
