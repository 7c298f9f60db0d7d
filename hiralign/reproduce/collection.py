"""Measured numbers: our PSNR / SSIM / SAM for every cell of the paper's table, read from the runs'
``05_metrics.json`` (the mean over replicates with its 95% t interval), and every gain the table
compares, paired over the same images and replicates and judged at 95% (:mod:`hiralign.statistics`)."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hiralign import statistics
from hiralign.executors import RunOutcome
from hiralign.metrics import HIGHER_IS_BETTER
from hiralign.paper_numbers import METRICS, PaperTable, agreement, improvement, paper_direction
from hiralign.replicates import replicate_dirs
from hiralign.reproduce.planning import job_name, run_directory
from hiralign.reproduce.spec import RESULT_FILE, Cell, Experiment, TableSpec


def _norm(text: Any) -> str:
    return re.sub(r"[\s_]+", "-", str(text).strip().lower())


def one_line(error: str, limit: int = 600) -> str:
    """A run's whole error on one line of a table cell: its lines joined by `` / `` (``|`` would end
    the Markdown cell), cut at ``limit`` characters."""
    text = " / ".join(line.strip() for line in error.replace("|", "/").splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
    """One metric of one paper cell: the paper's value, ours (the mean over ``replicates`` runs, with
    the 95% t interval of the per-replicate means when there are two or more), and where ours came from."""

    group: str
    row: str
    metric: str
    paper: float | None
    ours: float | None
    status: str
    ci_low: float | None = None
    ci_high: float | None = None
    replicates: int = 0  # replicates ``ours`` is the mean of (0: not measured)
    experiment: str = ""
    our_model: str = ""
    profile: str = ""
    dataset: str = ""
    device: str = ""
    code_version: str = ""
    date: str = ""
    run_dir: str = ""  # the experiment's run folder (holding rep0, rep1, ... with several replicates)


def filled_cells(spec: TableSpec) -> dict[tuple[str, str], tuple[Experiment, Cell]]:
    """``(row, group)`` -> the experiment and cell that fill it."""
    return {(cell.row, cell.group): (exp, cell) for exp in spec.experiments for cell in exp.cells}


def table_rows(spec: TableSpec, paper: PaperTable, group: str) -> list[str]:
    """The rows of ``group``: the paper's (those it prints a value for), then the table's
    ``extra_rows`` that an experiment fills in ``group`` (methods the paper does not report, e.g.
    Table IX's UBF rows)."""
    rows = [r for r in paper.rows if (r, group) in paper.values]
    filled = filled_cells(spec)
    return rows + [r for r in spec.extra_rows if (r, group) in filled and r not in rows]


def replicate_means(exp: Experiment, cell: Cell, outcomes: dict[str, RunOutcome], runs_root: Path,
                    replicates: int) -> tuple[list[dict[str, float]], dict[int, str], dict]:
    """Per replicate of ``exp``: ``cell``'s means from its ``05_metrics.json`` (:func:`measured`);
    why each replicate that gave none did not (by replicate index), and the first replicate's provenance."""
    means, problems, prov = [], {}, {}
    for k, run_dir in enumerate(replicate_dirs(run_directory(runs_root, exp), replicates)):
        outcome = outcomes.get(job_name(exp, k, replicates))
        path = run_dir / RESULT_FILE
        if outcome is not None and not outcome.ok:
            problems[k] = f"run failed ({one_line(outcome.error)})" if outcome.error else "run failed"
        elif not path.exists():
            problems[k] = "not run"
        else:
            payload = json.loads(path.read_text())
            prov = prov or payload.get("provenance", {})
            values = measured(payload, cell.measure, cell.split)
            if values:
                means.append(values)
            else:
                problems[k] = f"no {cell.measure!r} on split {cell.split!r} in {path.name}"
    return means, problems, prov


def _missing(problems: dict[int, str], replicates: int) -> str:
    """The status of a cell that some replicates did not measure, naming them."""
    if replicates == 1:
        return f"missing: {problems[0]}"
    return "missing: " + "; ".join(f"replicate rep{k} of {replicates}: {why}" for k, why in problems.items())


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def collect(spec: TableSpec, paper: PaperTable, outcomes: dict[str, RunOutcome], runs_root: Path,
            replicates: int = 1) -> list[CellResult]:
    """Every (group, row, metric) of the paper's table with our number beside it when every replicate
    measured it: the mean of the replicates' means with its 95% t interval (:func:`statistics.t_interval`)."""
    filled = filled_cells(spec)
    results = []
    for group in paper.groups:
        for row in table_rows(spec, paper, group):
            base = dict(group=group, row=row)
            if (row, group) not in filled:
                reason = spec.reason(row, group) or "no experiment file fills this cell"
                results += [CellResult(**base, metric=m, paper=paper.value(row, group, m), ours=None,
                                       status=f"not reproduced: {reason}") for m in METRICS]
                continue
            exp, cell = filled[(row, group)]
            means, problems, prov = replicate_means(exp, cell, outcomes, Path(runs_root), replicates)
            for m in METRICS:
                scores = [v[m] for v in means if m in v]
                interval = statistics.t_interval(scores) if not problems and len(scores) == replicates else None
                results.append(CellResult(
                    **base, metric=m, paper=paper_value(paper, row, group, m), ours=interval.mean if interval else None,
                    status=_missing(problems, replicates) if problems else "measured",
                    ci_low=_finite(interval.low) if interval else None,
                    ci_high=_finite(interval.high) if interval else None, replicates=interval.n if interval else 0,
                    experiment=exp.name, our_model=exp.our_model, profile=exp.profile_label,
                    dataset=exp.dataset_label, device=str(prov.get("device") or exp.shared.get("device", "")),
                    code_version=_code_version(prov.get("code_version")), date=str(prov.get("created", "")),
                    run_dir=str(run_directory(runs_root, exp)),
                ))
    return results


def paper_value(paper: PaperTable, row: str, group: str, metric: str) -> float | None:
    """The paper's ``metric`` of a cell, None for a row the paper does not report."""
    return paper.value(row, group, metric) if (row, group) in paper.values else None


@dataclass
class Comparison:
    """The gain of ``row`` over ``baseline`` in one group and metric: the paper's (one number) and
    ours, paired over the same images and replicates (:func:`statistics.paired_difference`).

    Every gain is an improvement (positive = better; SAM: a decrease). ``gain_low`` / ``gain_high``:
    the 95% bootstrap interval over images; ``replicate_low`` / ``replicate_high``: the 95% t interval
    of the per-replicate mean gains (None with one replicate); ``p_value``: Wilcoxon signed-rank over
    images. ``our_verdict``: better / worse / not distinguishable at 95% (:func:`statistics.verdict`);
    ``agreement``: :func:`hiralign.paper_numbers.agreement` of it and ``paper_direction``. A pair
    the paper does not report (a row only we fill) has ``paper_gain`` None and :data:`NO_PAPER`."""

    group: str
    baseline: str
    row: str
    metric: str
    paper_gain: float | None
    paper_direction: str
    our_gain: float | None = None
    gain_low: float | None = None
    gain_high: float | None = None
    replicate_low: float | None = None
    replicate_high: float | None = None
    p_value: float | None = None
    images: int = 0
    replicates: int = 0
    our_verdict: str = "not measured"
    agreement: str = "not measured"


def row_records(cell: CellResult, measure: str, label: str) -> list[dict[str, Any]]:
    """The per-image scores of ``measure`` in every replicate of a measured cell, their ``method``
    relabelled ``label`` (the paper row) and each marked with its ``replicate``."""
    from hiralign.report import read_tables

    records = []
    for k, run_dir in enumerate(replicate_dirs(cell.run_dir, cell.replicates)):
        tables, _ = read_tables(Path(run_dir) / RESULT_FILE)
        if "per_image" not in tables:
            return []
        records += [{**r, "method": label, "replicate": k} for r in tables["per_image"].records()
                    if _norm(r["method"]) == _norm(measure)]
    return records


def _gain(difference: float, metric: str) -> float:
    """``row - baseline`` as an improvement: negated where lower is better (SAM), never ``-0.0``."""
    return difference if HIGHER_IS_BETTER[metric] else 0.0 - difference


def _gain_interval(low: float, high: float, metric: str) -> tuple[float | None, float | None]:
    """An interval of ``row - baseline`` as an interval of the improvement (None where there is none)."""
    ends = sorted((_gain(low, metric), _gain(high, metric)))
    return _finite(ends[0]), _finite(ends[1])


def paired_gain(comparison: Comparison, records: Sequence[dict[str, Any]], split: str) -> Comparison:
    """``comparison`` with our gain of its row over its baseline, paired over the images both were
    scored on in every replicate (records labelled with the row names, :func:`row_records`)."""
    from hiralign.evaluate import paired_scores  # (imports torch: only when there are scores to pair)

    m = comparison.metric
    a, b = paired_scores(records, comparison.row, comparison.baseline, split, m)
    if a.size == 0:
        return comparison
    d = statistics.paired_difference(a, b, HIGHER_IS_BETTER[m])
    comparison.our_gain = _gain(d.mean, m)
    comparison.gain_low, comparison.gain_high = _gain_interval(d.low, d.high, m)
    comparison.replicate_low, comparison.replicate_high = _gain_interval(d.replicate_low, d.replicate_high, m)
    comparison.p_value = _finite(d.p_value)
    comparison.images, comparison.replicates = d.n_images, d.n_replicates
    comparison.our_verdict = d.verdict
    comparison.agreement = agreement(d.verdict, comparison.paper_direction)
    return comparison


def pair_records(spec: TableSpec, cells: Sequence[CellResult], group: str, baseline: str,
                 row: str) -> tuple[list[dict[str, Any]], str]:
    """The per-image records of both rows of a comparison (:func:`row_records`) and their split;
    ``([], "")`` unless both rows are measured, on the same split."""
    measured_rows = {(c.group, c.row): c for c in cells if c.status == "measured" and c.replicates}
    pair = [measured_rows.get((group, r)) for r in (baseline, row)]
    if not all(pair):
        return [], ""
    specs = [filled_cells(spec)[(r, group)][1] for r in (baseline, row)]
    if specs[0].split != specs[1].split:
        return [], ""
    return [r for c, s, label in zip(pair, specs, (baseline, row)) for r in row_records(c, s.measure, label)], specs[0].split


#: ``paper_direction`` and ``agreement`` of a comparison the paper does not report.
NO_PAPER = "not in the paper"


def compare(spec: TableSpec, paper: PaperTable, cells: Sequence[CellResult]) -> list[Comparison]:
    """Every gain the table's ``comparisons`` name: the paper's beside ours (:func:`paired_gain`);
    a pair with a row the paper does not report gets ours alone."""
    out = []
    for group in paper.groups:
        rows = table_rows(spec, paper, group)
        for baseline, row in spec.comparisons:
            if baseline not in rows or row not in rows:
                continue
            records, split = pair_records(spec, cells, group, baseline, row)
            for m in METRICS:
                in_paper = (baseline, group) in paper.values and (row, group) in paper.values
                paper_gain = improvement(paper.value(baseline, group, m), paper.value(row, group, m), m) if in_paper else None
                comparison = Comparison(group, baseline, row, m, paper_gain, paper_direction(paper_gain) if in_paper else NO_PAPER)
                comparison = paired_gain(comparison, records, split) if records else comparison
                if not in_paper:
                    comparison.agreement = NO_PAPER if comparison.our_verdict != "not measured" else comparison.agreement
                out.append(comparison)
    return out


@dataclass
class FidelityResult:
    """The spectral fidelity of one experiment's synthesized HSIs against the clean target spectra:
    sPr / sRec (HSIGene Eq. 8, the ``stage2_quality`` table of its ``05_metrics.json``), the mean over
    replicates with its 95% t interval when there are two or more."""

    experiment: str
    rows: str  # the table rows the experiment fills
    generator: str
    metric: str  # "spr" or "srec"
    ours: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    replicates: int = 0
    status: str = "measured"


def stage2_row(path: Path) -> dict[str, Any] | None:
    """The ``stage2_quality`` row of a ``05_metrics.json`` (None for a run without a synthesized branch)."""
    table = (json.loads(path.read_text()).get("tables") or {}).get("stage2_quality")
    if not table or not table.get("rows"):
        return None
    return dict(zip([str(c) for c in table["columns"]], table["rows"][0]))


def fidelity(spec: TableSpec, runs_root: Path, replicates: int = 1) -> list[FidelityResult]:
    """sPr and sRec of every experiment whose runs synthesized HSIs (the others are left out)."""
    out = []
    for exp in spec.experiments:
        found = [stage2_row(d / RESULT_FILE) if (d / RESULT_FILE).exists() else None
                 for d in replicate_dirs(run_directory(Path(runs_root), exp), replicates)]
        rows = [r for r in found if r is not None]
        if not rows:
            continue
        label = " / ".join(dict.fromkeys(f"{c.row} @ {c.group}" for c in exp.cells))
        for m in ("spr", "srec"):
            scores = [float(r[m]) for r in rows if r.get(m) is not None]
            if len(scores) < replicates:
                out.append(FidelityResult(exp.name, label, str(rows[0].get("generator", "")), m, None,
                                          status=f"missing: {replicates - len(scores)} of {replicates} replicate(s)"))
                continue
            interval = statistics.t_interval(scores)
            out.append(FidelityResult(exp.name, label, str(rows[0].get("generator", "")), m, interval.mean,
                                      _finite(interval.low), _finite(interval.high), interval.n))
    return out
