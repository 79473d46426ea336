"""Every walkthrough runs top to bottom (small settings), so none can rot."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# Every notebook's figure cells must show their figures.
SHOWS_FIGURES = {"01_phases.ipynb", "02_training_tricks.ipynb", "03_results.ipynb", "04_search.ipynb",
                 "05_deploy.ipynb"}


def test_notebooks_exist_and_are_committed_clean():
    assert [p.name for p in NOTEBOOKS] == ["01_phases.ipynb", "02_training_tricks.ipynb", "03_results.ipynb",
                                          "04_search.ipynb", "05_deploy.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} has outputs"
        assert "/work/" not in path.read_text() and "/home/" not in path.read_text()


def test_committed_notebooks_are_what_make_notebooks_writes():
    """The cells live in make_notebooks.py; a notebook edited by hand (or not regenerated) fails."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS[0].parent / "make_notebooks.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    assert sorted(make.NOTEBOOKS) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        cells = lambda nb: [(c.id, c.cell_type, c.source) for c in nb.cells]
        assert cells(nbformat.read(path, as_version=4)) == cells(make.build(path.name)), f"{path.name}: regenerate it"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, real_data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("TINYCNN_NOTEBOOK_SMALL", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as a user gets it
    nb = nbformat.read(path, as_version=4)
    before = _run_folders_in_tmp()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert _run_folders_in_tmp() == before, "the notebook left run folders in the temporary directory"
    if path.name in SHOWS_FIGURES:
        blank = [c.source.splitlines()[0] for c in _figure_cells(nb) if not _shows_png(c)]
        assert _figure_cells(nb) and not blank, f"{path.name}: figure cells without an image/png output: {blank}"


def _run_folders_in_tmp() -> set:
    """Folders directly in the temporary directory holding a run (02 once left four per run)."""
    import tempfile

    return {p for p in Path(tempfile.gettempdir()).iterdir()
            if p.is_dir() and not p.is_symlink() and _readable(p) and (p / "metrics.json").exists()}


def _readable(p: Path) -> bool:
    try:
        next(p.iterdir(), None)
        return True
    except OSError:
        return False


def _figure_cells(nb):
    """Code cells that draw a figure (all of them call plt.subplots), less a "nothing committed yet" branch."""
    return [c for c in nb.cells if c.cell_type == "code" and "plt.subplots(" in c.source
            and not any("committed yet" in o.get("text", "") for o in c.get("outputs", []))]


def _shows_png(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
