"""Result tables with provenance (JSON + markdown + CSV) and the figures of notebooks 04 and 05.

A :class:`Table` is a named list of rows under fixed columns. :func:`write_tables` writes a set of
tables and one provenance record (:func:`provenance`: parameters, code version, dataset, seed,
device, wall time, library versions) as

* ``<stem>.json`` -- ``{"provenance": {...}, "tables": {name: {"title", "columns", "rows"}}}``,
* ``<stem>.md``   -- every table as a markdown table under its title, provenance at the end,
* ``<stem>.csv``  -- the first table; every further table as ``<stem>_<name>.csv``. Each CSV starts
  with ``# key: value`` provenance lines (read with ``pandas.read_csv(path, comment="#")``).

Each file is written atomically (temp file + rename). The plotting helpers only draw; they take
arrays and records and return the matplotlib figure so notebooks stay thin.
"""
from __future__ import annotations

import csv
import io
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hiralign.store import PLAIN_TYPES, code_version, plain_value, write_text_atomic

#: Number formats of the usual metric columns in markdown (CSV and JSON keep full precision).
DEFAULT_FORMATS = {"psnr": ".2f", "ssim": ".4f", "sam": ".2f", "spr": ".3f", "srec": ".3f", "loss": ".4g",
                   "d_psnr": "+.2f", "d_ssim": "+.4f", "d_sam": "+.2f",
                   # stage-2 quality (hiralign.evaluate.stage2_quality) and sweeps (hiralign.sweep)
                   "ssim_to_proxy": ".3f", "ssim_unrelated": ".3f", "between_guides": ".3f", "across_proxies": ".3f",
                   "colour_distance": ".4f", "nsam_synthesized": ".2f", "nsam_proxy": ".2f", "nsam_w1": ".3f",
                   "adapted": ".2f", "proxy-only": ".2f", "effect": "+.3f", "ci_low": "+.3f", "ci_high": "+.3f",
                   # intervals and paired comparisons (hiralign.statistics, hiralign.evaluate.paired_comparisons)
                   "psnr_low": ".2f", "psnr_high": ".2f", "ssim_low": ".4f", "ssim_high": ".4f", "sam_low": ".2f",
                   "sam_high": ".2f", "difference": "+.4f", "difference_low": "+.4f", "difference_high": "+.4f",
                   "over_replicates_low": "+.4f", "over_replicates_high": "+.4f", "p_wilcoxon": ".3g"}


def _plain(value: Any) -> Any:
    """A JSON-friendly version of ``value`` (numpy scalars/arrays, paths, tuples)."""
    if isinstance(value, PLAIN_TYPES):
        return plain_value(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class Table:
    """A named table: ``columns`` and ``rows`` (one list of values per row), with a display title."""

    name: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    title: str = ""
    formats: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"table {self.name!r}: duplicate column names in {self.columns}")
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.name!r}: row {i} has {len(row)} values for {len(self.columns)} columns")

    @classmethod
    def from_records(cls, name: str, records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                     title: str = "", formats: Mapping[str, str] | None = None) -> "Table":
        """A table from a list of dicts; ``columns`` defaults to the keys of the first record."""
        if columns is None:
            columns = list(records[0]) if records else []
        rows = [[_plain(rec.get(c)) for c in columns] for rec in records]
        return cls(name, list(columns), rows, title, dict(formats or {}))

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column."""
        return [dict(zip(self.columns, row)) for row in self.rows]

    def _cell(self, column: str, value: Any) -> str:
        if value is None:
            return ""
        spec = self.formats.get(column, DEFAULT_FORMATS.get(column))
        if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, spec)
        return str(value)

    def _shown_columns(self) -> list[tuple[str, str, str | None, str | None]]:
        """Markdown columns ``(header, value, low, high)``: a column ``X`` with ``X_low`` / ``X_high``
        is shown as one ``X [95% CI]`` column, a lone ``X_low`` / ``X_high`` pair as ``X (95% CI)``."""
        names = set(self.columns)
        shown = []
        for c in self.columns:
            for suffix in ("_low", "_high"):
                if c.endswith(suffix) and {c[: -len(suffix)] + "_low", c[: -len(suffix)] + "_high"} <= names:
                    base = c[: -len(suffix)]
                    if suffix == "_low" and base not in names:
                        shown.append((f"{base} (95% CI)", "", c, base + "_high"))
                    break
            else:
                pair = {f"{c}_low", f"{c}_high"} <= names
                shown.append((f"{c} [95% CI]" if pair else c, c, f"{c}_low" if pair else None, f"{c}_high" if pair else None))
        return shown

    def _interval_cell(self, record: Mapping[str, Any], value: str, low: str | None, high: str | None) -> str:
        text = self._cell(value, record[value]) if value else ""
        if low is None or not all(isinstance(record[k], (int, float)) and np.isfinite(record[k]) for k in (low, high)):
            return text
        fmt = value or low
        bounds = f"[{self._cell(fmt, record[low])}, {self._cell(fmt, record[high])}]"
        return f"{text} {bounds}" if text else bounds

    def to_markdown(self) -> str:
        """GitHub markdown: ``### title`` (if any) then the table (intervals merged, :meth:`_shown_columns`)."""
        shown = self._shown_columns()
        lines = [f"### {self.title}", ""] if self.title else []
        lines.append("| " + " | ".join(h for h, *_ in shown) + " |")
        lines.append("|" + "|".join("---" for _ in shown) + "|")
        lines += ["| " + " | ".join(self._interval_cell(rec, *cols) for _, *cols in shown) + " |" for rec in self.records()]
        return "\n".join(lines) + "\n"

    def to_csv(self, header_lines: Sequence[str] = ()) -> str:
        """CSV text (full precision); ``header_lines`` are written first as ``# line`` comments."""
        buf = io.StringIO()
        for line in header_lines:
            buf.write(f"# {line}\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buf.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": _plain(self.rows)}


# ----------------------------------------------------------------------------- provenance


def provenance(params: Mapping[str, Any], dataset: Any = None, seed: int | None = None, device: str | None = None,
               wall_time_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """What produced a result: parameters, code version, dataset, seed, device, wall time, versions."""
    import torch

    record = {
        "params": _plain(dict(params)),
        "code_version": code_version(),
        "dataset": _plain(dataset),
        "seed": seed,
        "device": device,
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }
    record.update(_plain(extra))
    return record


def _provenance_lines(prov: Mapping[str, Any]) -> list[str]:
    """One ``key: value`` line per provenance entry (nested values as compact JSON)."""
    return [f"{k}: {v if isinstance(v, str) else json.dumps(v, sort_keys=True)}" for k, v in prov.items()]


# ----------------------------------------------------------------------------- writing / reading


def tables_markdown(tables: Sequence[Table], prov: Mapping[str, Any] | None = None, heading: str = "",
                    elsewhere: Mapping[str, str] | None = None) -> str:
    """All tables as one markdown document, provenance as a list at the end; ``elsewhere`` maps
    the names of tables left out to where they are (e.g. their CSV file)."""
    parts = [f"## {heading}\n"] if heading else []
    parts += [t.to_markdown() for t in tables]
    if elsewhere:
        parts.append("\n".join(f"- {name}: see `{where}`" for name, where in elsewhere.items()) + "\n")
    if prov:
        parts.append("<details><summary>provenance</summary>\n\n" + "\n".join(f"- {line}" for line in _provenance_lines(prov))
                     + "\n\n</details>\n")
    return "\n".join(parts)


def write_tables(directory: Path | str, stem: str, tables: Sequence[Table], prov: Mapping[str, Any],
                 heading: str = "", markdown: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md``, ``<stem>.csv`` (first table) and ``<stem>_<name>.csv``
    (the others) into ``directory``; return the paths by kind (``json``, ``md``, ``csv``, ``csv:<name>``).

    ``markdown`` names the tables shown in full in ``<stem>.md`` (default: all); the others are
    listed there with their CSV file. JSON and CSV always hold every table."""
    if not tables:
        raise ValueError("write_tables needs at least one table")
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ValueError(f"table names must be unique; got {names}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prov = _plain(dict(prov))
    paths: dict[str, Path] = {}
    payload = {"provenance": prov, "tables": {t.name: t.to_json() for t in tables}}
    paths["json"] = directory / f"{stem}.json"
    write_text_atomic(paths["json"], json.dumps(payload, indent=1, allow_nan=True) + "\n")
    header = _provenance_lines(prov)
    for i, table in enumerate(tables):
        key, path = ("csv", directory / f"{stem}.csv") if i == 0 else (f"csv:{table.name}", directory / f"{stem}_{table.name}.csv")
        write_text_atomic(path, table.to_csv([f"table: {table.name}", *header]))
        paths[key] = path
    shown = [t for t in tables if markdown is None or t.name in markdown]
    elsewhere = {t.name: paths["csv" if i == 0 else f"csv:{t.name}"].name
                 for i, t in enumerate(tables) if markdown is not None and t.name not in markdown}
    paths["md"] = directory / f"{stem}.md"
    write_text_atomic(paths["md"], tables_markdown(shown, prov, heading, elsewhere))
    return paths


def read_tables(path: Path | str) -> tuple[dict[str, Table], dict[str, Any]]:
    """Read a ``<stem>.json`` written by :func:`write_tables`: ``({name: Table}, provenance)``."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"result file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"result file {path} is not valid JSON ({err})") from err
    tables = {name: Table(name, t["columns"], t["rows"], t.get("title", "")) for name, t in payload["tables"].items()}
    return tables, payload.get("provenance", {})


# ----------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], keys: Sequence[str] | None = None):
    """One panel per curve key (e.g. ``loss``, ``val_psnr``) with one line per run.

    ``curves`` maps a run label to ``{"epoch": [...], key: [...], ...}``; an epoch 0 entry (before
    finetuning) is drawn like any other. Keys missing from a run are skipped for it.
    """
    plt = _pyplot()
    if keys is None:
        keys = sorted({k for c in curves.values() for k in c if k != "epoch"})
    if not keys:
        raise ValueError("no curves to plot")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, curve in curves.items():
            values = curve.get(key)
            if values is None or len(values) == 0:
                continue
            epochs = curve.get("epoch", range(len(values)))
            ax.plot(list(epochs)[-len(values):], values, marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_per_image_bars(records: Sequence[Mapping[str, Any]], metric: str = "psnr", method_key: str = "method",
                        image_key: str = "image"):
    """Grouped bars of ``metric`` per image, one bar per method (records: the per-image table)."""
    plt = _pyplot()
    methods = list(dict.fromkeys(r[method_key] for r in records))
    images = list(dict.fromkeys(r[image_key] for r in records))
    value = {(r[method_key], r[image_key]): r[metric] for r in records}
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(images) * max(1, len(methods)) / 2 + 2), 3.4))
    x = np.arange(len(images))
    for i, method in enumerate(methods):
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, [value.get((method, im), np.nan) for im in images], width,
               label=method)
    ax.set_xticks(x, images, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(metric.upper())
    values = [v for v in value.values() if v is not None and np.isfinite(v)]
    if values and metric in ("psnr", "ssim"):
        lo, hi = min(values), max(values)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-6) - (0.5 if metric == "psnr" else 0.0), hi + 0.1 * (hi - lo + 1e-6))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _crop(cube: np.ndarray, box: tuple[int, int, int] | None) -> np.ndarray:
    if box is None:
        return cube
    top, left, size = box
    return cube[:, top : top + size, left : left + size]


def show_crops(panels: Mapping[str, np.ndarray], wavelengths: Sequence[float], box: tuple[int, int, int] | None = None,
               percentile: float = 99.5):
    """Proxy-RGB renders (Eq. 4) of ``(B, H, W)`` cubes side by side, cropped to ``box`` = (top, left,
    size). Cubes of another size (e.g. an SR low-resolution input) are shown uncropped. All panels
    share one brightness scale (the ``percentile`` of the first panel)."""
    from hiralign.spectral import to_rgb

    plt = _pyplot()
    first = next(iter(panels.values()))
    hi = float(np.percentile(to_rgb(np.asarray(first, np.float32), wavelengths), percentile)) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8), squeeze=False)
    for ax, (label, cube) in zip(axes[0], panels.items()):
        cube = np.asarray(cube, np.float32)
        view = _crop(cube, box) if cube.shape[1:] == first.shape[1:] else cube
        ax.imshow(np.clip(np.moveaxis(to_rgb(view, wavelengths), 0, -1) / hi, 0, 1), interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def parse_pixels(text: str, height: int, width: int, n: int = 3, seed: int = 0) -> list[tuple[int, int]]:
    """``"r,c; r,c"`` -> ``[(r, c), ...]`` (checked against the image size); ``""`` -> ``n`` random
    pixels drawn with ``seed``."""
    if not text.strip():
        rng = np.random.default_rng(seed)
        return [(int(rng.integers(height)), int(rng.integers(width))) for _ in range(n)]
    pixels = []
    for item in text.split(";"):
        try:
            r, c = (int(v) for v in item.split(","))
        except ValueError:
            raise ValueError(f"pixels must look like 'row,col; row,col'; got {text!r}") from None
        if not (0 <= r < height and 0 <= c < width):
            raise ValueError(f"pixel ({r}, {c}) outside the {height}x{width} image")
        pixels.append((r, c))
    return pixels


def centre_box(height: int, width: int, size: int) -> tuple[int, int, int]:
    """A ``size`` crop box (top, left, size) at the image centre (the whole image if it is smaller)."""
    size = min(size, height, width) if size > 0 else min(height, width)
    return (height - size) // 2, (width - size) // 2, size


#: Line styles of reference spectra: the clean HSI stands out, the degraded input stays in the back.
SPECTRUM_STYLES = {"clean": {"color": "k", "lw": 2.2}, "input": {"color": "0.65", "lw": 0.9}}


def plot_spectra(panels: Mapping[str, np.ndarray], wavelengths: Sequence[float], pixels: Sequence[tuple[int, int]]):
    """Spectra of every cube in ``panels`` at each (row, col) of ``pixels``, one panel per pixel."""
    plt = _pyplot()
    if not pixels:
        raise ValueError("plot_spectra needs at least one (row, col) pixel")
    fig, axes = plt.subplots(1, len(pixels), figsize=(3.6 * len(pixels), 3.0), squeeze=False)
    for ax, (r, c) in zip(axes[0], pixels):
        for label, cube in panels.items():
            cube = np.asarray(cube)
            if not (0 <= r < cube.shape[1] and 0 <= c < cube.shape[2]):
                raise ValueError(f"pixel ({r}, {c}) outside {label!r} of shape {cube.shape}")
            ax.plot(wavelengths, cube[:, r, c], label=label, **SPECTRUM_STYLES.get(label, {"lw": 1.4}))
        ax.set_title(f"pixel ({r}, {c})", fontsize=9)
        ax.set_xlabel("wavelength (nm)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("reflectance")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def error_map(restored: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per-pixel mean absolute error over bands, ``(H, W)``."""
    restored, clean = np.asarray(restored, np.float64), np.asarray(clean, np.float64)
    if restored.shape != clean.shape:
        raise ValueError(f"restored {restored.shape} and clean {clean.shape} differ in shape")
    return np.abs(restored - clean).mean(axis=0)


def plot_error_maps(panels: Mapping[str, np.ndarray], clean: np.ndarray, box: tuple[int, int, int] | None = None):
    """Mean-absolute-error maps (:func:`error_map`) of each restored cube against ``clean``, on one
    colour scale so the panels compare directly."""
    plt = _pyplot()
    maps = {label: _crop(error_map(cube, clean)[None], box)[0] for label, cube in panels.items()}
    vmax = max(float(np.percentile(m, 99)) for m in maps.values()) or 1e-6
    fig, axes = plt.subplots(1, len(maps), figsize=(2.8 * len(maps), 2.9), squeeze=False)
    for ax, (label, m) in zip(axes[0], maps.items()):
        im = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{label}\nMAE {m.mean():.4f}", fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="|error| (mean over bands)")
    return fig


def plot_stage2_quality(row: Mapping[str, Any], histograms: Mapping[str, np.ndarray]):
    """Stage-2 quality of one run: the guide measures (left) and the neighbour-angle distributions of
    the synthesized HSIs and the proxies (right); ``row`` is the ``stage2_quality`` table's row."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    names = ["ssim_to_proxy", "between_guides", "across_proxies"]
    left.bar(range(len(names)), [row[n] for n in names], color=["tab:blue", "tab:orange", "tab:green"])
    left.axhline(row["ssim_unrelated"], color="tab:blue", ls="--", lw=1, label="SSIM floor (unrelated layout)")
    left.set_xticks(range(len(names)), ["SSIM to proxy", "1-SSIM between guides", "1-SSIM across proxies"], fontsize=7)
    left.set_ylim(0, 1)
    left.set_title(f"guides ({row['generator']}): colour distance {row['colour_distance']:.4f}", fontsize=9)
    left.legend(fontsize=7)
    edges = np.asarray(histograms["edges"])
    for key, colour in (("proxy", "tab:gray"), ("synthesized", "tab:red")):
        right.stairs(histograms[key], edges, color=colour, label=f"{key} (median {row[f'nsam_{key}']:.2f} deg)")
    right.set_xlabel(f"angle between neighbouring spectra (deg; last bin: >= {edges[-2]:g})")
    right.set_ylabel("fraction of neighbour pairs")
    right.set_title(f"spatial-spectral plausibility: W1 = {row['nsam_w1']:.3f} deg", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_paired(rows: Sequence[Mapping[str, Any]]):
    """The ``paired`` table as a figure: per metric, each comparison and split's mean difference with its
    95% bootstrap interval over images (thick) and its t interval over replicates (thin, when there is
    one); the dashed line is "no difference". Markers are filled where the verdict is distinguishable."""
    plt = _pyplot()
    metrics_ = list(dict.fromkeys(r["metric"] for r in rows))
    labels = list(dict.fromkeys((r["comparison"], r["split"]) for r in rows))
    fig, axes = plt.subplots(1, len(metrics_), figsize=(3.6 * len(metrics_), 0.45 * len(labels) + 1.4), sharey=True,
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics_):
        for y, (comparison, split) in enumerate(labels):
            r = next((r for r in rows if (r["comparison"], r["split"], r["metric"]) == (comparison, split, metric)), None)
            if r is None:
                continue
            colour = f"C{list(dict.fromkeys(c for c, _ in labels)).index(comparison)}"
            for key, lw in (("over_replicates", 1.0), ("difference", 4.0)):
                low, high = r.get(f"{key}_low"), r.get(f"{key}_high")
                if low is not None and high is not None:
                    ax.plot([low, high], [y, y], color=colour, lw=lw, alpha=0.6, solid_capstyle="butt")
            distinct = r["verdict"] != "not distinguishable"
            ax.plot(r["difference"], y, "o", color=colour, mfc=colour if distinct else "white", ms=6)
        ax.axvline(0.0, color="k", ls="--", lw=0.8)
        better = "lower" if metric == "sam" else "higher"
        ax.set_title(f"{metric.upper()} difference ({better} is better)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), [f"{c}\n({s})" for c, s in labels], fontsize=7)
    axes[0][0].invert_yaxis()
    n = max(r["replicates"] for r in rows)
    fig.suptitle(f"paired differences, 95% intervals (thick: over images; thin: over {n} replicates)"
                 if n > 1 else "paired differences, 95% bootstrap interval over the images of one run", fontsize=9)
    fig.tight_layout()
    return fig
