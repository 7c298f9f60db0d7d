"""Sweeps: one parameter file, many runs of the notebook chain, one table and one figure.

``hiralign sweep params/sweeps/guide-diversity.yaml`` runs a base parameter file (e.g.
``params/demo.yaml``) for every ``target`` x ``variant`` x ``seed`` of the sweep, each run in its own
folder ``<runs_root>/<name>/<target>/<variant>/seed<k>``. The runs share what does not differ
through the pipeline's stage cache: every variant of one target and seed reuses the same data and
proxies. It then writes ``<results>/<name>.md``, ``.json`` and ``.png``.

A sweep file::

    name: guide-diversity
    title: ...
    base: ../demo.yaml              # relative to the sweep file
    seeds: [0, 1, 2]
    stages: {03_warp: {k: 8}}       # applied to every run (after the base)
    targets:                        # applied after ``stages``
      synthetic: {label: ..., stages: {}}
      cave-real: {label: ..., requires: [data/cave], stages: {00_data: {dataset: data/cave/*.mat}}}
    variants:                       # applied last
      jitter: {02_rgb_guides: {generator: jitter}}
    measure: {metric: psnr, split: unobserved, method: adapted, baseline: proxy-only, x: between_guides}

``requires`` paths are relative to the repository root. A target whose paths are missing is
skipped, and the sweep says which paths and why. Stage values that start with a required path
reach the notebooks as absolute paths.

The measured effect of a variant is the per-seed difference ``method - baseline`` of the mean
``metric`` on ``split`` (``05_metrics.json``'s summary table). It is reported as the mean over seeds
with a two-sided 95% Student-t interval (:func:`hiralign.statistics.t_interval`). The ``stage2_quality`` row of each run
gives the x-axis of the figure.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from hiralign.errors import UserError
from hiralign.executors import RunJob, RunOutcome, run_local
from hiralign.pipeline import load_config, validate_config
from hiralign.report import Table, provenance, write_tables
from hiralign.reproduce.collection import measured
from hiralign.reproduce.planning import absolute_required
from hiralign.reproduce.spec import deep_merge
from hiralign.statistics import t_interval, verdict

REPO_ROOT = Path(__file__).resolve().parents[1]
Log = Callable[[str], None]
#: Quality columns of the stage-2 table averaged per variant (see hiralign.evaluate.STAGE2_COLUMNS).
QUALITY_COLUMNS = ("ssim_to_proxy", "between_guides", "across_proxies", "colour_distance", "nsam_w1", "spr", "srec")


class SweepError(UserError, ValueError):
    """A sweep file is invalid or a run's results are missing; the message says which and where."""


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    stages: dict
    requires: tuple[str, ...] = ()

    def missing(self, repo_root: Path = REPO_ROOT) -> list[Path]:
        return [repo_root / p for p in self.requires if not (repo_root / p).exists()]


@dataclass(frozen=True)
class Measure:
    metric: str = "psnr"
    split: str = "unobserved"
    method: str = "adapted"
    baseline: str = "proxy-only"
    x: str = "between_guides"


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file (module docstring)."""

    name: str
    title: str
    path: Path
    base: dict
    seeds: tuple[int, ...]
    stages: dict
    targets: tuple[Target, ...]
    variants: dict[str, dict]
    measure: Measure = field(default_factory=Measure)


@dataclass(frozen=True)
class SweepRun:
    target: Target
    variant: str
    seed: int
    run_dir: Path
    config: dict

    @property
    def name(self) -> str:
        return f"{self.target.name}/{self.variant}/seed{self.seed}"


def load_sweep(path: Path | str) -> Sweep:
    """Parse and check a sweep file (unknown keys, empty axes and a missing base are errors)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    raw = yaml.safe_load(path.read_text()) or {}
    known = {"name", "title", "base", "seeds", "stages", "targets", "variants", "measure"}
    if set(raw) - known:
        raise SweepError(f"{path}: unknown key(s) {sorted(set(raw) - known)}; a sweep has {sorted(known)}")
    for key in ("name", "base", "seeds", "targets", "variants"):
        if not raw.get(key):
            raise SweepError(f"{path}: '{key}' is missing or empty")
    base_path = (path.parent / raw["base"]).resolve()
    if not base_path.is_file():
        raise SweepError(f"{path}: base parameter file {base_path} does not exist")
    targets = tuple(Target(name, str(t.get("label", name)), t.get("stages") or {}, tuple(t.get("requires") or ()))
                    for name, t in raw["targets"].items())
    try:
        measure = Measure(**(raw.get("measure") or {}))
    except TypeError as err:
        raise SweepError(f"{path}: measure: {err}") from err
    return Sweep(raw["name"], str(raw.get("title", raw["name"])), path, yaml.safe_load(base_path.read_text()),
                 tuple(int(s) for s in raw["seeds"]), raw.get("stages") or {}, targets,
                 {str(k): v or {} for k, v in raw["variants"].items()}, measure)


def plan_runs(sweep: Sweep, runs_root: Path | str, repo_root: Path = REPO_ROOT) -> list[SweepRun]:
    """Every target x variant x seed run with its resolved parameter file (targets in file order)."""
    runs = []
    for target in sweep.targets:
        for variant, overrides in sweep.variants.items():
            stages = deep_merge(deep_merge(deep_merge(sweep.base.get("stages") or {}, sweep.stages), target.stages), overrides)
            stages = absolute_required(stages, target.requires, repo_root / "data", repo_root)
            for seed in sweep.seeds:
                run_dir = (Path(runs_root) / sweep.name / target.name / variant / f"seed{seed}").resolve()
                config = {**sweep.base, "name": f"{sweep.name}-{target.name}-{variant}-seed{seed}", "run_dir": str(run_dir),
                          "seed": seed, "stages": stages}
                runs.append(SweepRun(target, variant, seed, run_dir, config))
    return runs


def leaders_first(runs: Sequence[SweepRun]) -> list[list[SweepRun]]:
    """Two phases: the first variant of every (target, seed), which makes the shared stages, then the rest."""
    first = {(r.target.name, r.seed): r for r in reversed(runs)}
    leaders = [r for r in runs if first[(r.target.name, r.seed)] is r]
    return [phase for phase in (leaders, [r for r in runs if r not in leaders]) if phase]


# ----------------------------------------------------------------------------- results


def summary_value(metrics: dict, method: str, split: str, metric: str) -> float:
    """The mean ``metric`` of ``method`` on ``split`` from a ``05_metrics.json`` payload
    (:func:`hiralign.reproduce.collection.measured`)."""
    means = measured(metrics, method, split)
    if not means or metric not in means:
        raise SweepError(f"05_metrics.json has no {metric} of {method!r} on the {split!r} split")
    return means[metric]


def run_record(run: SweepRun, measure: Measure) -> dict[str, Any]:
    """The measured effect and the stage-2 quality of one finished run."""
    path = run.run_dir / "05_metrics.json"
    if not path.exists():
        raise SweepError(f"{run.name}: {path} is missing (the run did not finish); rerun the sweep to resume")
    metrics = json.loads(path.read_text())
    value, base = (summary_value(metrics, m, measure.split, measure.metric) for m in (measure.method, measure.baseline))
    quality = metrics["tables"].get("stage2_quality")
    q = dict(zip(quality["columns"], quality["rows"][0])) if quality and quality["rows"] else {}
    return {"target": run.target.name, "variant": run.variant, "seed": run.seed, measure.method: value,
            measure.baseline: base, "effect": value - base, **{c: q.get(c) for c in QUALITY_COLUMNS}}


def aggregate(records: Sequence[dict], measure: Measure) -> list[dict[str, Any]]:
    """Per (target, variant): seeds, mean effect with its 95% t interval, and the mean quality columns."""
    rows = []
    for key in dict.fromkeys((r["target"], r["variant"]) for r in records):
        group = [r for r in records if (r["target"], r["variant"]) == key]
        effect = t_interval([r["effect"] for r in group], what="seeds")
        row = {"target": key[0], "variant": key[1], "seeds": len(group),
               measure.method: float(np.mean([r[measure.method] for r in group])),
               measure.baseline: float(np.mean([r[measure.baseline] for r in group])),
               "effect": effect.mean, "ci_low": effect.low, "ci_high": effect.high,
               "verdict": verdict([(effect.low, effect.high)]) if len(group) > 1 else "single run"}
        for c in QUALITY_COLUMNS:
            values = [r[c] for r in group if r.get(c) is not None]
            row[c] = float(np.mean(values)) if values else None
        rows.append(row)
    return rows


def plot_sweep(rows: Sequence[dict], measure: Measure, title: str):
    """Effect (mean, 95% t interval) against the stage-2 measure ``measure.x``, one colour per target."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for i, target in enumerate(dict.fromkeys(r["target"] for r in rows)):
        group = [r for r in rows if r["target"] == target and r[measure.x] is not None]
        x = np.array([r[measure.x] for r in group])
        y = np.array([r["effect"] for r in group])
        err = np.array([[r["effect"] - r["ci_low"], r["ci_high"] - r["effect"]] for r in group]).T
        ax.errorbar(x, y, yerr=np.nan_to_num(err), fmt="o", capsize=3, color=f"C{i}", label=target)
        for xi, yi, r in zip(x, y, group):
            ax.annotate(r["variant"], (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color=f"C{i}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel(f"{measure.x} (stage-2 quality, mean over seeds)")
    ax.set_ylabel(f"{measure.method} - {measure.baseline} {measure.metric.upper()}\n({measure.split}; mean, 95% t interval)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def read_sweep_results(path: Path | str) -> tuple[list[dict], Measure, str]:
    """The effects rows, the measure and the title of a ``<name>.json`` written by :func:`write_sweep_results`."""
    payload = json.loads(Path(path).read_text())
    effects = payload["tables"]["effects"]
    rows = [dict(zip(effects["columns"], row)) for row in effects["rows"]]
    prov = payload["provenance"]
    return rows, Measure(**prov["measure"]), str(prov["title"])


def write_sweep_results(sweep: Sweep, records: Sequence[dict], rows: Sequence[dict], outcomes: Sequence[RunOutcome],
                        skipped: dict[str, list[str]], results_dir: Path | str) -> dict[str, Path]:
    """``<results_dir>/<name>.md`` / ``.json`` / ``.csv`` (+ ``<name>_runs.csv``), with provenance, and ``<name>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    m = sweep.measure
    effect = f"{m.method} - {m.baseline} {m.metric} ({m.split})"
    tables = [
        Table.from_records("effects", rows, ["target", "variant", "seeds", m.method, m.baseline, "effect", "ci_low",
                                             "ci_high", "verdict", *QUALITY_COLUMNS],
                           title=f"{sweep.title}: {effect}, mean over seeds and 95% t interval; stage-2 quality means"),
        Table.from_records("runs", records, ["target", "variant", "seed", m.method, m.baseline, "effect", *QUALITY_COLUMNS],
                           title="Every run"),
    ]
    prov = provenance({"sweep": str(sweep.path), "seeds": list(sweep.seeds)}, seed=None,
                      runs={o.name: {"ok": o.ok, "seconds": round(o.seconds, 1), "error": o.error} for o in outcomes},
                      skipped_targets=skipped, figure=f"{sweep.name}.png", title=sweep.title,
                      measure=dict(m.__dict__))
    paths = write_tables(results_dir, sweep.name, tables, prov, heading=f"Sweep {sweep.name} ({sweep.path.name})")
    paths["png"] = results_dir / f"{sweep.name}.png"
    plot_sweep(rows, m, f"{sweep.title} (n = {len(sweep.seeds)} seeds)").savefig(paths["png"], dpi=110)
    return paths


def run_sweep(path: Path | str, runs_root: Path | str = "runs/sweeps", results_dir: Path | str = "results", jobs: int = 1,
              force: bool = False, targets: Sequence[str] = (), notebooks_dir: Path | str = REPO_ROOT / "notebooks",
              dry_run: bool = False, log: Log = print) -> dict[str, Path]:
    """Run (resumably) every run of a sweep file and write its results (module docstring)."""
    sweep = load_sweep(path)
    unknown = sorted(set(targets) - {t.name for t in sweep.targets})
    if unknown:
        raise SweepError(f"{path}: unknown target(s) {unknown}; the sweep has {[t.name for t in sweep.targets]}")
    chosen = [t for t in sweep.targets if not targets or t.name in targets]
    skipped = {t.name: [str(p) for p in t.missing()] for t in chosen if t.missing()}
    for name, missing in skipped.items():
        log(f"{sweep.name}: target {name} skipped: missing {', '.join(missing)} (see docs/datasets.md)")
    sweep = Sweep(**{**sweep.__dict__, "targets": tuple(t for t in chosen if t.name not in skipped)})
    if not sweep.targets:
        raise SweepError(f"{path}: no target can run here (missing: {skipped})")
    runs = plan_runs(sweep, runs_root)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None  # per run, when runs share the CPU
    jobs_by_name = {}
    for run in runs:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run.run_dir / "params.yaml"
        config_path.write_text(f"# sweep {sweep.name}: {run.name}, resolved from {sweep.path}\n"
                               + yaml.safe_dump(run.config, sort_keys=False))
        validate_config(load_config(config_path), notebooks_dir)  # every run's parameters before any runs
        jobs_by_name[run.name] = RunJob(run.name, config_path, run.run_dir, Path(notebooks_dir).resolve(),
                                        Path(runs_root).resolve() / sweep.name / "stage-cache", threads, force)
    log(f"{sweep.name}: {len(runs)} run(s) under {Path(runs_root) / sweep.name}")
    if dry_run:
        for run in runs:
            log(f"  {run.name}: {run.run_dir / 'params.yaml'}")
        return {}
    outcomes = [o for phase in leaders_first(runs) for o in run_local([jobs_by_name[r.name] for r in phase], jobs, log)]
    failed = [o.name for o in outcomes if not o.ok]
    if failed:
        raise SweepError(f"{sweep.name}: run(s) {failed} failed (logs: <run>/reproduce.log); run the same command to resume")
    records = [run_record(run, sweep.measure) for run in runs]
    paths = write_sweep_results(sweep, records, aggregate(records, sweep.measure), outcomes, skipped, results_dir)
    log(f"{sweep.name}: wrote {paths['md']}, {paths['json']} and {paths['png']}")
    return paths
