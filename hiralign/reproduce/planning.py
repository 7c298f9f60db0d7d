"""From a :class:`~hiralign.reproduce.spec.TableSpec` to runs: stage parameters per notebook,
validation against the notebooks' parameters, run directories (one per replicate), the dataset
check, and the order in which runs sharing their first stages go (:func:`leaders_first`)."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hiralign.executors import RunJob
from hiralign.paper_numbers import PaperTable, load_paper_numbers
from hiralign.pipeline import STAGES
from hiralign.pipeline import declared_parameters as notebook_parameters
from hiralign.replicates import replicate_dirs, replicate_stages
from hiralign.reproduce.spec import (DATA_ROOT, INJECTED_KEYS, NOTEBOOKS_DIR, PARAMS_ROOT, REPO_ROOT, SHARED_PREFIX,
                                     Experiment, MissingDatasetError, ReproduceError, TableSpec)


def declared_parameters(notebooks_dir: Path | str = NOTEBOOKS_DIR) -> dict[str, dict[str, Any]]:
    """Papermill parameters of every stage notebook that exists (stage -> {name: info})."""
    folder = Path(notebooks_dir)
    return {s: notebook_parameters(folder / f"{s}.ipynb") for s in STAGES if (folder / f"{s}.ipynb").exists()}


def stage_overrides(exp: Experiment, declared: dict[str, dict[str, Any]], data_root: Path = DATA_ROOT) -> dict[str, dict]:
    """The experiment's stage parameters with ``task`` / ``backbone`` / ``generator`` handed to every
    notebook declaring them and required paths made absolute (notebooks run in ``notebooks/``)."""
    stages = copy.deepcopy(exp.stages)
    for key in INJECTED_KEYS:
        value = getattr(exp, key)
        if not value:
            continue
        takers = [s for s in STAGES if key in declared.get(s, {})]
        for stage in takers:
            stages[stage].setdefault(key, value)
    return absolute_required(stages, exp.requires, data_root)


def required_path(path: str, data_root: Path | str = DATA_ROOT, repo_root: Path = REPO_ROOT) -> Path:
    """Where a required path lies: ``data/<rest>`` is ``data_root/<rest>`` (the repository's ``data/``
    unless ``--data-root`` names another folder), any other path is relative to ``repo_root``."""
    head, _, rest = str(path).partition("/")
    return Path(data_root) / rest if head == "data" else Path(repo_root) / path


def absolute_required(stages: dict[str, dict], requires: Sequence[str], data_root: Path | str = DATA_ROOT,
                      repo_root: Path = REPO_ROOT) -> dict[str, dict]:
    """``stages`` with every value that is a required path (or lies under one) made absolute (:func:`required_path`)."""
    def absolute(value: Any) -> Any:
        if isinstance(value, str) and any(value == r or value.startswith(r.rstrip("/") + "/") for r in requires):
            return str(required_path(value, data_root, repo_root).resolve())
        return value

    return {stage: {k: absolute(v) for k, v in values.items()} for stage, values in stages.items()}


def validate(exp: Experiment, declared: dict[str, dict[str, Any]], paper: PaperTable | None = None,
             extra_rows: Sequence[str] = ()) -> list[str]:
    """Problems that would stop ``exp`` from running: stage keys that are no notebook parameter,
    injected keys no notebook takes, cells that are not in the paper's table."""
    problems = []
    where = f"{exp.path} [{exp.profile}]"
    for stage, values in exp.stages.items():
        if stage not in declared:
            continue
        unknown = sorted(set(values) - set(declared[stage]))
        if unknown:
            problems.append(f"{where}: {stage} has no parameter(s) {unknown}; it declares {sorted(declared[stage])}")
    if len(declared) == len(STAGES):
        for key in INJECTED_KEYS:
            if getattr(exp, key) and not any(key in params for params in declared.values()):
                problems.append(f"{where}: names a {key} but no notebook declares a {key!r} parameter")
    if paper is not None:
        for cell in exp.cells:
            if (cell.row, cell.group) not in paper.values and cell.row not in extra_rows:
                problems.append(f"{where}: cell ({cell.row!r}, {cell.group!r}) is not in the paper's {paper.name} "
                                "(a row the paper does not report belongs in _table.yaml's extra_rows)")
    return problems


def pipeline_config(exp: Experiment, run_dir: Path, stages: dict[str, dict], suffix: str = "") -> dict:
    """The parameter file :func:`hiralign.pipeline.load_config` reads for this run (``suffix`` of its
    name: the replicate, e.g. ``rep1``)."""
    return {"name": f"{exp.table}-{exp.name}-{exp.profile}" + (f"-{suffix}" if suffix else ""), "run_dir": str(run_dir),
            **exp.shared, "stages": {s: v for s, v in stages.items() if v}}


def run_directory(runs_root: Path | str, exp: Experiment) -> Path:
    """The experiment's run folder (with several replicates, the folder holding ``rep0``, ``rep1``, ...)
    under ``<runs_root>/<profile>[-<scale>]/<table>/``."""
    return (Path(runs_root) / exp.run_profile / exp.table / exp.name).resolve()


def job_name(exp: Experiment, k: int, replicates: int) -> str:
    """The job of replicate ``k``: the experiment's name for a single run, else ``<experiment>/rep<k>``."""
    return exp.name if replicates == 1 else f"{exp.name}/rep{k}"


@dataclass(frozen=True)
class PlannedRun:
    """Replicate ``replicate`` of ``experiment``: its job name, run folder and pipeline parameter file."""

    experiment: Experiment
    replicate: int
    name: str
    run_dir: Path
    config: dict


def missing_datasets(spec: TableSpec, data_root: Path | str = DATA_ROOT) -> list[tuple[str, str]]:
    """``(path, dataset)`` for every required path of the table that does not exist (:func:`required_path`)."""
    missing = {}
    for exp in spec.experiments:
        for path in exp.requires:
            if not required_path(path, data_root).exists():
                missing.setdefault(path, exp.dataset)
    return sorted(missing.items())


def check_datasets(spec: TableSpec, defaults: dict, data_root: Path | str = DATA_ROOT) -> None:
    """Raise :class:`MissingDatasetError` naming every missing path and where to get its dataset."""
    missing = missing_datasets(spec, data_root)
    if not missing:
        return
    origins = defaults.get("origins", {})
    lines = [f"{spec.table} --profile {spec.profile} needs data (datasets, model weights) missing at:"]
    for path, dataset in missing:
        origin = origins.get(path.rstrip("/"), {})
        how = f"{origin.get('name', dataset)}: {origin.get('get', 'see docs/datasets.md')}"
        lines.append(f"  {required_path(path, data_root)}  ({how})")
    lines.append("Download them and lay them out as docs/datasets.md describes (or name the folder holding them with "
                 "--data-root), or run `hiralign reproduce ... --profile mini` on the embedded synthetic benchmark.")
    raise MissingDatasetError("\n".join(lines))


def shared_prefix_key(config: dict) -> str:
    """Runs with equal keys compute identical stages 00..03 (what the stage cache can share)."""
    same = {k: v for k, v in config.items() if k not in ("name", "run_dir", "stages")}
    same["stages"] = {s: config["stages"].get(s, {}) for s in SHARED_PREFIX}
    return json.dumps(same, sort_keys=True, default=str)


def leaders_first(jobs: Sequence[RunJob], configs: dict[str, dict]) -> list[list[RunJob]]:
    """Two phases: one run per shared prefix, then the rest (which find that prefix in the cache)."""
    seen: set[str] = set()
    leaders, followers = [], []
    for job in jobs:
        key = shared_prefix_key(configs[job.name])
        (followers if key in seen else leaders).append(job)
        seen.add(key)
    return [phase for phase in (leaders, followers) if phase]


def plan(spec: TableSpec, runs_root: Path | str = "runs/reproduce", params_root: Path | str = PARAMS_ROOT,
         notebooks_dir: Path | str = NOTEBOOKS_DIR, data_root: Path | str = DATA_ROOT,
         replicates: int = 1) -> list[PlannedRun]:
    """Per experiment of ``spec`` and replicate ``k`` < ``replicates``: the run folder
    (:func:`hiralign.replicates.replicate_dirs`) and the pipeline parameter file, whose stage seeds are
    those of :func:`hiralign.replicates.replicate_stages` (the same for replicate ``k`` of every
    experiment, so the experiments pair by replicate and image). Raises :class:`ReproduceError`
    listing every parameter that no notebook declares."""
    if replicates < 1:
        raise ReproduceError(f"--replicates must be at least 1, got {replicates}")
    declared = declared_parameters(notebooks_dir)
    missing_nb = [s for s in STAGES if s not in declared]
    if missing_nb:
        raise ReproduceError(f"notebook(s) {missing_nb} are missing from {notebooks_dir}")
    paper = load_paper_numbers(Path(params_root) / "paper_numbers.yaml").get(spec.table)
    problems = [p for exp in spec.experiments for p in validate(exp, declared, paper, spec.extra_rows)]
    if problems:
        raise ReproduceError("\n".join(problems))
    runs = []
    for exp in spec.experiments:
        stages = stage_overrides(exp, declared, Path(data_root))
        seed = int(exp.shared.get("seed", 0))
        for k, run_dir in enumerate(replicate_dirs(run_directory(runs_root, exp), replicates)):
            suffix = f"rep{k}" if replicates > 1 else ""
            config = pipeline_config(exp, run_dir, replicate_stages(stages, seed, k), suffix)
            runs.append(PlannedRun(exp, k, job_name(exp, k, replicates), run_dir, config))
    return runs
