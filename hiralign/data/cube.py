"""The hyperspectral cube container: float32 ``(B, H, W)`` data that always carries its wavelengths."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hiralign.errors import UserError


class CubeError(UserError, ValueError):
    """A hyperspectral cube or its wavelengths are malformed."""


def validate_wavelengths(wavelengths: Any, bands: int) -> np.ndarray:
    """Return ``wavelengths`` as float64 nm after checking length, finiteness and strict increase."""
    wl = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    if wl.size != bands:
        raise CubeError(f"wavelength list has {wl.size} entries but the cube has {bands} bands")
    if not np.all(np.isfinite(wl)):
        raise CubeError("wavelengths contain NaN or infinite values")
    if wl.size > 1 and np.any(np.diff(wl) <= 0):
        bad = int(np.argmax(np.diff(wl) <= 0))
        raise CubeError(
            f"wavelengths must be strictly increasing; wavelengths[{bad}]={wl[bad]:g} nm "
            f">= wavelengths[{bad + 1}]={wl[bad + 1]:g} nm"
        )
    return wl


def validate_data(data: Any) -> np.ndarray:
    """Return ``data`` as a float32 ``(B, H, W)`` array after checking its shape and values."""
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise CubeError(f"a cube must be 3-D (bands, height, width); got shape {arr.shape}")
    if min(arr.shape) == 0:
        raise CubeError(f"a cube must not be empty; got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        n_bad = int(arr.size - finite.sum())
        band = int(np.argmin(finite.reshape(arr.shape[0], -1).all(axis=1)))
        raise CubeError(f"cube has {n_bad} NaN/infinite values (first in band {band})")
    return arr


@dataclass(frozen=True)
class Cube:
    """A hyperspectral image: ``data`` float32 ``(B, H, W)`` nominally in [0, 1], ``wavelengths`` in nm.

    Construction validates: 3-D data, finite values, one strictly increasing wavelength per band.
    ``meta`` holds free-form provenance (source file, scale factor, degradation info ...).
    """

    data: np.ndarray
    wavelengths: np.ndarray
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = validate_data(self.data)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "wavelengths", validate_wavelengths(self.wavelengths, data.shape[0]))

    @property
    def bands(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def height(self) -> int:
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        return int(self.data.shape[2])

    def replace(self, data: np.ndarray | None = None, **changes: Any) -> "Cube":
        """A new cube with other data (same wavelengths unless given) and merged ``meta``."""
        meta = {**self.meta, **changes.pop("meta", {})}
        return Cube(
            data=self.data if data is None else data,
            wavelengths=changes.pop("wavelengths", self.wavelengths),
            name=changes.pop("name", self.name),
            meta=meta,
        )

    def crop(self, top: int, left: int, height: int, width: int) -> "Cube":
        """A spatial crop ``[top:top+height, left:left+width]`` (bounds-checked)."""
        if top < 0 or left < 0 or top + height > self.height or left + width > self.width:
            raise CubeError(
                f"crop ({top}, {left}, {height}, {width}) outside a {self.height}x{self.width} cube"
            )
        return self.replace(self.data[:, top : top + height, left : left + width].copy())

    def __repr__(self) -> str:
        wl = self.wavelengths
        return (
            f"Cube(name={self.name!r}, shape={self.shape}, "
            f"wavelengths={wl[0]:g}..{wl[-1]:g} nm, range=[{self.data.min():.3g}, {self.data.max():.3g}])"
        )
