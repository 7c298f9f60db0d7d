"""The main job: execute the numbered notebooks 00..05 in order with papermill.

Each stage is a notebook; its parameters come from a YAML file (``params/demo.yaml``). Before the
first stage runs, every stage's parameters are resolved (the notebook's declared defaults, the file's
shared keys, its stage keys, ``--set`` overrides) and validated: unknown names, values of the wrong
type and the stage's own checks (:func:`hiralign.stages.check_parameters`: ranges, choices, paths,
dataset file headers) all fail at once, naming the stage and the parameter.

A stage is skipped when :func:`hiralign.stages.status` says its record is current -- the same rule
the notebook itself applies -- so changing one parameter reruns that stage and everything whose
inputs then change, nothing upstream. The run folder is locked for the whole run; ``pipeline.json``
only logs what each stage did.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

from hiralign.errors import UserError
from hiralign.stages import (LOCK_TOKEN_ENV, NON_PARAMETERS, STAGES, RunLock, check_parameters, recorded_parameters,
                             status)
from hiralign.store import resolve_run_dir

#: Keys of the YAML's top level passed to every notebook that declares them (plus ``run_dir``).
SHARED_KEYS = ("device", "seed")
LOG_FILE = "pipeline.json"
KERNEL_LOG = "kernel.log"
#: Python types of the annotations a parameters cell uses, and the YAML values each accepts.
ANNOTATION_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,)}


class PipelineError(UserError, RuntimeError):
    """A stage failed or the parameter file is invalid; the message says which and where."""


@dataclass
class RunConfig:
    """A parsed parameter file: shared keys plus one parameter dict per stage."""

    name: str
    run_dir: Path
    shared: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None
    replicates: int = 1  # runs with derived seeds (hiralign.replicates); 1: a single run in run_dir


def load_config(path: Path | str, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Parse ``params/X.yaml``: top-level ``name``, ``run_dir``, ``device``, ``seed``, ``replicates`` and ``stages``."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"parameter file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PipelineError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping with name, run_dir, device, seed and stages")
    stages = raw.get("stages") or {}
    if not isinstance(stages, dict) or not all(isinstance(v, dict) or v is None for v in stages.values()):
        raise PipelineError(f"{path}: 'stages' must map each stage name to a mapping of its parameters")
    unknown = sorted((set(stages) | set(overrides or {})) - set(STAGES))
    if unknown:
        raise PipelineError(f"{path}: unknown stage(s) {unknown}; known stages are {list(STAGES)}")
    name = str(raw.get("name", path.stem))
    run_dir = Path(raw.get("run_dir", f"runs/{name}"))
    shared = {k: raw[k] for k in SHARED_KEYS if k in raw}
    merged = {s: dict(stages.get(s) or {}) for s in STAGES}
    for stage, values in (overrides or {}).items():
        merged[stage].update(values)
    replicates = raw.get("replicates", 1)
    if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 1:
        raise PipelineError(f"{path}: replicates must be an integer >= 1, got {replicates!r}")
    return RunConfig(name=name, run_dir=run_dir, shared=shared, stages=merged, source=path, replicates=replicates)


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares in its ``parameters`` cell: name -> ``{type, default}``.

    Inspected once per notebook version (a table grid validates the same six notebooks for every run)."""
    path = Path(notebook).resolve()
    return {name: dict(info) for name, info in _inspect(str(path), path.stat().st_mtime_ns).items()}


@lru_cache(maxsize=64)
def _inspect(notebook: str, mtime_ns: int) -> dict[str, dict[str, Any]]:
    import papermill

    declared = {}
    for name, info in papermill.inspect_notebook(notebook).items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as err:
            raise PipelineError(f"{notebook}: default of {name} is not a literal ({info['default']!r})") from err
        declared[name] = {"type": info["inferred_type_name"], "default": default}
    return declared


def typed_value(stage: str, name: str, value: Any, annotation: str) -> Any:
    """``value`` checked against the parameter's annotation (an int is accepted for a float)."""
    allowed = ANNOTATION_TYPES.get(annotation)
    if allowed is None:
        return value
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        raise PipelineError(f"stage {stage}: parameter {name} must be {annotation}, got {value!r} ({type(value).__name__})")
    return float(value) if annotation == "float" else value


def stage_parameters(config: RunConfig, stage: str, declared: dict[str, dict[str, Any]], run_dir: Path) -> dict[str, Any]:
    """Every parameter of one notebook: its defaults, the shared keys it declares, then its own (checked)."""
    own = config.stages.get(stage, {})
    unknown = sorted(set(own) - set(declared))
    if unknown:
        raise PipelineError(
            f"{config.source}: stage {stage} has no parameter(s) {unknown}; "
            f"notebooks/{stage}.ipynb declares {sorted(declared)}"
        )
    given = {**{k: v for k, v in config.shared.items() if k in declared}, **own}
    params = {name: info["default"] for name, info in declared.items()}
    params.update({k: typed_value(stage, k, v, declared[k]["type"]) for k, v in given.items()})
    if "run_dir" in declared:
        params["run_dir"] = str(run_dir)
    return params


def plan_stages(until: str | None) -> list[str]:
    stages = list(STAGES)
    if until is None:
        return stages
    if until not in STAGES:
        raise PipelineError(f"unknown stage {until!r}; known stages are {stages}")
    return stages[: stages.index(until) + 1]


def validate_config(config: RunConfig, notebooks_dir: Path | str = "notebooks", until: str | None = None) -> dict[str, dict[str, Any]]:
    """Resolve and check every stage's parameters before anything runs; stage -> notebook parameters.

    Raises one :class:`PipelineError` naming every bad stage parameter (unknown, wrong type, or
    rejected by the stage's own checks: ranges, choices, missing paths, unreadable dataset files).
    """
    notebooks_dir = Path(notebooks_dir).resolve()
    run_dir = resolve_run_dir(config.run_dir)
    resolved, problems = {}, []
    for stage in plan_stages(until):
        notebook = notebooks_dir / f"{stage}.ipynb"
        if not notebook.exists():
            raise PipelineError(f"notebook {notebook} is missing")
        try:
            params = stage_parameters(config, stage, declared_parameters(notebook), run_dir)
            check_parameters(stage, {k: v for k, v in params.items() if k not in NON_PARAMETERS})
        except UserError as err:
            problems.append(str(err))
            continue
        resolved[stage] = params
    if problems:
        where = f" in {config.source}" if config.source else ""
        raise PipelineError(f"{len(problems)} problem(s){where}, nothing was run: " + " | ".join(problems))
    return resolved


def fingerprint(stage: str, params: dict[str, Any], notebook: Path, upstream: str) -> str:
    """Key of the stage cache: a hash of the stage's recorded parameters, its notebook's code and the
    upstream fingerprint (``run_dir`` is not part of it, so two runs share cached stages)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    blob = json.dumps({"stage": stage, "params": recorded_parameters(params), "source": source, "upstream": upstream},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _log_stage(run_dir: Path, stage: str, entry: dict[str, Any]) -> None:
    """Record what a stage did in ``pipeline.json`` (a log; never consulted to skip a stage)."""
    path = run_dir / LOG_FILE
    try:
        state = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        state = {}
    state[stage] = entry
    tmp = run_dir / (LOG_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


def _stage_files(run_dir: Path, stage: str) -> list[Path]:
    """Every file a stage writes plus its executed notebook."""
    files = sorted(f for pattern in STAGES[stage].outputs for f in run_dir.glob(pattern) if f.is_file())
    notebook = run_dir / "notebooks" / f"{stage}.ipynb"
    return files + ([notebook] if notebook.exists() else [])


def cache_store(cache_dir: Path, stage: str, fp: str, run_dir: Path) -> None:
    """Copy a finished stage's files into ``cache_dir/<stage>-<fp>/`` (atomic folder rename)."""
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
    source = cache_dir / f"{stage}-{fp}"
    if not source.is_dir():
        return False
    for f in source.iterdir():
        dest = run_dir / "notebooks" / f.name if f.suffix == ".ipynb" else run_dir / f.name
        shutil.copy2(f, dest)
    return True


def quiet_kernel_manager(stderr):
    """A kernel manager whose kernels write their own process stderr (transport and shutdown notices
    of ipykernel) to ``stderr`` instead of the console; cell output still reaches the notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["stderr"] = stderr
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return KernelManager


def execute_stage(notebook: Path, output: Path, params: dict[str, Any], cwd: Path) -> None:
    """Run one notebook with papermill; a failure becomes a :class:`PipelineError` naming the cell error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    with open(output.parent / KERNEL_LOG, "ab") as stderr:
        try:
            papermill.execute_notebook(str(notebook), str(output), parameters=params, cwd=str(cwd), progress_bar=False,
                                       kernel_name="python3", kernel_manager_class=quiet_kernel_manager(stderr))
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
    wait: float = 0.0,
) -> Path:
    """Execute stages 00..05 (or up to ``until``) into ``config.run_dir``; return the run folder.

    Every parameter is validated first (:func:`validate_config`). The run folder is locked for the
    whole run (a second run on it waits up to ``wait`` seconds, then stops naming the holder). With
    ``cache_dir``, finished stages are also stored there by :func:`fingerprint` and a stage already
    computed by another run with identical upstream parameters is copied instead of recomputed (the
    table grids' runs share their first stages); a copied stage is used only if it is current here.
    """
    notebooks_dir = Path(notebooks_dir).resolve()
    resolved = validate_config(config, notebooks_dir, until)
    run_dir = resolve_run_dir(config.run_dir)
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir, command=f"hiralign run {config.source or config.name}", wait=wait) as lock:
        previous = os.environ.get(LOCK_TOKEN_ENV)
        os.environ[LOCK_TOKEN_ENV] = lock.token  # the notebook kernels inherit the lock
        try:
            _run_stages(resolved, run_dir, notebooks_dir, force, log, cache_dir)
        finally:
            if previous is None:
                os.environ.pop(LOCK_TOKEN_ENV, None)
            else:
                os.environ[LOCK_TOKEN_ENV] = previous
    return run_dir


def pending_stages(config: RunConfig, notebooks_dir: Path | str = "notebooks") -> list[str]:
    """The stages :func:`run_pipeline` would not skip: those whose record is missing or not current
    for the resolved parameters (a run with none pending is complete)."""
    resolved = validate_config(config, Path(notebooks_dir).resolve())
    run_dir = resolve_run_dir(config.run_dir)
    return [stage for stage, params in resolved.items() if not status(run_dir, stage, params).current]


def _run_stages(resolved: dict[str, dict[str, Any]], run_dir: Path, notebooks_dir: Path, force: bool,
                log: Callable[[str], None], cache_dir: Path | str | None) -> None:
    upstream = ""
    for i, (stage, params) in enumerate(resolved.items()):
        notebook = notebooks_dir / f"{stage}.ipynb"
        fp = upstream = fingerprint(stage, params, notebook, upstream)
        tag = f"[{i + 1}/{len(resolved)}] {stage}"
        state = status(run_dir, stage, params)
        if not force and state.current:
            log(f"{tag}: up to date, skipped")
            _log_stage(run_dir, stage, {"fingerprint": fp, "did": "skipped"})
            continue
        if cache_dir is not None and not force and cache_fetch(Path(cache_dir), stage, fp, run_dir):
            if status(run_dir, stage, params).current:
                log(f"{tag}: copied from the stage cache")
                _log_stage(run_dir, stage, {"fingerprint": fp, "did": "copied from the stage cache"})
                continue
        log(f"{tag}: running {notebook.name} ({'forced' if force else state.reason}) ...")
        start = time.perf_counter()
        given = {**params, "force": True} if force and "force" in params else params
        execute_stage(notebook, run_dir / "notebooks" / notebook.name, given, cwd=notebooks_dir)
        after = status(run_dir, stage, params)
        if not after.current:
            raise PipelineError(f"stage {stage} finished but its record is not current in {run_dir} ({after.reason})")
        seconds = time.perf_counter() - start
        _log_stage(run_dir, stage, {"fingerprint": fp, "did": "ran", "seconds": round(seconds, 1)})
        if cache_dir is not None:
            cache_store(Path(cache_dir), stage, fp, run_dir)
        log(f"{tag}: done in {seconds:.1f} s")
