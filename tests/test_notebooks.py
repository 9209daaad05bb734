"""The notebooks: stored clean, Colab-ready, and executed top to bottom without an error.

Each notebook runs in a fresh kernel of the interpreter running the tests (with this
checkout's gbopt first on its path), in a temporary working directory, with matplotlib's
non-interactive Agg backend. A cell appended to each one draws every figure (so that a
bad label fails here, not in a reader's browser) and checks that each plot has a title,
labelled axes, a legend where it draws several labelled curves and a colour bar where it
draws a colour map.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import gbopt

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 300  # per cell; each notebook takes well under a minute on two CPU cores

COLAB_INSTALL = '%pip install -q "gbopt[{extras}] @ git+https://github.com/gbopt/gbopt"'

CHECK_FIGURES = """
import matplotlib.pyplot as plt
from matplotlib.collections import QuadMesh
from matplotlib.image import AxesImage

problems = []
assert plt.get_fignums(), "the notebook draws no figure"
for number in plt.get_fignums():
    fig = plt.figure(number)
    fig.canvas.draw()  # renders every text: a bad LaTeX label raises here
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        where = f"figure {number}, axes {ax.get_title() or fig.get_suptitle()!r}"
        if not (ax.get_title() or fig.get_suptitle()):
            problems.append(f"{where}: no title")
        if not ax.get_xlabel() or not ax.get_ylabel():
            problems.append(f"{where}: an axis has no label")
        labelled = [a for a in [*ax.lines, *ax.collections] if not a.get_label().startswith("_")]
        if len(labelled) >= 2 and ax.get_legend() is None and not fig.legends:
            problems.append(f"{where}: {len(labelled)} labelled curves and no legend")
        for mappable in [*ax.images, *(c for c in ax.collections if isinstance(c, QuadMesh))]:
            if mappable.colorbar is None:
                problems.append(f"{where}: a colour map without a colour bar")
assert not problems, "\\n".join(problems)
print(f"checked {len(plt.get_fignums())} figures")
"""


def test_the_figure_check_catches_unlabelled_plots():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    try:
        fig, ax = plt.subplots()
        ax.plot([0, 1], label="a")
        ax.plot([1, 0], label="b")
        ax.set_title("two lines")
        with pytest.raises(AssertionError, match="an axis has no label") as failure:
            exec(CHECK_FIGURES, {})
        assert "2 labelled curves and no legend" in str(failure.value)

        ax.set(xlabel="x", ylabel="y")
        ax.legend()
        ax2 = fig.add_axes((0.6, 0.6, 0.2, 0.2), title="inset", xlabel="i", ylabel="j")
        ax2.pcolormesh([[1.0, 2.0], [3.0, 4.0]])
        with pytest.raises(AssertionError, match="a colour map without a colour bar"):
            exec(CHECK_FIGURES, {})
        fig.colorbar(ax2.collections[0], ax=ax2)
        exec(CHECK_FIGURES, {})
    finally:
        plt.close("all")


def test_there_are_seven_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean_and_colab_ready(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: stored with outputs"
            )
    first = nb.cells[0]
    assert first.cell_type == "code" and 'if "google.colab" in sys.modules:' in first.source
    extras = "notebooks,flax" if "flax" in path.stem else "notebooks"
    assert COLAB_INSTALL.format(extras=extras) in first.source
    title = nb.cells[1]
    url = f"https://colab.research.google.com/github/gbopt/gbopt/blob/main/notebooks/{path.name}"
    assert title.cell_type == "markdown" and title.source.startswith("# ") and url in title.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_cpu(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK_FIGURES))
    package_root = str(Path(gbopt.__file__).resolve().parents[1])
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
    )
    env.pop("XLA_FLAGS", None)  # the notebooks run on one CPU device, as in Colab
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, on an error

    warnings = [
        output.text
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stderr"
    ]
    assert not warnings, f"{path.name} wrote to stderr:\n" + "\n".join(warnings)
    assert "checked" in json.dumps(nb.cells[-1].outputs)
