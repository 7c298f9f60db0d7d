"""The grid: :func:`reproduce` runs every experiment of a table, once or as replicates (resumable,
local or SLURM), and writes its results."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from hiralign.executors import EXECUTORS, RunJob, RunOutcome, run_local
from hiralign.paper_numbers import load_paper_numbers
from hiralign.pipeline import PipelineError, load_config, validate_config
from hiralign.reproduce.collection import collect, compare, fidelity
from hiralign.reproduce.planning import check_datasets, leaders_first, plan
from hiralign.reproduce.render import write_results
from hiralign.slurm import SlurmSettings, run_slurm
from hiralign.reproduce.spec import (DATA_ROOT, DEFAULTS_FILE, NOTEBOOKS_DIR, PARAMS_ROOT, Log, ReproduceError,
                                     _read_yaml, load_table)
from hiralign.store import write_text_atomic


@dataclass
class TableRun:
    """What :func:`reproduce` did for one table."""

    table: str
    outcomes: list[RunOutcome]
    paths: dict[str, Path]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def reproduce(table: str, profile: str = "mini", executor: str = "local", jobs: int = 1,
              runs_root: Path | str = "runs/reproduce", results_dir: Path | str = "results", *,
              params_root: Path | str = PARAMS_ROOT, notebooks_dir: Path | str = NOTEBOOKS_DIR,
              force: bool = False, slurm: dict | None = None, data_root: Path | str = DATA_ROOT,
              replicates: int = 1, scale: str = "", log: Log = print) -> TableRun:
    """Run every experiment of ``table`` ``replicates`` times (resumable) and write
    ``results_dir/<table>.{md,csv,json}``.

    ``executor="local"`` runs ``jobs`` runs at a time on this machine; ``"slurm"`` submits one
    submitit job per run (``slurm``: :class:`hiralign.executors.SlurmSettings` fields overriding the
    profile's ``slurm`` defaults, e.g. ``{"cluster": "local"}``). ``scale`` (e.g. ``"tiny"``) runs the
    profile at one of its scales (``_defaults.scales``), in ``<runs_root>/<profile>-<scale>``. Required
    dataset paths ``data/...`` lie under ``data_root`` (the repository's ``data/`` by default,
    :func:`~hiralign.reproduce.planning.required_path`); they are checked first and a missing one raises
    :class:`MissingDatasetError` at once, before anything runs. Replicate ``k`` of an experiment runs in
    ``hiralign.replicates.replicate_dirs(run_dir, replicates)[k]`` (``run_dir`` itself for one) with
    the seeds of replicate ``k`` (:func:`~hiralign.reproduce.planning.plan`); runs of one replicate
    that share their first stages share them (:func:`leaders_first`).
    """
    if executor not in EXECUTORS:
        raise ReproduceError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    start = time.perf_counter()
    spec = load_table(table, profile, params_root, scale)
    check_datasets(spec, _read_yaml(Path(params_root) / DEFAULTS_FILE), Path(data_root))  # before anything else
    runs = plan(spec, runs_root, params_root, notebooks_dir, data_root, replicates)
    paper = load_paper_numbers(Path(params_root) / "paper_numbers.yaml")[spec.table]
    runs_root = Path(runs_root).resolve()
    cache_dir = runs_root / spec.run_profile / "stage-cache"
    threads = max(1, (os.cpu_count() or 1) // jobs) if executor == "local" and jobs > 1 else None
    job_list, configs = [], {}
    for run in runs:
        exp = run.experiment
        run.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run.run_dir / "params.yaml"
        header = (f"# {spec.table} / {run.name} [{exp.profile_label}] resolved from {exp.path}\n"
                  f"# paper backbone -> ours: {exp.our_model}; {exp.mapping}\n"
                  + (f"# replicate {run.replicate} of {replicates} (seeds: hiralign.replicates)\n" if replicates > 1 else ""))
        write_text_atomic(config_path, header + yaml.safe_dump(run.config, sort_keys=False))
        job_list.append(RunJob(run.name, config_path, run.run_dir, Path(notebooks_dir).resolve(), cache_dir, threads, force))
        configs[run.name] = run.config
    for run, job in zip(runs, job_list):  # every stage parameter of every run, before any runs
        try:
            validate_config(load_config(job.config), notebooks_dir)
        except PipelineError as err:
            raise ReproduceError(f"{run.experiment.path} [{run.experiment.profile}]: {err}") from err
    log(f"{spec.table} [{spec.profile_label}]: {len(job_list)} run(s) ({replicates} replicate(s) per experiment) "
        f"under {runs_root / spec.run_profile / spec.table}")
    outcomes: list[RunOutcome] = []
    for phase in leaders_first(job_list, configs):
        if executor == "local":
            outcomes += run_local(phase, jobs, log)
        else:
            settings = {**spec.experiments[0].slurm, "parallelism": jobs, **(slurm or {})}
            settings.setdefault("folder", runs_root / spec.run_profile / spec.table / "submitit")
            outcomes += run_slurm(phase, SlurmSettings(**settings), log)
    by_name = {o.name: o for o in outcomes}
    cells = collect(spec, paper, by_name, runs_root, replicates)
    comparisons = compare(spec, paper, cells)
    paths = write_results(spec, paper, cells, comparisons, by_name, results_dir, replicates,
                          fidelity(spec, runs_root, replicates))
    result = TableRun(spec.table, outcomes, paths, time.perf_counter() - start)
    failed = [o.name for o in outcomes if not o.ok]
    log(f"{spec.table}: wrote {paths['md']} and {paths['csv']} in {result.seconds:.0f} s"
        + (f"; FAILED runs: {failed} (run the same command again to resume)" if failed else ""))
    return result
