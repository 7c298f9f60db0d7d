"""Replicated runs: the same parameter file run with N derived seeds, and its statistics.

``hiralign run params/X.yaml --replicates N`` (or ``replicates: N`` in the file) runs the notebook
chain N times, replicate ``k`` in ``<run_dir>/rep<k>/`` with its own ``params.yaml``:

* every stage whose spec is ``replicated`` (01..05: degradation draws, guides, warp sampling,
  finetuning, evaluation sampling) gets the seed :func:`replicate_seed` ``(seed, k)``; replicate 0
  keeps the file's seed, so it computes exactly what a single run does;
* stage 00 (the data: target images and their observed / unobserved split) keeps the file's seed,
  so every replicate scores the SAME images and the methods can be paired over images and replicates;
  the replicates share it through a stage cache (``<run_dir>/stage-cache``) instead of rebuilding it.

When every replicate has finished, :func:`aggregate` reads their ``05_metrics.json`` and writes
``<run_dir>/replicates.{md,json,csv}``: per method and split the mean over replicates with its 95%
t interval, and the paired comparisons of :data:`hiralign.evaluate.PAIRED` (bootstrap over images,
t over replicates, Wilcoxon p, verdict; :mod:`hiralign.statistics`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from hiralign.errors import UserError
from hiralign.pipeline import RunConfig, validate_config
from hiralign.report import Table, provenance, write_tables
from hiralign.stages import STAGES
from hiralign.store import resolve_run_dir, write_text_atomic

STEM = "replicates"
Log = Callable[[str], None]


class ReplicateError(UserError, RuntimeError):
    """A replicate failed or its results are missing; the message names it and how to resume."""


def replicate_seed(seed: int, k: int) -> int:
    """Seed of replicate ``k``: ``seed`` itself for k = 0, else an independent stream derived from
    ``(seed, k)`` by ``numpy.random.SeedSequence`` (reduced to 31 bits for every library's seed API)."""
    if k < 0:
        raise ValueError(f"replicate index must be >= 0, got {k}")
    if k == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0] % (2 ** 31))


def replicate_dirs(run_dir: Path | str, n: int) -> list[Path]:
    """The run folders of ``n`` replicates: ``<run_dir>/rep0`` ... (``run_dir`` itself for one run)."""
    if n < 1:
        raise ValueError(f"replicates must be >= 1, got {n}")
    run_dir = resolve_run_dir(run_dir)
    return [run_dir] if n == 1 else [run_dir / f"rep{k}" for k in range(n)]


def replicate_stages(stages: dict[str, dict[str, Any]], seed: int, k: int) -> dict[str, dict[str, Any]]:
    """Stage parameters of replicate ``k``: every replicated stage's seed (its own, else ``seed``)
    replaced by :func:`replicate_seed`; the data stage keeps its seed."""
    out = {}
    for name, values in stages.items():
        values = dict(values or {})
        if STAGES[name].replicated:
            values["seed"] = replicate_seed(int(values.get("seed", seed)), k)
        out[name] = values
    return out


def replicate_config(config: RunConfig, k: int, n: int) -> RunConfig:
    """Replicate ``k`` of ``n`` of ``config``: its run folder, and the derived seed in every replicated stage."""
    stages = replicate_stages({s: config.stages.get(s, {}) for s in STAGES}, int(config.shared.get("seed", 0)), k)
    return RunConfig(name=f"{config.name}-rep{k}", run_dir=replicate_dirs(config.run_dir, n)[k], shared=dict(config.shared),
                     stages=stages, source=config.source)


def write_config(config: RunConfig, note: str) -> Path:
    """``<run_dir>/params.yaml``: the resolved parameter file of one replicate (what it ran)."""
    run_dir = resolve_run_dir(config.run_dir)
    path = run_dir / "params.yaml"
    body = {"name": config.name, "run_dir": str(run_dir), **config.shared,
            "stages": {s: v for s, v in config.stages.items() if v}}
    write_text_atomic(path, f"# {note}\n" + yaml.safe_dump(body, sort_keys=False))
    return path


def run_replicates(config: RunConfig, n: int, notebooks_dir: Path | str, jobs: int = 1, force: bool = False,
                   log: Log = print) -> dict[str, Path]:
    """Run ``n`` replicates of ``config`` (resumable; replicate 0 first, then the others ``jobs`` at a
    time) and write their statistics (:func:`aggregate`); returns the paths of ``replicates.*``."""
    import os

    from hiralign.executors import RunJob, run_local

    if n < 2:
        raise ValueError(f"run_replicates needs at least 2 replicates, got {n}")
    validate_config(config, notebooks_dir)  # once, before anything is written: the replicates differ only in seeds
    run_dir = resolve_run_dir(config.run_dir)
    configs = [replicate_config(config, k, n) for k in range(n)]
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None  # per replicate, when they share the CPU
    job_list = []
    for k, rep in enumerate(configs):
        path = write_config(rep, f"replicate {k} of {n} of {config.source or config.name} (seeds: hiralign.replicates)")
        job_list.append(RunJob(f"rep{k}", path, resolve_run_dir(rep.run_dir), Path(notebooks_dir).resolve(),
                               run_dir / "stage-cache", threads, force))
    log(f"{config.name}: {n} replicates under {run_dir} (seeds {[replicate_seed(int(config.shared.get('seed', 0)), k) for k in range(n)]})")
    outcomes = run_local(job_list[:1], 1, log) + run_local(job_list[1:], jobs, log)
    failed = {o.name: o.error.strip().splitlines()[0] if o.error.strip() else "failed" for o in outcomes if not o.ok}
    if failed:
        raise ReplicateError(f"replicate(s) {sorted(failed)} failed ({failed}); logs: <replicate>/reproduce.log; "
                             "run the same command again to resume")
    return write_aggregate(run_dir, [o.run_dir for o in outcomes])


# ----------------------------------------------------------------------------- statistics over replicates


def replicate_records(run_dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], dict[str, str], list[dict]]:
    """Per-image scores of every replicate (each record marked with its ``replicate`` index), the
    methods' training descriptions, and each replicate's provenance."""
    from hiralign.report import read_tables

    records, descriptions, provs = [], {}, []
    for k, run_dir in enumerate(run_dirs):
        path = Path(run_dir) / "05_metrics.json"
        if not path.exists():
            raise ReplicateError(f"{path} is missing: replicate {k} has not been evaluated (run notebook 05_evaluate)")
        tables, prov = read_tables(path)
        records += [{**r, "replicate": k} for r in tables["per_image"].records()]
        descriptions.update({r["method"]: r["training"] for r in tables["summary"].records()})
        provs.append(prov)
    images = [sorted({r["image"] for r in records if r["replicate"] == k}) for k in range(len(run_dirs))]
    if any(names != images[0] for names in images):
        raise ReplicateError("the replicates scored different target images; they must share stage 00 "
                             f"({[str(d) for d in run_dirs]})")
    return records, descriptions, provs


def aggregate(run_dirs: Sequence[Path], seed: int = 0) -> tuple[list[Table], dict[str, Any]]:
    """The ``summary`` (mean over replicates, 95% t interval) and ``paired`` tables of finished
    replicates, and their provenance (every replicate's run folder, seeds and record digests)."""
    from hiralign.evaluate import SOURCE_ONLY, metric_tables, paired_comparisons, summarize

    records, descriptions, provs = replicate_records(run_dirs)
    summary = summarize(records, SOURCE_ONLY, descriptions, seed)
    paired = paired_comparisons(records, seed=seed)
    task = str(provs[0].get("task", ""))
    tables = [t for t in metric_tables(summary, records, (), task, (), paired) if t.name in ("summary", "paired")]
    for t in tables:
        t.title = f"{len(run_dirs)} replicates. " + t.title
    prov = provenance({"replicates": len(run_dirs)}, dataset=provs[0].get("dataset"), seed=seed, task=task,
                      runs=[{"run_dir": str(d), "seed": (p.get("params") or {}).get("seed"),
                             "artifacts": p.get("artifacts", {})} for d, p in zip(run_dirs, provs)])
    return tables, prov


def write_aggregate(run_dir: Path, run_dirs: Sequence[Path], seed: int = 0) -> dict[str, Path]:
    """``<run_dir>/replicates.{md,json,csv}`` (+ ``replicates_paired.csv``) from :func:`aggregate`."""
    tables, prov = aggregate(run_dirs, seed)
    from hiralign.evaluate import target_label

    heading = f"HIR-ALIGN over {len(run_dirs)} replicates: {prov.get('task', '')} on {target_label(prov.get('dataset'))}"
    return write_tables(run_dir, STEM, tables, prov, heading=heading)


def evaluated_replicates(run_dir: Path | str) -> list[Path]:
    """When ``run_dir`` is a replicate (``.../rep<k>``): every evaluated replicate beside it, in index
    order (those with a ``05_metrics.json``); else ``[]``."""
    run_dir = resolve_run_dir(run_dir)
    if not re.fullmatch(r"rep\d+", run_dir.name):
        return []
    reps = [p for p in run_dir.parent.glob("rep*") if re.fullmatch(r"rep\d+", p.name) and (p / "05_metrics.json").exists()]
    return sorted(reps, key=lambda p: int(p.name[3:]))


def read_aggregate(run_dir: Path | str) -> dict[str, Table]:
    """The tables of ``<run_dir>/replicates.json``."""
    from hiralign.report import read_tables

    return read_tables(resolve_run_dir(run_dir) / f"{STEM}.json")[0]
