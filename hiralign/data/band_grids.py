"""Wavelength-grid reconciliation (the ``band_grid`` parameter): source and target cubes put on one grid,
the target keeping its bands inside the source range and the source linearly resampled onto them
(:func:`align_band_grids`, :func:`resample_bands`, never extrapolating), and the grids as text.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from hiralign.data.cube import Cube, CubeError
from hiralign.data.loaders import DatasetError
from hiralign.stages import ParameterError

#: Values of the ``band_grid`` parameter (:func:`align_band_grids`).
BAND_GRIDS = ("common", "error")


def grid_text(wavelengths: np.ndarray) -> str:
    """``"420..720 nm (31 bands)"``."""
    wl = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    return f"{wl[0]:g}..{wl[-1]:g} nm ({wl.size} bands)"


def nm_text(values: np.ndarray) -> str:
    """``"710, 720 nm"``; ``"none"`` for no values."""
    return ", ".join(f"{w:g}" for w in values) + " nm" if len(values) else "none"


def resample_bands(cube: Cube, wavelengths: np.ndarray) -> Cube:
    """``cube`` linearly interpolated along wavelength onto ``wavelengths`` (nm), pixel by pixel exactly as
    :func:`numpy.interp` (vectorised over pixels; a wavelength on the cube's grid keeps its band as is).
    Never extrapolates: a wavelength outside the cube's range (by more than 1e-6 nm) is a CubeError.
    ``meta["resampled_from"]`` records the grid it came from."""
    new = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    wl = cube.wavelengths
    if new.size == 0 or new.min() < wl[0] - 1e-6 or new.max() > wl[-1] + 1e-6:
        span = grid_text(new) if new.size else "no wavelengths"
        raise CubeError(f"{cube.name}: covers {grid_text(wl)}; resampling it to {span} would extrapolate")
    if new.size == wl.size and np.array_equal(new, wl):
        return cube
    new = np.clip(new, wl[0], wl[-1])
    if wl.size == 1:
        data = np.repeat(cube.data, new.size, axis=0)
    else:
        i = np.clip(np.searchsorted(wl, new, side="right") - 1, 0, wl.size - 2)
        t = ((new - wl[i]) / (wl[i + 1] - wl[i]))[:, None, None]
        low = cube.data[i].astype(np.float64)
        data = (low + (cube.data[i + 1] - low) * t).astype(np.float32)
    return cube.replace(data, wavelengths=new, meta={"resampled_from": grid_text(wl)})


def _grids(cubes: list[Cube]) -> list[np.ndarray]:
    seen: dict[tuple, np.ndarray] = {}
    for c in cubes:
        seen.setdefault(tuple(c.wavelengths), c.wavelengths)
    return list(seen.values())


def _only_in(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([w for w in a if not np.any(np.isclose(w, b, rtol=0.0, atol=1e-6))])


def align_band_grids(splits: dict[str, list[Cube]], band_grid: str = "common",
                     log: Callable[[str], None] = print) -> tuple[dict[str, list[Cube]], np.ndarray, dict]:
    """Put the four splits on one wavelength grid; returns the splits, the grid and what was done (for the
    benchmark parameters: ``band_grid``, ``bands_dropped``, ``band_grids``; empty when nothing was).

    Same grid: nothing happens. ``common``: the target keeps its wavelengths inside the source range
    (the bands outside it are dropped) and every source cube is resampled onto them by linear
    interpolation along wavelength (:func:`resample_bands`, never extrapolating); one line is logged.
    ``error``: a DatasetError naming both grids. The target scenes must share one grid either way."""
    if band_grid not in BAND_GRIDS:
        raise ParameterError(f"00_data: band_grid must be one of {', '.join(BAND_GRIDS)}, got {band_grid!r}")
    target = _grids([c for n in ("target_observed", "target_unobserved") for c in splits[n]])
    source = _grids([c for n in ("source_train", "source_test") for c in splits[n]])
    if len(target) > 1:
        raise DatasetError(f"00_data: the target scenes use {len(target)} wavelength grids "
                           f"({'; '.join(grid_text(g) for g in target)}); give them one grid (00_data.wavelengths)")
    grid = target[0] if target else source[0]
    if all(g.size == grid.size and np.array_equal(g, grid) for g in source):
        return splits, grid, {}
    source_text = "; ".join(grid_text(g) for g in source)
    if band_grid == "error":
        every_source = np.unique(np.concatenate(source))
        raise DatasetError(f"00_data: the source and target wavelength grids differ (band_grid=error): target "
                           f"{grid_text(grid)}, source {source_text}; only in the target: "
                           f"{nm_text(_only_in(grid, every_source))}; only in the source: "
                           f"{nm_text(_only_in(every_source, grid))}. Set band_grid=common to keep the "
                           f"target bands inside the source range and resample the source onto them")
    low, high = max(g[0] for g in source), min(g[-1] for g in source)
    keep = (grid >= low - 1e-6) & (grid <= high + 1e-6)
    if not keep.any():
        raise DatasetError(f"00_data: no target band lies inside the source range {low:g}..{high:g} nm (target "
                           f"{grid_text(grid)}, source {source_text}); the grids cannot be aligned without extrapolating")
    common, dropped = grid[keep], grid[~keep]
    aligned = {}
    for name, cubes in splits.items():
        if name.startswith("target"):
            aligned[name] = cubes if keep.all() else [c.replace(c.data[keep], wavelengths=common) for c in cubes]
        else:
            aligned[name] = [resample_bands(c, common) for c in cubes]
    log(f"band grid: target {grid_text(grid)}, source {source_text} -> common {grid_text(common)}; target bands "
        f"dropped (outside the source range): {nm_text(dropped)}; source resampled onto it by linear interpolation")
    record = {"band_grid": "common", "bands_dropped": [float(w) for w in dropped],
              "band_grids": {"target": grid_text(grid), "source": source_text, "common": grid_text(common)}}
    return aligned, common, record
