"""Writing and viewing results: ``<table>.md`` (the paper's layout, ours as mean ± the half-width of
its 95% interval over replicates, the gains judged at 95%), ``.csv``, ``_gains.csv`` and ``.json``,
and the plots of notebooks/06_tables."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from hiralign.executors import RunOutcome
from hiralign.paper_numbers import AGREES, CONTRADICTS, METRICS, PaperTable
from hiralign.reproduce.collection import CellResult, Comparison, FidelityResult, table_rows
from hiralign.reproduce.spec import ReproduceError, TableSpec, table_name
from hiralign.store import write_text_atomic


def _fmt(value: float | None, metric: str, signed: bool = False) -> str:
    if value is None:
        return "—"
    spec = ".3f" if metric == "ssim" else ".2f"
    return format(value, ("+" if signed else "") + spec)


def _ours(cell: CellResult) -> str:
    """Our value: ``mean ± half-width`` of its 95% t interval over replicates (the mean alone for one)."""
    if cell.ours is None or cell.replicates < 2 or cell.ci_low is None or cell.ci_high is None:
        return _fmt(cell.ours, cell.metric)
    return f"{_fmt(cell.ours, cell.metric)} ± {_fmt((cell.ci_high - cell.ci_low) / 2, cell.metric)}"


def _interval(low: float | None, high: float | None, metric: str) -> str:
    return "—" if low is None or high is None else f"[{_fmt(low, metric, True)}, {_fmt(high, metric, True)}]"


def _replicates_line(spec: TableSpec, replicates: int) -> str:
    """What the intervals cover: with one replicate, the test images only."""
    if replicates == 1:
        return ("**Replicates: 1 per experiment.** `ours` is one run; its gains carry intervals over the test images only: "
                "**training randomness (the seeds of degradation draws, guides, warp sampling, finetuning) is not covered** "
                f"(`hiralign reproduce {spec.table} --replicates N` covers it).")
    return (f"**Replicates: {replicates} per experiment** (derived seeds, hiralign.replicates; replicate k of every "
            "experiment shares its seeds and images). `ours` = mean over replicates ± half-width of its 95% t interval.")


def fidelity_lines(fidelity: Sequence[FidelityResult], replicates: int) -> list[str]:
    """The section on the synthesized HSIs' spectral fidelity (none without such runs)."""
    if not fidelity:
        return []
    lines = ["", "## Spectral fidelity of the synthesized HSIs", "",
             "sPr / sRec (HSIGene Eq. 8; hiralign.metrics): the share of synthesized spectra within the k-NN radius of the "
             "clean target spectra (precision) and of clean target spectra within that of the synthesized ones (recall); "
             "1 is best. Measured by notebook 05 on the run's synthesized set"
             + (f", mean ± half-width of the 95% t interval over {replicates} replicates." if replicates > 1 else ", one run."), "",
             "| experiment | rows | generator | sPr | sRec |", "|---|---|---|---|---|"]
    by_exp: dict[str, dict[str, FidelityResult]] = {}
    for f in fidelity:
        by_exp.setdefault(f.experiment, {})[f.metric] = f

    def value(f: FidelityResult | None) -> str:
        if f is None or f.ours is None:
            return f.status if f is not None else "—"
        half = "" if f.ci_low is None or f.ci_high is None else f" ± {(f.ci_high - f.ci_low) / 2:.3f}"
        return f"{f.ours:.3f}{half}"

    for name, pair in by_exp.items():
        first = next(iter(pair.values()))
        lines.append(f"| {name} | {first.rows} | {first.generator} | {value(pair.get('spr'))} | {value(pair.get('srec'))} |")
    return lines


def render_markdown(spec: TableSpec, paper: PaperTable, cells: Sequence[CellResult], comparisons: Sequence[Comparison],
                    outcomes: dict[str, RunOutcome], replicates: int = 1, fidelity: Sequence[FidelityResult] = ()) -> str:
    """The table laid out like the paper's, ours beside the paper's, then gains and provenance."""
    lines = [f"# {paper.title} — reproduction", "",
             f"**Profile: {spec.profile_label}.** Columns `ours` are measured by `hiralign reproduce {spec.table} "
             f"--profile {spec.profile}" + (f" --scale {spec.scale}" if spec.scale else "")
             + (f" --replicates {replicates}" if replicates > 1 else "")
             + "`; columns `paper` are the paper's numbers (params/paper/paper_numbers.yaml).", "",
             _replicates_line(spec, replicates)]
    if spec.profile == "mini":
        lines += ["", "> mini (synthetic stand-in): the embedded synthetic benchmark stands in for the paper's datasets "
                      "and every model is shrunk to run on a CPU. Absolute values are not comparable with the paper's; "
                      "compare the *direction* of each gain, judged at 95% (below)."]
    if spec.scale:
        lines += ["", f"> **FIXTURE RUN** ({spec.profile} profile, scale `{spec.scale}`): every code path and parameter of the "
                      f"{spec.profile} profile with sizes, steps and epochs shrunk to a CPU, on the data root it was given "
                      "(a fixture root from `hiralign data make-fixture` holds tiny partly synthetic scenes and randomly "
                      "initialised model weights). It shows that the profile runs end to end; its numbers measure nothing."]
    by_key = {(c.group, c.row, c.metric): c for c in cells}
    for group in paper.groups:
        rows = table_rows(spec, paper, group)
        lines += ["", f"## {group}", "",
                  "| method (paper) | our model | " + " | ".join(f"{m.upper()} ours | {m.upper()} paper" for m in METRICS)
                  + " | status |", "|---|---|" + "---|---|" * len(METRICS) + "---|"]
        for row in rows:
            first = by_key[(group, row, METRICS[0])]
            values = " | ".join(f"{_ours(by_key[(group, row, m)])} | {_fmt(by_key[(group, row, m)].paper, m)}"
                                for m in METRICS)
            lines.append(f"| {row} | {first.our_model or '—'} | {values} | {first.status} |")
    if comparisons:
        lines += ["", "## Direction of the gains", "",
                  "Gain = improvement of the second row over the first (PSNR, SSIM: increase; SAM: decrease). Ours is "
                  "paired: the mean over the same images and replicates of the row's score minus the baseline's, with its "
                  "95% bootstrap interval over images, the 95% t interval of the per-replicate mean gains (two or more "
                  "replicates) and the Wilcoxon signed-rank p over images. **Our verdict** is *better* or *worse* only when "
                  "every interval excludes zero on that side and p < 0.05, else *not distinguishable* (fewer than six "
                  "images never reach a verdict). **Agreement**: *agrees at 95%* when our verdict is the paper's direction, "
                  "**contradicts at 95%** when it is distinguishable and opposite, *not distinguishable* otherwise, "
                  "*paper tie* when the paper reports no change. The paper's gains are single numbers without intervals "
                  "(docs/statistics.md)."
                  + (" With one replicate the intervals cover the test images only, not training randomness."
                     if replicates == 1 else ""), "",
                  "| group | baseline -> row | metric | paper gain | our gain [95% CI over images] | 95% CI over replicates "
                  "| p (Wilcoxon) | our verdict | agreement |", "|---|---|---|---|---|---|---|---|---|"]
        for c in comparisons:
            ours = "—" if c.our_gain is None else f"{_fmt(c.our_gain, c.metric, True)} {_interval(c.gain_low, c.gain_high, c.metric)}"
            p = "—" if c.p_value is None else f"{c.p_value:.3g}"
            agree = f"**{c.agreement}**" if c.agreement == CONTRADICTS else c.agreement
            lines.append(f"| {c.group} | {c.baseline} -> {c.row} | {c.metric.upper()} | {_fmt(c.paper_gain, c.metric, True)}"
                         f" | {ours} | {_interval(c.replicate_low, c.replicate_high, c.metric)} | {p} | {c.our_verdict}"
                         f" | {agree} |")
    lines += fidelity_lines(fidelity, replicates)
    mappings = list(dict.fromkeys(exp.mapping for exp in spec.experiments if exp.mapping))
    if mappings:
        lines += ["", "## Paper methods and ours", ""] + [f"- {m}" for m in mappings]
    lines += ["", "## Provenance", "", "| experiment | our model | profile | dataset | device | code version | date | run |",
              "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for c in cells:
        if c.experiment and c.experiment not in seen:
            seen.add(c.experiment)
            runs = [o for name, o in outcomes.items() if name == c.experiment or name.startswith(c.experiment + "/")]
            took = f" ({sum(o.seconds for o in runs):.0f} s)" if runs else ""
            lines.append(f"| {c.experiment} | {c.our_model} | {c.profile} | {c.dataset} | {c.device} | {c.code_version} "
                         f"| {c.date} | `{c.run_dir}`{took} |")
    notes = list(paper.notes) + spec.notes
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("table", "group", "row", "metric", "paper", "ours", "ci_low", "ci_high", "replicates", "status",
               "experiment", "our_model", "profile", "dataset", "device", "code_version", "date", "run_dir")
#: Columns of ``<table>_gains.csv``: one line per comparison and metric (:class:`Comparison`).
GAIN_COLUMNS = ("table", "group", "baseline", "row", "metric", "paper_gain", "paper_direction", "our_gain", "gain_low",
                "gain_high", "replicate_low", "replicate_high", "p_value", "images", "replicates", "our_verdict",
                "agreement")


def _csv(columns: Sequence[str], table: str, items: Sequence, comment: str) -> str:
    """``items`` (dataclasses) as CSV lines of ``columns`` (``table`` first), under a ``#`` comment line."""
    import csv
    import io

    buf = io.StringIO()
    buf.write(f"# {comment}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for item in items:
        writer.writerow([table] + [getattr(item, k) for k in columns[1:]])
    return buf.getvalue()


def write_results(spec: TableSpec, paper: PaperTable, cells: Sequence[CellResult], comparisons: Sequence[Comparison],
                  outcomes: dict[str, RunOutcome], results_dir: Path | str, replicates: int = 1,
                  fidelity: Sequence[FidelityResult] = ()) -> dict[str, Path]:
    """Write ``<table>.md`` (paper layout), ``<table>.csv`` (one row per cell and metric),
    ``<table>_gains.csv`` (one row per comparison and metric) and ``<table>.json`` (everything, read
    by notebooks/06_tables) into ``results_dir``."""
    from hiralign.report import code_version

    folder = Path(results_dir)
    paths = {kind: folder / f"{spec.table}.{kind}" for kind in ("md", "csv", "json")}
    paths["gains"] = folder / f"{spec.table}_gains.csv"
    write_text_atomic(paths["md"], render_markdown(spec, paper, cells, comparisons, outcomes, replicates, fidelity))
    about = f"{paper.title}; profile: {spec.profile_label}; {replicates} replicate(s) per experiment"
    write_text_atomic(paths["csv"], _csv(CSV_COLUMNS, spec.table, cells,
                                     f"{about}; paper = the paper's numbers, ours = measured (mean, 95% t interval)"))
    write_text_atomic(paths["gains"], _csv(GAIN_COLUMNS, spec.table, comparisons,
                                       f"{about}; gains are improvements, ours paired over images and replicates"))
    payload = {
        "table": spec.table, "title": paper.title, "profile": spec.profile, "scale": spec.scale, "profile_label": spec.profile_label,
        "replicates": replicates, "groups": list(paper.groups), "rows": list(paper.rows), "metrics": list(METRICS),
        "cells": [vars(c) for c in cells], "comparisons": [vars(c) for c in comparisons], "fidelity": [vars(f) for f in fidelity],
        "runs": [{"experiment": o.name, "run_dir": str(o.run_dir), "ok": o.ok, "error": o.error,
                  "seconds": round(o.seconds, 1), "ran": o.ran, "skipped": o.skipped, "cached": o.cached}
                 for o in outcomes.values()],
        "notes": list(paper.notes) + spec.notes,
        "provenance": {"code_version": code_version(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    write_text_atomic(paths["json"], json.dumps(payload, indent=1) + "\n")
    return paths


def read_results(results_dir: Path | str, table: str) -> dict:
    """The ``<table>.json`` that :func:`reproduce` wrote into ``results_dir``."""
    path = Path(results_dir) / f"{table_name(table)}.json"
    if not path.exists():
        raise ReproduceError(f"{path} does not exist; run `hiralign reproduce {table_name(table)}` first")
    return json.loads(path.read_text())


def disagreements(results: dict) -> list[dict]:
    """The gains our runs contradict at 95% (distinguishable, and opposite to the paper's direction)."""
    return [c for c in results.get("comparisons", []) if c["agreement"] == CONTRADICTS]


def _role_colour(row: str) -> str:
    """Source-only rows grey, adapted (ours) rows blue, the rest (baselines, ablations) teal."""
    if "ICVL" in row:
        return "#9e9e9e"
    if "Ours" in row or "Proxy + Generated" in row:
        return "#1f77b4"
    return "#5fa8a0"


def plot_rows(results: dict, metric: str = "psnr"):
    """Bars of ``metric`` for every reproduced row: one column of panels per group, ours on top (with
    the 95% t interval over replicates when there are two or more), the paper's below (their scales
    differ under the mini profile, so each panel has its own axis)."""
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
            values = [float("nan") if c[key] is None else c[key] for c in rows]  # paper: None for a row it lacks
            errors = [(c["ci_high"] - c["ci_low"]) / 2 if key == "ours" and c.get("ci_low") is not None else 0.0
                      for c in rows]
            ax.bar(range(len(rows)), values, yerr=errors, color=[_role_colour(c["row"]) for c in rows], capsize=3)
            ends = [v + s * e for v, e in zip(values, errors) for s in (-1, 1) if v == v] or [0.0]
            lo, hi = min(ends), max(ends)
            pad = 0.15 * (hi - lo) + (0.3 if metric == "psnr" else 0.005 if metric == "ssim" else 0.2)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_xticks(range(len(rows)), [c["row"] for c in rows], rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{group} — {label}", fontsize=9)
            ax.set_ylabel(metric.upper())
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _agreement_colour(agreement: str) -> str:
    """Red: contradicts the paper at 95%; blue: agrees at 95%; grey: not distinguishable, tie, not measured."""
    return {CONTRADICTS: "#d62728", AGREES: "#1f77b4"}.get(agreement, "#9e9e9e")


def plot_gains(results: dict, metric: str = "psnr"):
    """The gain of each compared row over its baseline, the paper's beside ours (with its 95% interval
    over images); bars are coloured by the agreement at 95% (:func:`_agreement_colour`) in both panels."""
    import matplotlib.pyplot as plt

    comps = [c for c in results.get("comparisons", []) if c["metric"] == metric]
    if not comps:
        raise ReproduceError(f"{results['table']}: no gain comparisons for {metric}")
    labels = [f"{c['group']}: {c['baseline']} -> {c['row']}" for c in comps]
    colours = [_agreement_colour(c["agreement"]) for c in comps]
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 0.45 * len(comps) + 1.6), sharey=True)
    axes[0].barh(range(len(comps)), [float("nan") if c["paper_gain"] is None else c["paper_gain"] for c in comps], color=colours)
    ours = [c["our_gain"] if c["our_gain"] is not None else 0.0 for c in comps]
    errors = [[o - c["gain_low"] if c["gain_low"] is not None else 0.0 for o, c in zip(ours, comps)],
              [c["gain_high"] - o if c["gain_high"] is not None else 0.0 for o, c in zip(ours, comps)]]
    axes[1].barh(range(len(comps)), ours, xerr=errors, color=colours, ecolor="black", capsize=3)
    for ax, title in ((axes[0], "paper"), (axes[1], f"ours ({results['profile_label']}), 95% CI over images")):
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(f"gain in {metric.upper()} — {title}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(comps)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig
