"""Writing and viewing results: ``<table>.md`` (the paper's layout), ``.csv`` and ``.json``, and the
plots of notebooks/06_tables."""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from hiralign.executors import RunOutcome
from hiralign.paper_numbers import METRICS, PaperTable
from hiralign.reproduce.collection import CellResult, Comparison
from hiralign.reproduce.spec import ReproduceError, TableSpec, table_name


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
