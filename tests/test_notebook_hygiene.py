"""Running a notebook in place, as JupyterLab does, leaves `git status` clean (issue 19, item 5).

In a temporary clone of this repository, with the nbstripout filter set up by `make` and the
JupyterLab save hook the Makefile writes: open notebooks/06_tables through jupytext's contents
manager (JupyterLab's), execute it, save it (outputs in the .ipynb, its .py rewritten), run the
hook. Git then sees no change to any tracked file."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from traitlets.config.loader import PyFileConfigLoader

REPO = Path(__file__).resolve().parents[1]
# What makes notebook hygiene: taken from the working tree, so the test checks them committed or not.
HYGIENE_FILES = (".gitattributes", "jupytext.toml", "Makefile")

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("make") is None or not (REPO / ".git").exists(),
    reason="needs git, make and a git checkout of the repository",
)


def git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=clone, capture_output=True, text=True, check=True).stdout


def make(clone: Path, *targets: str, venv: Path = Path(sys.prefix)) -> None:
    subprocess.run(["make", "-s", "-C", str(clone), f"VENV={venv}", *targets], check=True, capture_output=True)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, capture_output=True)
    for name in HYGIENE_FILES:
        shutil.copyfile(REPO / name, clone / name)
    git(clone, "add", *HYGIENE_FILES)
    if git(clone, "status", "--porcelain", "--untracked-files=no"):
        git(clone, "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "-m", "hygiene")
    make(clone, "git-hygiene")  # what every `make` target runs first
    assert git(clone, "status", "--porcelain", "--untracked-files=no") == ""
    return clone


def jupyterlab_run_and_save(root: Path, name: str) -> None:
    """Open, execute and save a notebook the way JupyterLab with jupytext does."""
    from jupytext import TextFileContentsManager
    from nbclient import NotebookClient

    cm = TextFileContentsManager(root_dir=str(root))
    model = cm.get(name)
    nb = nbformat.from_dict(model["content"])
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str((root / name).parent)}}).execute()
    nb.cells[2].metadata.update(collapsed=True, scrolled=True, jupyter={"outputs_hidden": True})  # view state
    model["content"] = nb
    cm.save(model, name)


@pytest.mark.slow
def test_a_notebook_run_in_place_leaves_git_status_clean(clone: Path, tmp_path: Path):
    name = "notebooks/06_tables.ipynb"
    py_before = (clone / name).with_suffix(".py").read_bytes()
    jupyterlab_run_and_save(clone, name)

    saved = nbformat.read(clone / name, as_version=4)
    assert any(c.get("outputs") for c in saved.cells if c.cell_type == "code"), "the run saved no outputs"
    assert (clone / name).with_suffix(".py").read_bytes() == py_before, "jupytext rewrote the .py"
    assert subprocess.run(["git", "diff", "--quiet"], cwd=clone).returncode == 0, git(clone, "diff")

    # The hook JupyterLab runs after each save (written by the Makefile into the environment).
    env = tmp_path / "env"
    make(clone, str(env / "etc/jupyter/jupyter_server_config.py"), venv=env)
    config = PyFileConfigLoader("jupyter_server_config.py", path=str(env / "etc/jupyter")).load_config()
    hook = config.ContentsManager.post_save_hook
    assert not hook(os_path=str(clone / name).replace(".ipynb", ".py"))  # only notebooks trigger it
    hook(os_path=str(clone / name)).wait(timeout=120)

    assert git(clone, "status", "--porcelain", "--untracked-files=no") == ""
    assert any(c.get("outputs") for c in nbformat.read(clone / name, as_version=4).cells), "outputs were lost"
