"""Jupyter's own tools are in the project's environment, as ``notebooks/README.md`` says: ``make
install`` syncs the ``notebooks`` dependency group (JupyterLab, Notebook, nbconvert), so
``jupyter lab``, ``jupyter notebook`` and ``jupyter nbconvert`` exist next to the interpreter, and
the README's command for clearing outputs leaves a notebook as the committed-notebook test wants."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

JUPYTER = Path(sys.executable).with_name("jupyter")
NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"

pytestmark = pytest.mark.slow  # each test starts a Jupyter tool: ~4 s of imports on a busy 2-core machine


@pytest.mark.parametrize("tool", ["lab", "notebook", "nbconvert"])
def test_given_the_project_environment_when_a_jupyter_tool_is_asked_its_version_then_it_answers(tool):
    run = subprocess.run([str(JUPYTER), tool, "--version"], capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stderr[-2000:]
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", run.stdout.strip().splitlines()[-1]), run.stdout


def test_given_a_notebook_with_outputs_when_nbconvert_clears_it_then_it_is_committable(tmp_path):
    path = tmp_path / "notebook.ipynb"
    shutil.copy(sorted(NOTEBOOK_DIR.glob("*.ipynb"))[0], path)
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for count, cell in enumerate(code, start=1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="C000001\n")]
    nbformat.write(notebook, path)

    run = subprocess.run(
        [str(JUPYTER), "nbconvert", "--clear-output", "--inplace", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr[-2000:]
    cleared = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in cleared] == [None] * len(code)
    assert [cell.outputs for cell in cleared] == [[]] * len(code)
    assert [cell.source for cell in cleared] == [cell.source for cell in code]
