"""Notebook conventions (docs/architecture.md): a markdown title first, a tagged, fully documented
parameters cell second, no committed outputs, and the .ipynb in sync with its jupytext py:percent
source.

The checks read each notebook as git has it and as `git add` would store it: in a checkout where
`make` configured the nbstripout filter (.gitattributes), a notebook run in place keeps its outputs
in the working copy only, and that must not fail the suite; outputs that did reach the index must.
"""
from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PARAM_LINE = re.compile(r"^([A-Za-z_]\w*)\s*:\s*\w+")


def _git(args: list[str], cwd: Path, stdin: bytes | None = None) -> bytes | None:
    """stdout of a git command, None when git is missing or the command fails."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_views(path: Path) -> dict[str, bytes]:
    """The notebook as git would commit it: {"to commit": ..., "staged": ...}.

    "to commit" is what `git add` would store: the working copy through the clean filter that
    .gitattributes names for it, when this checkout has that filter configured (`make` does);
    otherwise, or outside a git checkout, the working copy itself. "staged" is the index's copy
    (absent for an untracked file or outside a git checkout)."""
    stat = path.stat()
    return _git_views(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _git_views(path: Path, _mtime_ns: int, _size: int) -> dict[str, bytes]:
    raw = path.read_bytes()
    top = _git(["rev-parse", "--show-toplevel"], path.parent)
    if top is None:
        return {"to commit": raw}
    top_dir = Path(top.decode().strip())
    rel = path.resolve().relative_to(top_dir.resolve()).as_posix()
    views = {"to commit": raw}
    staged = _git(["show", f":{rel}"], top_dir)
    if staged is not None:
        views["staged"] = staged
    attr = (_git(["check-attr", "filter", "--", rel], top_dir) or b"").decode().rsplit(": ", 1)[-1].strip()
    clean = _git(["config", f"filter.{attr}.clean"], top_dir) if attr not in ("", "unset", "unspecified") else None
    if clean and raw != staged:  # git runs filters through the shell from the top of the work tree
        cleaned = subprocess.run(clean.decode().strip(), shell=True, cwd=top_dir, input=raw, capture_output=True)
        assert cleaned.returncode == 0, f"clean filter {attr!r} failed on {rel}: {cleaned.stderr.decode()}"
        views["to commit"] = cleaned.stdout
    return views


def check_conventions(nb: nbformat.NotebookNode, tmp_path: Path) -> None:
    """Assert the notebook conventions on one notebook (as committed)."""
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    params_cell = nb.cells[1]
    assert "parameters" in params_cell.metadata.get("tags", []), "cell 2 must be tagged 'parameters'"
    declared = [m.group(1) for line in params_cell.source.splitlines() if (m := PARAM_LINE.match(line))]
    copy = tmp_path / "as_committed.ipynb"
    nbformat.write(nb, copy)
    inferred = papermill.inspect_notebook(str(copy))
    assert declared == list(inferred), f"papermill could not parse {set(declared) - set(inferred)}"
    for name, info in inferred.items():
        assert info["inferred_type_name"] != "None", f"{name} has no type annotation"
        assert info["help"].strip(), f"{name} has no trailing comment"
    check_no_outputs(nb)


def check_no_outputs(nb: nbformat.NotebookNode) -> None:
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs are committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path: Path, tmp_path: Path):
    views = git_views(path)
    check_conventions(nbformat.reads(views["to commit"].decode(), as_version=4), tmp_path)
    if "staged" in views:
        check_no_outputs(nbformat.reads(views["staged"].decode(), as_version=4))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_py_percent_source(path: Path):
    source = path.with_suffix(".py")
    assert source.exists(), f"{source.name} (jupytext py:percent pair) is missing"
    paired = jupytext.read(source)
    nb = nbformat.reads(git_views(path)["to commit"].decode(), as_version=4)
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells], "run `make notebooks` to resync"


# --- the checks themselves ----------------------------------------------------------------------

def _with_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 1
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    return nb


def test_a_notebook_with_outputs_fails_the_conventions(tmp_path: Path):
    nb = _with_outputs(nbformat.read(NOTEBOOKS[0], as_version=4))
    with pytest.raises(AssertionError, match="outputs are committed"):
        check_conventions(nb, tmp_path)


def test_outside_git_the_working_copy_is_what_counts(tmp_path: Path):
    if _git(["rev-parse", "--show-toplevel"], tmp_path) is not None:
        pytest.skip(f"{tmp_path} lies inside a git checkout")
    path = tmp_path / NOTEBOOKS[0].name
    nbformat.write(_with_outputs(nbformat.read(NOTEBOOKS[0], as_version=4)), path)
    views = git_views(path)
    assert list(views) == ["to commit"]
    with pytest.raises(AssertionError, match="outputs are committed"):
        check_no_outputs(nbformat.reads(views["to commit"].decode(), as_version=4))


def _repo_with_notebook(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    if _git(["init", "-q"], repo) is None:
        pytest.skip("git is not available")
    (repo / ".gitattributes").write_text("*.ipynb filter=strip\n")
    path = repo / "nb.ipynb"
    nbformat.write(_with_outputs(nbformat.read(NOTEBOOKS[0], as_version=4)), path)
    return repo, path


# A stand-in for the nbstripout filter `make` configures (same effect on outputs, no start-up cost).
STRIP = (f"{shlex.quote(sys.executable)} -c \"import json, sys; nb = json.load(sys.stdin); "
         "[c.update(outputs=[], execution_count=None) for c in nb['cells'] if c['cell_type'] == 'code']; "
         "json.dump(nb, sys.stdout, indent=1)\"")


def test_outputs_in_the_index_fail_even_when_the_filter_strips_the_working_copy(tmp_path: Path):
    repo, path = _repo_with_notebook(tmp_path)
    assert _git(["add", "nb.ipynb"], repo) is not None  # staged before the filter existed: outputs in git
    assert _git(["config", "filter.strip.clean", STRIP], repo) is not None
    path.write_text(path.read_text().replace("ran", "ran again"))
    views = git_views(path)
    check_no_outputs(nbformat.reads(views["to commit"].decode(), as_version=4))  # the filter strips them
    with pytest.raises(AssertionError, match="outputs are committed"):
        check_no_outputs(nbformat.reads(views["staged"].decode(), as_version=4))


def test_without_the_filter_configured_outputs_would_be_committed(tmp_path: Path):
    _, path = _repo_with_notebook(tmp_path)  # .gitattributes names a filter nobody configured
    with pytest.raises(AssertionError, match="outputs are committed"):
        check_no_outputs(nbformat.reads(git_views(path)["to commit"].decode(), as_version=4))
