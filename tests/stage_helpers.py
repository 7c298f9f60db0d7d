"""Test helpers: tiny parameters for every stage and a run folder made through the stage protocol.

``tiny_params(stage)`` are the notebook's declared defaults with the tiny overrides below (the same
values the end-to-end test feeds to ``hiralign run``); ``make_run(run_dir, until)`` runs the stages
00..``until`` in-process with :func:`hiralign.stages.run_stage`, which is what each notebook does.
"""
from __future__ import annotations

import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Any

from hiralign.pipeline import declared_parameters
from hiralign.stages import NON_PARAMETERS, STAGES, run_stage

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

TINY_STAGES: dict[str, dict[str, Any]] = {
    "00_data": {"image_size": 32, "n_source_train": 2, "n_source_test": 1, "n_target_observed": 2, "n_target_unobserved": 2},
    "01_proxy": {"task": "denoise-gaussian", "baseline_iterations": 3},
    "02_rgb_guides": {"generator": "jitter", "n_guides": 2, "threads": 1},
    "03_warp": {"iters": 10, "threads": 1},
    "04_finetune": {"epochs": 1, "steps_per_epoch": 3, "batch": 2, "patch": 16, "compare": "proxy", "threads": 1},
    "05_evaluate": {"spectral_samples": 300, "crop": 16, "threads": 1},
}


@lru_cache(maxsize=None)
def _defaults(stage: str) -> tuple[tuple[str, Any], ...]:
    declared = declared_parameters(NOTEBOOKS / f"{stage}.ipynb")
    return tuple((k, v["default"]) for k, v in declared.items() if k not in NON_PARAMETERS)


def tiny_params(stage: str, **overrides: Any) -> dict[str, Any]:
    """The parameters a tiny notebook run of ``stage`` records."""
    return {**dict(_defaults(stage)), **TINY_STAGES[stage], **overrides}


def make_run(run_dir: Path, until: str = "05_evaluate", **overrides: dict[str, Any]) -> dict[str, Any]:
    """Run stages 00..``until`` into ``run_dir``; ``overrides`` maps a stage to changed parameters."""
    results = {}
    for stage in STAGES:
        results[stage] = run_stage(stage, run_dir, tiny_params(stage, **overrides.get(stage, {})), log=lambda _: None)
        if stage == until:
            break
    return results


STANDIN_BODY = '''\
from pathlib import Path
from hiralign.stages import STAGES, Stage, stage_parameters
from hiralign.store import canonical_params
stage = Stage({name!r}, run_dir, stage_parameters(globals()), log=lambda _: None)
fail = Path(run_dir, "FAIL")
if fail.exists() and fail.read_text() == {name!r}:
    raise RuntimeError("stage exploded on purpose")
if force or not stage.status().current:
{extra}
    for upstream in STAGES:  # every earlier stage, as a chain of real stages reads them
        if upstream == {name!r}:
            break
        if stage.has(upstream):
            stage.depends_on(upstream)
    stage.write({{"params": canonical_params(stage.params)}})
    with open(Path(run_dir, "log.txt"), "a") as f:
        f.write({name!r} + "\\n")
'''


def make_standin_notebooks(folder: Path, extra: dict[str, str] | None = None) -> Path:
    """Stand-ins of the six stage notebooks in ``folder``: each has the real notebook's title and
    parameters cells, then a body that writes a tiny record through :class:`hiralign.stages.Stage`
    made from every earlier stage's record (its content = its parameters, so changed parameters change its digest), appends the stage name
    to ``<run_dir>/log.txt``, and fails on purpose when ``<run_dir>/FAIL`` names the stage.
    ``extra`` maps a stage to code run when it computes, before it writes its record (e.g. a metrics
    file for stage 05)."""
    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    for name in STAGES:
        real = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = textwrap.indent((extra or {}).get(name, "pass"), "    ")
        body = nbformat.v4.new_code_cell(STANDIN_BODY.format(name=name, extra=code))
        nb = nbformat.v4.new_notebook(cells=[real.cells[0], real.cells[1], body], metadata=real.metadata)
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder
