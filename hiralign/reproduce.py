"""Regenerate the paper's tables: ``hiralign reproduce TABLE [--profile mini|paper] [--executor local|slurm]``.

Each table of Section IV has a folder of experiment files under ``params/paper/``; every experiment
runs through the notebook chain 00..05 (:func:`hiralign.pipeline.run_pipeline`) in its own run
directory, and the measured numbers are written beside the paper's to ``results/<table>.md``,
``.csv`` and ``.json`` with per-cell provenance (profile, dataset, device, code version, date).

Parameter files
---------------
::

    params/paper/_defaults.yaml      profiles (device, seed, stage defaults, SLURM resources) and
                                     datasets (per profile: stage parameters, required paths, origin)
    params/paper/paper_numbers.yaml  the paper's numbers (hiralign.paper_numbers)
    params/paper/tableN/_table.yaml  the table: rows we do not reproduce (and why), gain comparisons
    params/paper/tableN/<exp>.yaml   one experiment: dataset, task, paper backbone -> ours, generator,
                                     the cells it fills, stage parameters, profiles {paper, mini}

For a profile ``P`` an experiment resolves as the deep merge (later wins) of
``_defaults.profiles[P]`` < ``_defaults.datasets[<dataset>][P]`` < the experiment < its
``profiles[P]`` (``requires`` lists are joined, not replaced). Its top-level ``task``,
``backbone`` and ``generator`` go to every notebook that declares a parameter of that name.
Paths listed under ``requires`` are relative to the repository root; they are checked before
anything runs and passed to the notebooks as absolute paths.

Resuming: a run directory keeps its stages' artifacts; running a table again executes only what
is missing or out of date. Runs that share their first stages share them through the pipeline's
stage cache (``<runs_root>/<profile>/stage-cache``), and one run per shared prefix goes first.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from hiralign.executors import EXECUTORS, RunJob, RunOutcome, SlurmSettings, run_local, run_slurm
from hiralign.paper_numbers import METRICS, PaperTable, direction_verdict, improvement, load_paper_numbers
from hiralign.pipeline import STAGES, notebook_parameters

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_ROOT = REPO_ROOT / "params" / "paper"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEFAULTS_FILE = "_defaults.yaml"
TABLE_FILE = "_table.yaml"
PROFILES = ("paper", "mini")
#: Experiment-level keys handed to every notebook that declares a parameter of the same name.
INJECTED_KEYS = ("task", "backbone", "generator")
#: Stages whose parameters decide the data every later stage sees; runs equal up to here share them.
SHARED_PREFIX = ("00_data", "01_proxy", "02_rgb_guides", "03_warp")
RESULT_FILE = "05_metrics.json"
ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10, "xi": 11}
Log = Callable[[str], None]


class ReproduceError(RuntimeError):
    """A table, profile or parameter file is invalid; the message names the file and the problem."""


class MissingDatasetError(ReproduceError):
    """The paper profile needs dataset paths that do not exist (raised before anything runs)."""


# ----------------------------------------------------------------------------- parameter files


def table_name(name: str) -> str:
    """``"table6"``, ``"6"``, ``"VI"`` or ``"table-vi"`` -> ``"table6"``."""
    key = re.sub(r"^table[-_ ]?", "", str(name).strip().lower())
    number = int(key) if key.isdigit() else ROMAN.get(key)
    if number is None:
        raise ReproduceError(f"unknown table {name!r}; use table1 ... table11 (or 1..11, I..XI)")
    return f"table{number}"


def list_tables(params_root: Path | str = PARAMS_ROOT) -> list[str]:
    """Tables that have a folder of experiment files, in numeric order."""
    root = Path(params_root)
    found = [p.name for p in root.glob("table*") if p.is_dir() and re.fullmatch(r"table\d+", p.name)]
    return sorted(found, key=lambda n: int(n[5:]))


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``; nested dicts merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ReproduceError(f"{path} does not exist") from None
    except yaml.YAMLError as err:
        raise ReproduceError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ReproduceError(f"{path}: expected a mapping at the top level")
    return data


@dataclass(frozen=True)
class Cell:
    """A paper cell block an experiment fills: ``row`` x ``group`` with the run's ``measure``
    (``source-only``, ``adapted``, ...) on target ``split``."""

    row: str
    group: str
    measure: str
    split: str


@dataclass
class Experiment:
    """One experiment of a table resolved for one profile."""

    table: str
    name: str
    path: Path
    profile: str
    profile_label: str
    title: str
    dataset: str  # the paper's dataset (CAVE, KAIST, HSIDwrD)
    dataset_label: str  # what this profile actually runs on
    task: str
    paper_backbone: str
    backbone: str
    generator: str
    mapping: str  # how the paper's method maps onto ours (shown in the tables)
    cells: list[Cell]
    requires: list[str]
    shared: dict[str, Any]  # device, seed
    stages: dict[str, dict[str, Any]]
    slurm: dict[str, Any] = field(default_factory=dict)

    @property
    def our_model(self) -> str:
        return f"{self.paper_backbone} -> {self.backbone}" if self.paper_backbone else self.backbone


@dataclass
class TableSpec:
    """A table's experiments plus its rows not reproduced and the gain comparisons it makes."""

    table: str
    profile: str
    profile_label: str
    experiments: list[Experiment]
    not_reproduced: dict[str, str]
    comparisons: list[tuple[str, str]]
    notes: list[str]

    def reason(self, row: str, group: str) -> str | None:
        """Why a paper cell is not reproduced: ``not_reproduced`` keyed by ``"row @ group"``, the row,
        or the group (in that order); None when the table gives no reason."""
        for key in (f"{row} @ {group}", row, group):
            if key in self.not_reproduced:
                return self.not_reproduced[key]
        return None


def _cells(raw: Sequence[dict], split: str, path: Path) -> list[Cell]:
    cells = []
    for entry in raw or []:
        try:
            cells.append(Cell(str(entry["row"]), str(entry["group"]), str(entry["measure"]), str(entry.get("split", split))))
        except KeyError as err:
            raise ReproduceError(f"{path}: every cell needs row, group and measure; {entry} lacks {err}") from None
    if not cells:
        raise ReproduceError(f"{path}: names no cells (which paper rows does it reproduce?)")
    return cells


def load_experiment(path: Path, table: str, profile: str, defaults: dict) -> Experiment:
    """Resolve one experiment file for ``profile`` (see the module docstring for the merge order)."""
    raw = _read_yaml(path)
    profiles = raw.pop("profiles", {}) or {}
    if profile not in profiles:
        raise ReproduceError(f"{path}: no profile {profile!r}; it defines {sorted(profiles)}")
    base = defaults.get("profiles", {}).get(profile)
    if base is None:
        raise ReproduceError(f"{DEFAULTS_FILE}: no profile {profile!r}")
    dataset = str(raw.get("dataset", ""))
    datasets = defaults.get("datasets", {})
    if dataset not in datasets:
        raise ReproduceError(f"{path}: dataset {dataset!r} is not described in {DEFAULTS_FILE} ({sorted(datasets)})")
    layers = [base, datasets[dataset].get(profile, {}), raw, profiles[profile]]
    spec = deep_merge(deep_merge(deep_merge(*layers[:2]), layers[2]), layers[3])
    spec["requires"] = list(dict.fromkeys(r for layer in layers for r in layer.get("requires", [])))  # union
    unknown = sorted(set(spec.get("stages", {})) - set(STAGES))
    if unknown:
        raise ReproduceError(f"{path}: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    stages = {s: dict(spec.get("stages", {}).get(s) or {}) for s in STAGES}
    return Experiment(
        table=table, name=path.stem, path=path, profile=profile, profile_label=str(spec.get("label", profile)),
        title=str(spec.get("title", path.stem)), dataset=dataset,
        dataset_label=str(spec.get("dataset_label", dataset)), task=str(spec.get("task", "")),
        paper_backbone=str(spec.get("paper_backbone", "")), backbone=str(spec.get("backbone", "")),
        generator=str(spec.get("generator", "")), mapping=str(spec.get("mapping", "")),
        cells=_cells(spec.get("cells"), str(spec.get("split", "unobserved")), path),
        requires=[str(r) for r in spec.get("requires", [])],
        shared={k: spec[k] for k in ("device", "seed") if k in spec}, stages=stages, slurm=dict(spec.get("slurm", {})),
    )


def load_table(table: str, profile: str = "mini", params_root: Path | str = PARAMS_ROOT) -> TableSpec:
    """Every experiment of ``table`` resolved for ``profile``, with the table's own settings."""
    table = table_name(table)
    if profile not in PROFILES:
        raise ReproduceError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    root = Path(params_root)
    folder = root / table
    if not folder.is_dir():
        raise ReproduceError(f"no parameter folder {folder} for {table}; tables with one: {list_tables(root)}")
    defaults = _read_yaml(root / DEFAULTS_FILE)
    meta = _read_yaml(folder / TABLE_FILE) if (folder / TABLE_FILE).exists() else {}
    files = sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("_"))
    if not files:
        raise ReproduceError(f"{folder} holds no experiment files")
    experiments = [load_experiment(p, table, profile, defaults) for p in files]
    label = experiments[0].profile_label
    comparisons = [tuple(pair) for pair in meta.get("comparisons", [])]
    if any(len(pair) != 2 for pair in comparisons):
        raise ReproduceError(f"{folder / TABLE_FILE}: each comparison is [baseline row, compared row]")
    return TableSpec(table, profile, label, experiments, dict(meta.get("not_reproduced", {}) or {}),
                     comparisons, list(meta.get("notes", []) or []))


# ----------------------------------------------------------------------------- expansion


def declared_parameters(notebooks_dir: Path | str = NOTEBOOKS_DIR) -> dict[str, dict[str, Any]]:
    """Papermill parameters of every stage notebook that exists (stage -> {name: info})."""
    folder = Path(notebooks_dir)
    return {s: notebook_parameters(folder / f"{s}.ipynb") for s in STAGES if (folder / f"{s}.ipynb").exists()}


def stage_overrides(exp: Experiment, declared: dict[str, dict[str, Any]], repo_root: Path = REPO_ROOT) -> dict[str, dict]:
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
    for values in stages.values():
        for key, value in values.items():
            if isinstance(value, str) and any(value == r or value.startswith(r.rstrip("/") + "/") for r in exp.requires):
                values[key] = str((repo_root / value).resolve())
    return stages


def validate(exp: Experiment, declared: dict[str, dict[str, Any]], paper: PaperTable | None = None) -> list[str]:
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
            if (cell.row, cell.group) not in paper.values:
                problems.append(f"{where}: cell ({cell.row!r}, {cell.group!r}) is not in the paper's {paper.name}")
    return problems


def pipeline_config(exp: Experiment, run_dir: Path, stages: dict[str, dict]) -> dict:
    """The parameter file :func:`hiralign.pipeline.load_config` reads for this run."""
    return {"name": f"{exp.table}-{exp.name}-{exp.profile}", "run_dir": str(run_dir), **exp.shared,
            "stages": {s: v for s, v in stages.items() if v}}


def run_directory(runs_root: Path | str, exp: Experiment) -> Path:
    return (Path(runs_root) / exp.profile / exp.table / exp.name).resolve()


def missing_datasets(spec: TableSpec, repo_root: Path = REPO_ROOT) -> list[tuple[str, str]]:
    """``(path, dataset)`` for every required path of the table that does not exist."""
    missing = {}
    for exp in spec.experiments:
        for path in exp.requires:
            if not (repo_root / path).exists():
                missing.setdefault(path, exp.dataset)
    return sorted(missing.items())


def check_datasets(spec: TableSpec, defaults: dict, repo_root: Path = REPO_ROOT) -> None:
    """Raise :class:`MissingDatasetError` naming every missing path and where to get its dataset."""
    missing = missing_datasets(spec, repo_root)
    if not missing:
        return
    origins = defaults.get("origins", {})
    lines = [f"{spec.table} --profile {spec.profile} needs data (datasets, model weights) missing at:"]
    for path, dataset in missing:
        origin = origins.get(path.rstrip("/"), {})
        how = f"{origin.get('name', dataset)}: {origin.get('get', 'see docs/datasets.md')}"
        lines.append(f"  {repo_root / path}  ({how})")
    lines.append("Download them and lay them out as docs/datasets.md describes, or run "
                 "`hiralign reproduce ... --profile mini` on the embedded synthetic benchmark.")
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


# ----------------------------------------------------------------------------- measured numbers


def _norm(text: Any) -> str:
    return re.sub(r"[\s_]+", "-", str(text).strip().lower())


def measured(metrics: dict, measure: str, split: str) -> dict[str, float] | None:
    """PSNR / SSIM / SAM of ``measure`` (a method: ``source-only``, ``adapted``, ...) on ``split``
    from a ``05_metrics.json`` payload (``{"tables": {name: {"columns", "rows"}}}``); None if absent.

    The ``summary`` table of :mod:`hiralign.evaluate` is searched first, then any other table with
    ``method`` and metric columns (per-image tables excluded); a ``split`` column, when there is
    one, must match too.
    """
    tables = metrics.get("tables") or {}
    for name in sorted(tables, key=lambda n: n != "summary"):
        table = tables[name]
        columns = [str(c) for c in table.get("columns", [])]
        if "method" not in columns or "image" in columns or not set(METRICS) <= set(columns):
            continue  # per-image tables hold single images, not means
        for row in table.get("rows", []):
            record = dict(zip(columns, row))
            if _norm(record["method"]) != _norm(measure):
                continue
            if "split" in record and _norm(record["split"]) != _norm(split):
                continue
            return {m: float(record[m]) for m in METRICS if record.get(m) is not None}
    return None


def _code_version(version: Any) -> str:
    if isinstance(version, dict):
        commit = version.get("git_commit", "")
        return f"hiralign {version.get('hiralign', '?')}" + (f" @ {commit[:10]}" if commit else "")
    return str(version or "")


@dataclass
class CellResult:
    """One metric of one paper cell: the paper's value, ours, and where ours came from."""

    group: str
    row: str
    metric: str
    paper: float | None
    ours: float | None
    status: str
    experiment: str = ""
    our_model: str = ""
    profile: str = ""
    dataset: str = ""
    device: str = ""
    code_version: str = ""
    date: str = ""
    run_dir: str = ""


def collect(spec: TableSpec, paper: PaperTable, outcomes: dict[str, RunOutcome], runs_root: Path) -> list[CellResult]:
    """Every (group, row, metric) of the paper's table with our number beside it when we have one."""
    filled: dict[tuple[str, str], tuple[Experiment, Cell]] = {}
    for exp in spec.experiments:
        for cell in exp.cells:
            filled[(cell.row, cell.group)] = (exp, cell)
    results = []
    for group in paper.groups:
        for row in paper.rows:
            if (row, group) not in paper.values:
                continue
            base = dict(group=group, row=row)
            if (row, group) not in filled:
                reason = spec.reason(row, group) or "no experiment file fills this cell"
                results += [CellResult(**base, metric=m, paper=paper.value(row, group, m), ours=None,
                                       status=f"not reproduced: {reason}") for m in METRICS]
                continue
            exp, cell = filled[(row, group)]
            run_dir = run_directory(runs_root, exp)
            values, prov, status = None, {}, "missing: not run"
            outcome = outcomes.get(exp.name)
            if outcome is not None and not outcome.ok:
                status = f"missing: run failed ({outcome.error.splitlines()[0][:160]})"
            path = run_dir / RESULT_FILE
            if path.exists() and (outcome is None or outcome.ok):
                payload = json.loads(path.read_text())
                prov = payload.get("provenance", {})
                values = measured(payload, cell.measure, cell.split)
                status = "measured" if values else f"missing: no {cell.measure!r} on split {cell.split!r} in {path.name}"
            for m in METRICS:
                results.append(CellResult(
                    **base, metric=m, paper=paper.value(row, group, m), ours=(values or {}).get(m), status=status,
                    experiment=exp.name, our_model=exp.our_model, profile=exp.profile_label,
                    dataset=exp.dataset_label, device=str(prov.get("device") or exp.shared.get("device", "")),
                    code_version=_code_version(prov.get("code_version")), date=str(prov.get("created", "")),
                    run_dir=str(run_dir),
                ))
    return results


@dataclass
class Comparison:
    """The gain of ``row`` over ``baseline`` in one group and metric, in the paper and in our runs."""

    group: str
    baseline: str
    row: str
    metric: str
    paper_gain: float
    our_gain: float | None
    verdict: str


def compare(spec: TableSpec, paper: PaperTable, cells: Sequence[CellResult]) -> list[Comparison]:
    """Direction of every gain the table's ``comparisons`` name: does ours point the paper's way?"""
    ours = {(c.group, c.row, c.metric): c.ours for c in cells}
    out = []
    for group in paper.groups:
        for baseline, row in spec.comparisons:
            if (baseline, group) not in paper.values or (row, group) not in paper.values:
                continue
            for m in METRICS:
                paper_gain = improvement(paper.value(baseline, group, m), paper.value(row, group, m), m)
                a, b = ours.get((group, baseline, m)), ours.get((group, row, m))
                our_gain = None if a is None or b is None else improvement(a, b, m)
                verdict = "not measured" if our_gain is None else direction_verdict(paper_gain, our_gain)
                out.append(Comparison(group, baseline, row, m, paper_gain, our_gain, verdict))
    return out


# ----------------------------------------------------------------------------- writing results


def _fmt(value: float | None, metric: str, signed: bool = False) -> str:
    if value is None:
        return "—"
    spec = ".3f" if metric == "ssim" else ".2f"
    return format(value, ("+" if signed else "") + spec)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def render_markdown(spec: TableSpec, paper: PaperTable, cells: Sequence[CellResult], comparisons: Sequence[Comparison],
                    outcomes: dict[str, RunOutcome]) -> str:
    """The table laid out like the paper's, ours beside the paper's, then gains and provenance."""
    lines = [f"# {paper.title} — reproduction", "",
             f"**Profile: {spec.profile_label}.** Columns `ours` are measured by `hiralign reproduce {spec.table} "
             f"--profile {spec.profile}`; columns `paper` are the paper's numbers (params/paper/paper_numbers.yaml)."]
    if spec.profile == "mini":
        lines += ["", "> mini (synthetic stand-in): the embedded synthetic benchmark stands in for the paper's datasets "
                      "and every model is shrunk to run on a CPU. Absolute values are not comparable with the paper's; "
                      "compare the *direction* of each gain (below)."]
    by_key = {(c.group, c.row, c.metric): c for c in cells}
    for group in paper.groups:
        rows = [r for r in paper.rows if (r, group) in paper.values]
        lines += ["", f"## {group}", "",
                  "| method (paper) | our model | " + " | ".join(f"{m.upper()} ours | {m.upper()} paper" for m in METRICS)
                  + " | status |", "|---|---|" + "---|---|" * len(METRICS) + "---|"]
        for row in rows:
            first = by_key[(group, row, METRICS[0])]
            values = " | ".join(f"{_fmt(by_key[(group, row, m)].ours, m)} | {_fmt(by_key[(group, row, m)].paper, m)}"
                                for m in METRICS)
            lines.append(f"| {row} | {first.our_model or '—'} | {values} | {first.status} |")
    if comparisons:
        lines += ["", "## Direction of the gains", "",
                  "Gain = improvement of the second row over the first (PSNR, SSIM: increase; SAM: decrease). "
                  "**DISAGREES** marks a gain whose direction differs from the paper's.", "",
                  "| group | baseline -> row | metric | paper gain | our gain | verdict |", "|---|---|---|---|---|---|"]
        for c in comparisons:
            verdict = f"**{c.verdict}**" if c.verdict == "DISAGREES" else c.verdict
            lines.append(f"| {c.group} | {c.baseline} -> {c.row} | {c.metric.upper()} | {_fmt(c.paper_gain, c.metric, True)}"
                         f" | {_fmt(c.our_gain, c.metric, True)} | {verdict} |")
    mappings = list(dict.fromkeys(exp.mapping for exp in spec.experiments if exp.mapping))
    if mappings:
        lines += ["", "## Paper methods and ours", ""] + [f"- {m}" for m in mappings]
    lines += ["", "## Provenance", "", "| experiment | our model | profile | dataset | device | code version | date | run |",
              "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for c in cells:
        if c.experiment and c.experiment not in seen:
            seen.add(c.experiment)
            state = outcomes.get(c.experiment)
            took = f" ({state.seconds:.0f} s)" if state else ""
            lines.append(f"| {c.experiment} | {c.our_model} | {c.profile} | {c.dataset} | {c.device} | {c.code_version} "
                         f"| {c.date} | `{c.run_dir}`{took} |")
    notes = list(paper.notes) + spec.notes
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("table", "group", "row", "metric", "paper", "ours", "status", "experiment", "our_model", "profile",
               "dataset", "device", "code_version", "date", "run_dir")


def write_results(spec: TableSpec, paper: PaperTable, cells: Sequence[CellResult], comparisons: Sequence[Comparison],
                  outcomes: dict[str, RunOutcome], results_dir: Path | str) -> dict[str, Path]:
    """Write ``<table>.md`` (paper layout), ``<table>.csv`` (one row per cell and metric) and
    ``<table>.json`` (everything, read by notebooks/06_tables) into ``results_dir``."""
    import csv
    import io

    from hiralign.report import code_version

    folder = Path(results_dir)
    paths = {kind: folder / f"{spec.table}.{kind}" for kind in ("md", "csv", "json")}
    _write_atomic(paths["md"], render_markdown(spec, paper, cells, comparisons, outcomes))
    buf = io.StringIO()
    buf.write(f"# {paper.title}; profile: {spec.profile_label}; paper = the paper's numbers, ours = measured\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in cells:
        writer.writerow([spec.table] + [getattr(c, k) for k in CSV_COLUMNS[1:]])
    _write_atomic(paths["csv"], buf.getvalue())
    payload = {
        "table": spec.table, "title": paper.title, "profile": spec.profile, "profile_label": spec.profile_label,
        "groups": list(paper.groups), "rows": list(paper.rows), "metrics": list(METRICS),
        "cells": [vars(c) for c in cells], "comparisons": [vars(c) for c in comparisons],
        "runs": [{"experiment": o.name, "run_dir": str(o.run_dir), "ok": o.ok, "error": o.error,
                  "seconds": round(o.seconds, 1), "ran": o.ran, "skipped": o.skipped, "cached": o.cached}
                 for o in outcomes.values()],
        "notes": list(paper.notes) + spec.notes,
        "provenance": {"code_version": code_version(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    _write_atomic(paths["json"], json.dumps(payload, indent=1) + "\n")
    return paths


# ----------------------------------------------------------------------------- the grid


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


def plan(spec: TableSpec, runs_root: Path | str = "runs/reproduce", params_root: Path | str = PARAMS_ROOT,
         notebooks_dir: Path | str = NOTEBOOKS_DIR, data_root: Path | str = REPO_ROOT) -> list[tuple[Experiment, Path, dict]]:
    """Per experiment of ``spec``: its run directory and the pipeline parameter file it will run.
    Raises :class:`ReproduceError` listing every parameter that no notebook declares."""
    declared = declared_parameters(notebooks_dir)
    missing_nb = [s for s in STAGES if s not in declared]
    if missing_nb:
        raise ReproduceError(f"notebook(s) {missing_nb} are missing from {notebooks_dir}")
    paper = load_paper_numbers(Path(params_root) / "paper_numbers.yaml").get(spec.table)
    problems = [p for exp in spec.experiments for p in validate(exp, declared, paper)]
    if problems:
        raise ReproduceError("\n".join(problems))
    runs = []
    for exp in spec.experiments:
        run_dir = run_directory(runs_root, exp)
        runs.append((exp, run_dir, pipeline_config(exp, run_dir, stage_overrides(exp, declared, Path(data_root)))))
    return runs


def reproduce(table: str, profile: str = "mini", executor: str = "local", jobs: int = 1,
              runs_root: Path | str = "runs/reproduce", results_dir: Path | str = "results", *,
              params_root: Path | str = PARAMS_ROOT, notebooks_dir: Path | str = NOTEBOOKS_DIR,
              force: bool = False, slurm: dict | None = None, data_root: Path | str = REPO_ROOT,
              log: Log = print) -> TableRun:
    """Run every experiment of ``table`` (resumable) and write ``results_dir/<table>.{md,csv,json}``.

    ``executor="local"`` runs ``jobs`` runs at a time on this machine; ``"slurm"`` submits one
    submitit job per run (``slurm``: :class:`hiralign.executors.SlurmSettings` fields overriding the
    profile's ``slurm`` defaults, e.g. ``{"cluster": "local"}``). Required dataset paths are relative
    to ``data_root`` (the repository root); they are checked first and a missing one raises
    :class:`MissingDatasetError` at once, before anything runs.
    """
    if executor not in EXECUTORS:
        raise ReproduceError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    start = time.perf_counter()
    spec = load_table(table, profile, params_root)
    check_datasets(spec, _read_yaml(Path(params_root) / DEFAULTS_FILE), Path(data_root))  # before anything else
    runs = plan(spec, runs_root, params_root, notebooks_dir, data_root)
    paper = load_paper_numbers(Path(params_root) / "paper_numbers.yaml")[spec.table]
    runs_root = Path(runs_root).resolve()
    cache_dir = runs_root / profile / "stage-cache"
    threads = max(1, (os.cpu_count() or 1) // jobs) if executor == "local" and jobs > 1 else None
    job_list, configs = [], {}
    for exp, run_dir, config in runs:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / "params.yaml"
        header = (f"# {spec.table} / {exp.name} [{exp.profile_label}] resolved from {exp.path}\n"
                  f"# paper backbone -> ours: {exp.our_model}; {exp.mapping}\n")
        _write_atomic(config_path, header + yaml.safe_dump(config, sort_keys=False))
        job_list.append(RunJob(exp.name, config_path, run_dir, Path(notebooks_dir).resolve(), cache_dir, threads, force))
        configs[exp.name] = config
    log(f"{spec.table} [{spec.profile_label}]: {len(job_list)} run(s) under {runs_root / profile / spec.table}")
    outcomes: list[RunOutcome] = []
    for phase in leaders_first(job_list, configs):
        if executor == "local":
            outcomes += run_local(phase, jobs, log)
        else:
            settings = {**spec.experiments[0].slurm, "parallelism": jobs, **(slurm or {})}
            settings.setdefault("folder", runs_root / profile / spec.table / "submitit")
            outcomes += run_slurm(phase, SlurmSettings(**settings), log)
    by_name = {o.name: o for o in outcomes}
    cells = collect(spec, paper, by_name, runs_root)
    comparisons = compare(spec, paper, cells)
    paths = write_results(spec, paper, cells, comparisons, by_name, results_dir)
    result = TableRun(spec.table, outcomes, paths, time.perf_counter() - start)
    failed = [o.name for o in outcomes if not o.ok]
    log(f"{spec.table}: wrote {paths['md']} and {paths['csv']} in {result.seconds:.0f} s"
        + (f"; FAILED runs: {failed} (run the same command again to resume)" if failed else ""))
    return result


# ----------------------------------------------------------------------------- views (notebooks/06_tables)


def read_results(results_dir: Path | str, table: str) -> dict:
    """The ``<table>.json`` that :func:`reproduce` wrote into ``results_dir``."""
    path = Path(results_dir) / f"{table_name(table)}.json"
    if not path.exists():
        raise ReproduceError(f"{path} does not exist; run `hiralign reproduce {table_name(table)}` first")
    return json.loads(path.read_text())


def disagreements(results: dict) -> list[dict]:
    """The gains whose direction in our runs differs from the paper's."""
    return [c for c in results.get("comparisons", []) if c["verdict"] == "DISAGREES"]


def _role_colour(row: str) -> str:
    """Source-only rows grey, adapted (ours) rows blue, the rest (baselines, ablations) teal."""
    if "ICVL" in row:
        return "#9e9e9e"
    if "Ours" in row or "Proxy + Generated" in row:
        return "#1f77b4"
    return "#5fa8a0"


def plot_rows(results: dict, metric: str = "psnr"):
    """Bars of ``metric`` for every reproduced row: one column of panels per group, ours on top,
    the paper's below (their scales differ under the mini profile, so each panel has its own axis)."""
    import matplotlib.pyplot as plt

    cells = [c for c in results["cells"] if c["metric"] == metric and c["ours"] is not None]
    if not cells:
        raise ReproduceError(f"{results['table']}: no measured {metric} values to plot")
    groups = [g for g in results["groups"] if any(c["group"] == g for c in cells)]
    fig, axes = plt.subplots(2, len(groups), figsize=(max(4.0, 0.6 * len(cells) / len(groups) + 2.5) * len(groups), 6.0),
                             squeeze=False)
    for j, group in enumerate(groups):
        rows = [c for c in cells if c["group"] == group]
        for i, (key, label) in enumerate((("ours", f"ours: {results['profile_label']}"), ("paper", "paper"))):
            ax = axes[i][j]
            values = [c[key] for c in rows]
            ax.bar(range(len(rows)), values, color=[_role_colour(c["row"]) for c in rows])
            lo, hi = min(values), max(values)
            pad = 0.15 * (hi - lo) + (0.3 if metric == "psnr" else 0.005 if metric == "ssim" else 0.2)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_xticks(range(len(rows)), [c["row"] for c in rows], rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{group} — {label}", fontsize=9)
            ax.set_ylabel(metric.upper())
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_gains(results: dict, metric: str = "psnr"):
    """The gain of each compared row over its baseline, the paper's beside ours; gains whose direction
    disagrees with the paper's are drawn red in both panels."""
    import matplotlib.pyplot as plt

    comps = [c for c in results.get("comparisons", []) if c["metric"] == metric]
    if not comps:
        raise ReproduceError(f"{results['table']}: no gain comparisons for {metric}")
    labels = [f"{c['group']}: {c['baseline']} -> {c['row']}" for c in comps]
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 0.45 * len(comps) + 1.6), sharey=True)
    for ax, key, title in ((axes[0], "paper_gain", "paper"), (axes[1], "our_gain", f"ours ({results['profile_label']})")):
        values = [c[key] if c[key] is not None else 0.0 for c in comps]
        colours = ["#d62728" if c["verdict"] == "DISAGREES" else "#1f77b4" for c in comps]
        ax.barh(range(len(comps)), values, color=colours)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(f"gain in {metric.upper()} — {title}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(comps)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiralign reproduce",
        description="Regenerate a table of the paper (Section IV): run its experiments through the notebook "
                    "chain and write results/<table>.md/.csv with our numbers beside the paper's.")
    parser.add_argument("tables", nargs="+", help="table1 ... table11 (also 6 or VI), or 'all'")
    parser.add_argument("--profile", choices=PROFILES, default="mini",
                        help="paper: full size on GPU with the real datasets; mini: CPU-sized on the synthetic stand-in")
    parser.add_argument("--executor", choices=EXECUTORS, default="local", help="local process pool or SLURM via submitit")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (local workers / SLURM array parallelism)")
    parser.add_argument("--runs-root", default=str(REPO_ROOT / "runs" / "reproduce"),
                        help="one run directory per experiment below it")
    parser.add_argument("--results-dir", default=str(REPO_ROOT / "results"), help="where <table>.md/.csv/.json go")
    parser.add_argument("--params-root", default=str(PARAMS_ROOT), help=argparse.SUPPRESS)
    parser.add_argument("--notebooks", default=str(NOTEBOOKS_DIR), help="folder of the numbered notebooks")
    parser.add_argument("--force", action="store_true", help="rerun every stage of every run")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved parameter files and exit")
    slurm = parser.add_argument_group("SLURM (--executor slurm); defaults come from the profile")
    slurm.add_argument("--cluster", choices=("slurm", "local", "debug"), help="submitit cluster (local: subprocesses here)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--gpus", type=int, dest="gpus_per_node", help="GPUs per job")
    slurm.add_argument("--time-min", type=int, dest="timeout_min", help="time limit per job (minutes)")
    slurm.add_argument("--mem-gb", type=int, dest="mem_gb", help="memory per job (GB)")
    slurm.add_argument("--cpus", type=int, dest="cpus_per_task", help="CPU cores per job")
    return parser


def reproduce_main(argv: Sequence[str] | None = None) -> int:
    """``hiralign reproduce`` entry point; returns the exit status (0: every run finished)."""
    args = build_parser().parse_args(argv)
    try:
        tables = list_tables(args.params_root) if args.tables == ["all"] else [table_name(t) for t in args.tables]
        if args.dry_run:
            for table in tables:
                spec = load_table(table, args.profile, args.params_root)
                for exp, _, config in plan(spec, args.runs_root, args.params_root, args.notebooks):
                    print(f"# {table}/{exp.name} [{spec.profile_label}] {exp.our_model}")
                    print(yaml.safe_dump(config, sort_keys=False))
            return 0
        slurm = {k: getattr(args, k) for k in ("cluster", "partition", "gpus_per_node", "timeout_min", "mem_gb",
                                               "cpus_per_task") if getattr(args, k) is not None}
        status = 0
        for table in tables:
            run = reproduce(table, args.profile, args.executor, args.jobs, args.runs_root, args.results_dir,
                            params_root=args.params_root, notebooks_dir=args.notebooks, force=args.force, slurm=slurm)
            print("\n" + run.paths["md"].read_text())
            status = status or (0 if run.ok else 1)
        return status
    except ReproduceError as err:
        print(f"hiralign reproduce: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(reproduce_main())
