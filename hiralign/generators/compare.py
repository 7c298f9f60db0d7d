"""The synthesized HSIs of several runs side by side (notebook 07): one :class:`SourceView` per run.

Each run is a folder made by ``hiralign run`` through stage 05 with one synthesis source (the warp
with a guide generator, ``ubf`` or ``hsigene``). A view holds what the run's stage 03 wrote (the
synthesized HSIs and their RGB), its observed proxies and their clean cubes (01_proxy.h5), and the
sPr / sRec notebook 05 measured for the synthesized set against the clean target spectra.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hiralign.evaluate import SYNTHESIZED
from hiralign.store import ArtifactError, RunStore, resolve_run_dir


@dataclass(frozen=True)
class SourceView:
    """One run's synthesized HSIs ``hsi`` (P, G, B, H, W) of its P observed proxies ``proxy_hsi``."""

    label: str
    generator: str
    warped: bool
    hsi: np.ndarray
    rgb: np.ndarray
    proxy_hsi: np.ndarray
    proxy_rgb: np.ndarray
    clean: np.ndarray | None
    wavelengths: np.ndarray
    names: list[str]
    spr: float | None
    srec: float | None


def synthesized_fidelity(run_dir: Path) -> tuple[float | None, float | None]:
    """sPr and sRec of the synthesized set from a run's ``05_metrics.json`` (None without one)."""
    path = run_dir / "05_metrics.json"
    if not path.exists():
        return None, None
    table = (json.loads(path.read_text()).get("tables") or {}).get("spectral_fidelity") or {}
    for row in table.get("rows", []):
        record = dict(zip(table["columns"], row))
        if record.get("set") == SYNTHESIZED:
            return record.get("spr"), record.get("srec")
    return None, None


def load_source(run_dir: Path | str, label: str = "") -> SourceView:
    """The view of one run (its 01_proxy.h5, 02_guides.h5 and 03_warp.h5 must exist and be readable)."""
    run_dir = resolve_run_dir(run_dir)
    store = RunStore(run_dir)
    for record, notebook in (("01_proxy", "01_proxy"), ("02_guides", "02_rgb_guides"), ("03_warp", "03_warp")):
        if not store.exists(record):
            raise ArtifactError(f"{run_dir} has no {record}.h5: run `hiralign run` (or notebook {notebook}) for it first")
    proxy, guides, warp = store.read("01_proxy"), store.read("02_guides"), store.read("03_warp")
    if warp.attrs.get("demo") or guides.attrs.get("demo"):
        raise ArtifactError(f"{run_dir}: its stage-2 records were made in demo mode, not from its proxies")
    observed = np.asarray(proxy["observed"], bool)
    names = [str(n) for n, keep in zip(proxy["names"], observed) if keep]
    hsi = np.asarray(warp["hsi"], np.float32)
    if hsi.shape[0] != len(names):
        raise ArtifactError(f"{run_dir}/03_warp.h5 holds {hsi.shape[0]} proxies, 01_proxy.h5 {len(names)} observed ones; "
                            "rerun 03_warp with max_pairs=0")
    clean = np.asarray(proxy["clean"], np.float32)[observed] if "clean" in proxy else None
    spr, srec = synthesized_fidelity(run_dir)
    generator = str(guides.attrs["generator"])
    return SourceView(label or f"{generator} ({run_dir.name})", generator, bool(warp.attrs.get("warped", True)), hsi,
                      np.asarray(warp["rgb"], np.float32), np.asarray(proxy["proxy"], np.float32)[observed],
                      np.asarray(proxy["proxy_rgb"], np.float32)[observed], clean,
                      np.asarray(proxy["wavelengths"], np.float64), names, spr, srec)


def load_sources(run_dirs: Sequence[Path | str], labels: Sequence[str] = ()) -> list[SourceView]:
    """Views of several runs, which must share their observed proxies (same names and wavelengths)."""
    if labels and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels given for {len(run_dirs)} run folders")
    views = [load_source(d, labels[i] if labels else "") for i, d in enumerate(run_dirs)]
    for view in views[1:]:
        if view.names != views[0].names or not np.array_equal(view.wavelengths, views[0].wavelengths):
            raise ValueError(f"{view.label} was made from other proxies ({view.names}) than {views[0].label} "
                             f"({views[0].names}): compare runs of the same 00/01 stages")
    return views


def fidelity_rows(views: Sequence[SourceView]) -> list[dict]:
    """One row per source: generator, warped or not, HSIs per proxy, sPr and sRec."""
    return [{"source": v.label, "generator": v.generator, "warped": v.warped, "hsis": int(np.prod(v.hsi.shape[:2])),
             "spr": v.spr, "srec": v.srec} for v in views]


def parse_pixels(spec: str, height: int, width: int) -> list[tuple[int, int]]:
    """``"r,c;r,c"`` -> ``[(r, c), ...]`` inside an ``height x width`` image (``ValueError`` otherwise)."""
    pixels = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        try:
            r, c = (int(v) for v in item.split(","))
        except ValueError:
            raise ValueError(f"pixel {item!r} is not 'row,column'") from None
        if not (0 <= r < height and 0 <= c < width):
            raise ValueError(f"pixel ({r}, {c}) lies outside the {height}x{width} image")
        pixels.append((r, c))
    if not pixels:
        raise ValueError(f"no pixels in {spec!r}; give 'row,column;row,column'")
    return pixels
