"""The main job: execute the numbered notebooks 00..05 in order with papermill.

Each stage is a notebook; its parameters come from a YAML file (``params/demo.yaml``). A stage is
skipped when its recorded *fingerprint* — a hash of its own parameters, its notebook source and the
fingerprints of every stage before it — is unchanged and its artifact still exists. Changing one
parameter therefore reruns that stage and everything downstream, nothing upstream.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from hiralign.store import resolve_run_dir

#: Stages in execution order: notebook stem -> the artifact that proves it ran.
STAGES: dict[str, str] = {
    "00_data": "00_data.h5",
    "01_proxy": "01_proxy.h5",
    "02_rgb_guides": "02_guides.h5",
    "03_warp": "03_warp.h5",
    "04_finetune": "04_model.safetensors",
    "05_evaluate": "05_metrics.json",
}
#: Every file a stage writes (globs), copied together by the stage cache.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "00_data": ("00_*",),
    "01_proxy": ("01_*",),
    "02_rgb_guides": ("02_*",),
    "03_warp": ("03_*",),
    "04_finetune": ("04_*",),
    "05_evaluate": ("05_*",),
}
#: Keys of the YAML's top level passed to every notebook that declares them (plus ``run_dir``).
SHARED_KEYS = ("device", "seed")
STATE_FILE = "pipeline.json"


class PipelineError(RuntimeError):
    """A stage failed or the parameter file is invalid; the message says which and where."""


@dataclass
class RunConfig:
    """A parsed parameter file: shared keys plus one parameter dict per stage."""

    name: str
    run_dir: Path
    shared: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None


def load_config(path: Path | str, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Parse ``params/X.yaml``: top-level ``name``, ``run_dir``, ``device``, ``seed`` and ``stages``."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"parameter file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    stages = raw.get("stages") or {}
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise PipelineError(f"{path}: unknown stage(s) {unknown}; known stages are {list(STAGES)}")
    name = str(raw.get("name", path.stem))
    run_dir = Path(raw.get("run_dir", f"runs/{name}"))
    shared = {k: raw[k] for k in SHARED_KEYS if k in raw}
    merged = {s: dict(stages.get(s) or {}) for s in STAGES}
    for stage, values in (overrides or {}).items():
        merged.setdefault(stage, {}).update(values)
    return RunConfig(name=name, run_dir=run_dir, shared=shared, stages=merged, source=path)


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's inspection)."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def stage_parameters(config: RunConfig, stage: str, declared: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Parameters for one notebook: shared keys it declares, then its own (unknown keys are errors)."""
    own = config.stages.get(stage, {})
    unknown = sorted(set(own) - set(declared))
    if unknown:
        raise PipelineError(
            f"{config.source}: stage {stage} has no parameter(s) {unknown}; "
            f"notebooks/{stage}.ipynb declares {sorted(declared)}"
        )
    params = {k: v for k, v in shared.items() if k in declared}
    params.update(own)
    return params


def fingerprint(stage: str, params: dict[str, Any], notebook: Path, upstream: str) -> str:
    """Hash of a stage's parameters (bar ``run_dir``), its notebook's code and the upstream fingerprint.

    ``run_dir`` is left out so that two runs with the same parameters share fingerprints, which lets
    a stage cache serve one run's artifact to another.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    own = {k: v for k, v in params.items() if k != "run_dir"}
    blob = json.dumps({"stage": stage, "params": own, "source": source, "upstream": upstream}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_state(run_dir: Path) -> dict[str, str]:
    path = run_dir / STATE_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}  # a damaged state file only costs a rerun


def _write_state(run_dir: Path, state: dict[str, str]) -> None:
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(run_dir / STATE_FILE)


def artifact_exists(run_dir: Path, stage: str) -> bool:
    return (run_dir / STAGES[stage]).exists()


def _stage_files(run_dir: Path, stage: str) -> list[Path]:
    """The artifact files of a stage plus its executed notebook."""
    files = sorted(f for pattern in STAGE_FILES[stage] for f in run_dir.glob(pattern) if f.is_file())
    notebook = run_dir / "notebooks" / f"{stage}.ipynb"
    return files + ([notebook] if notebook.exists() else [])


def cache_store(cache_dir: Path, stage: str, fp: str, run_dir: Path) -> None:
    """Copy a finished stage's files into ``cache_dir/<stage>-<fp>/`` (atomic folder rename)."""
    import shutil
    import tempfile

    target = cache_dir / f"{stage}-{fp}"
    if target.exists():
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stage}-", dir=cache_dir))
    for f in _stage_files(run_dir, stage):
        shutil.copy2(f, tmp / f.name)
    try:
        tmp.rename(target)
    except OSError:  # another run stored the same stage meanwhile
        shutil.rmtree(tmp, ignore_errors=True)


def cache_fetch(cache_dir: Path, stage: str, fp: str, run_dir: Path) -> bool:
    """Copy a cached stage's files into ``run_dir``; False when the cache has no such entry."""
    import shutil

    source = cache_dir / f"{stage}-{fp}"
    if not source.is_dir():
        return False
    for f in source.iterdir():
        dest = run_dir / "notebooks" / f.name if f.suffix == ".ipynb" else run_dir / f.name
        shutil.copy2(f, dest)
    return artifact_exists(run_dir, stage)


def execute_stage(notebook: Path, output: Path, params: dict[str, Any], cwd: Path) -> None:
    """Run one notebook with papermill; a failure becomes a :class:`PipelineError` naming the cell error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters=params, cwd=str(cwd), progress_bar=False, kernel_name="python3"
        )
    except PapermillExecutionError as err:
        raise PipelineError(
            f"stage {notebook.stem} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"executed notebook with the full traceback: {output}"
        ) from err


def run_pipeline(
    config: RunConfig,
    notebooks_dir: Path | str = "notebooks",
    force: bool = False,
    until: str | None = None,
    log: Callable[[str], None] = print,
    cache_dir: Path | str | None = None,
) -> Path:
    """Execute stages 00..05 (or up to ``until``) into ``config.run_dir``; return the run folder.

    With ``cache_dir``, finished stages are also stored there by fingerprint and a stage already
    computed by another run with identical upstream parameters is copied instead of recomputed
    (used by the table grids, whose runs share their first stages).
    """
    notebooks_dir = Path(notebooks_dir).resolve()
    run_dir = resolve_run_dir(config.run_dir)
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    shared = {**config.shared, "run_dir": str(run_dir)}  # notebooks run with cwd=notebooks/
    state = _read_state(run_dir)
    stages = list(STAGES)
    if until is not None:
        if until not in STAGES:
            raise PipelineError(f"unknown stage {until!r}; known stages are {stages}")
        stages = stages[: stages.index(until) + 1]
    upstream = ""
    for i, stage in enumerate(stages):
        notebook = notebooks_dir / f"{stage}.ipynb"
        if not notebook.exists():
            raise PipelineError(f"notebook {notebook} is missing")
        params = stage_parameters(config, stage, notebook_parameters(notebook), shared)
        fp = fingerprint(stage, params, notebook, upstream)
        upstream = fp
        tag = f"[{i + 1}/{len(stages)}] {stage}"
        if not force and state.get(stage) == fp and artifact_exists(run_dir, stage):
            log(f"{tag}: up to date, skipped")
            continue
        if cache_dir is not None and not force and cache_fetch(Path(cache_dir), stage, fp, run_dir):
            state[stage] = fp
            _write_state(run_dir, state)
            log(f"{tag}: copied from the stage cache")
            continue
        log(f"{tag}: running {notebook.name} ...")
        start = time.perf_counter()
        state.pop(stage, None)
        _write_state(run_dir, state)
        execute_stage(notebook, out_dir / notebook.name, params, cwd=notebooks_dir)
        if not artifact_exists(run_dir, stage):
            raise PipelineError(f"stage {stage} finished but wrote no {STAGES[stage]} in {run_dir}")
        state[stage] = fp
        _write_state(run_dir, state)
        if cache_dir is not None:
            cache_store(Path(cache_dir), stage, fp, run_dir)
        log(f"{tag}: done in {time.perf_counter() - start:.1f} s")
    return run_dir
