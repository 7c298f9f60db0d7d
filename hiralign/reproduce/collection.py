"""Measured numbers: our PSNR / SSIM / SAM for every cell of the paper's table, read from the runs'
``05_metrics.json``, and the direction of every gain the table compares."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hiralign.executors import RunOutcome
from hiralign.paper_numbers import METRICS, PaperTable, direction_verdict, improvement
from hiralign.reproduce.planning import run_directory
from hiralign.reproduce.spec import RESULT_FILE, Cell, Experiment, TableSpec


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
