"""Wavelength handling and the proxy RGB of Eq. 4 (bands nearest 660 / 550 / 470 nm)."""
from __future__ import annotations

from typing import Any

import numpy as np

#: Centre wavelengths (nm) of the red, green and blue bands of the proxy RGB (Eq. 4).
RGB_WAVELENGTHS_NM = (660.0, 550.0, 470.0)

#: The CAVE / embedded-benchmark band grid: 31 bands at 400..700 nm in 10 nm steps.
VISIBLE_31 = np.arange(400.0, 701.0, 10.0)


def nearest_band(wavelengths: Any, target_nm: float, tolerance_nm: float = 30.0) -> int:
    """Index of the band whose centre is closest to ``target_nm``.

    Raises ``ValueError`` when no band lies within ``tolerance_nm`` (e.g. a 700-1000 nm NIR cube
    asked for 470 nm), so a wrong wavelength list never silently yields a wrong RGB.
    """
    wl = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    if wl.size == 0:
        raise ValueError("empty wavelength list")
    idx = int(np.argmin(np.abs(wl - target_nm)))
    if abs(wl[idx] - target_nm) > tolerance_nm:
        raise ValueError(
            f"no band within {tolerance_nm:g} nm of {target_nm:g} nm "
            f"(nearest is {wl[idx]:g} nm; cube covers {wl.min():g}..{wl.max():g} nm)"
        )
    return idx


def rgb_band_indices(wavelengths: Any, tolerance_nm: float = 30.0) -> tuple[int, int, int]:
    """Band indices (r, g, b) nearest 660, 550 and 470 nm, chosen by wavelength (Eq. 4)."""
    return tuple(nearest_band(wavelengths, t, tolerance_nm) for t in RGB_WAVELENGTHS_NM)  # type: ignore[return-value]


def to_rgb(cube: Any, wavelengths: Any = None) -> Any:
    """Proxy RGB of Eq. 4: the bands nearest 660/550/470 nm stacked as (R, G, B).

    ``cube`` is a :class:`~hiralign.data.Cube`, a ``(B, H, W)`` numpy array, or a ``(..., B, H, W)``
    torch tensor; ``wavelengths`` (nm, length B) is required unless ``cube`` carries its own.
    Returns the same kind: float32 ``(3, H, W)`` for arrays/cubes, ``(..., 3, H, W)`` for tensors.
    """
    from hiralign.data.cube import Cube  # local import keeps spectral importable standalone

    if isinstance(cube, Cube):
        wavelengths = cube.wavelengths if wavelengths is None else wavelengths
        cube = cube.data
    if wavelengths is None:
        raise ValueError("to_rgb needs the cube's wavelengths (nm): bands are chosen by wavelength")
    n_bands = cube.shape[-3]
    if len(wavelengths) != n_bands:
        raise ValueError(f"{len(wavelengths)} wavelengths given for a cube with {n_bands} bands")
    idx = list(rgb_band_indices(wavelengths))
    if isinstance(cube, np.ndarray):
        return np.ascontiguousarray(cube[..., idx, :, :], dtype=np.float32)
    return cube[..., idx, :, :]  # torch tensor: keep device and grad


def display_rgb(rgb: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """``(3, H, W)`` RGB to an ``(H, W, 3)`` image for matplotlib, scaled by a high percentile."""
    hi = float(np.percentile(rgb, percentile)) or 1.0
    return np.clip(np.moveaxis(rgb, 0, -1) / hi, 0.0, 1.0)
