"""Where the runs of a table grid execute: here (a process pool) or on a SLURM cluster (submitit,
:mod:`hiralign.slurm`).

A :class:`RunJob` is one experiment of a table: a resolved parameter file (``params.yaml`` in its
own run directory) that :func:`execute_run` feeds to :func:`hiralign.pipeline.run_pipeline`. The
pipeline skips every stage whose artifact is current, so executing a finished job again costs only
the status checks (docs/stage-contract.md), and an interrupted grid resumes where each run stopped. Runs that share
their first stages share them through the pipeline's stage cache (``cache_dir``).

Both executors return one :class:`RunOutcome` per job; a failing run never stops the others.
"""
from __future__ import annotations

import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

Log = Callable[[str], None]
EXECUTORS = ("local", "slurm")
#: Environment variables that bound the threads of numpy / torch in a job's notebooks.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class RunJob:
    """One run: the pipeline parameter file ``config``, executed into ``run_dir``."""

    name: str
    config: Path
    run_dir: Path
    notebooks_dir: Path
    cache_dir: Path | None = None
    threads: int | None = None  # bound on numpy / torch threads (None: leave the environment alone)
    force: bool = False


@dataclass
class RunOutcome:
    """What happened to a job: ``ok``, the error text if not, seconds, and per-stage actions."""

    name: str
    run_dir: Path
    ok: bool
    seconds: float
    error: str = ""
    ran: list[str] = field(default_factory=list)  # stages executed
    skipped: list[str] = field(default_factory=list)  # stages already current
    cached: list[str] = field(default_factory=list)  # stages copied from the stage cache


def _stage_of(message: str) -> str | None:
    """The stage named in a pipeline progress line ``[i/n] <stage>: ...``."""
    head = message.split(":", 1)[0].split()
    return head[-1] if len(head) == 2 and head[0].startswith("[") else None


def execute_run(job: RunJob) -> RunOutcome:
    """Run the notebook chain of ``job`` (resumable); never raises for a failing stage.

    Progress lines go to stdout (prefixed with the job name) and to ``run_dir/reproduce.log``.
    """
    from hiralign.pipeline import load_config, run_pipeline

    if job.threads:
        for var in THREAD_VARIABLES:
            os.environ[var] = str(job.threads)  # inherited by the notebook kernels
    outcome = RunOutcome(job.name, job.run_dir, ok=False, seconds=0.0)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    logfile = job.run_dir / "reproduce.log"

    def log(message: str) -> None:
        stage = _stage_of(message)
        if stage and message.endswith("skipped"):
            outcome.skipped.append(stage)
        elif stage and "stage cache" in message:
            outcome.cached.append(stage)
        elif stage and "running" in message:
            outcome.ran.append(stage)
        with open(logfile, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        print(f"[{job.name}] {message}", flush=True)

    start = time.perf_counter()
    try:
        config = load_config(job.config)
        run_pipeline(config, notebooks_dir=job.notebooks_dir, force=job.force, log=log, cache_dir=job.cache_dir)
        outcome.ok = True
    except Exception as err:  # noqa: BLE001 -- one failed run must not stop the grid; the error is reported
        outcome.error = f"{type(err).__name__}: {err}"
        log(f"FAILED: {outcome.error}")
        with open(logfile, "a") as f:
            f.write(traceback.format_exc())
    outcome.seconds = time.perf_counter() - start
    return outcome


def run_local(jobs: Sequence[RunJob], workers: int = 1, log: Log = print) -> list[RunOutcome]:
    """Execute ``jobs`` on this machine, ``workers`` at a time (1: in this process, in order)."""
    if workers < 1:
        raise ValueError(f"--jobs must be at least 1; got {workers}")
    if workers == 1 or len(jobs) <= 1:
        return [execute_run(job) for job in jobs]
    outcomes: dict[str, RunOutcome] = {}
    # spawn, not fork: the parent may hold torch / BLAS thread pools that do not survive a fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(execute_run, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                outcomes[job.name] = future.result()
            except Exception as err:  # noqa: BLE001 -- the worker process itself died
                outcomes[job.name] = RunOutcome(job.name, job.run_dir, ok=False, seconds=0.0,
                                                error=f"worker process failed: {type(err).__name__}: {err}")
            log(f"[{job.name}] {'finished' if outcomes[job.name].ok else 'FAILED'}")
    return [outcomes[job.name] for job in jobs]
