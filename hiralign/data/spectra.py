"""Real reflectance and illuminant spectra shipped by PyPI packages, resampled to a band grid.

Every spectrum here is a measurement (or, for earthlib's canopy class, a PROSAIL simulation) that
comes with an installed package, so nothing is downloaded:

* colour-science: the ColorChecker (BabelColor average, 24 patches), the PMC collection (30 real
  objects: skin, fruit, foliage ...), the RAWtoACES training set (190 patches), the CIE 2017
  colour-fidelity samples (99), the CIE 1995 test colour samples (14), the NIST CQS samples (15)
  and the CIE / ISO illuminants and light sources;
* earthlib: 7,261 soil, vegetation, non-photosynthetic-vegetation, char and urban spectra
  (400-2450 nm at 10 nm), selectable by any of its type levels, e.g. ``"earthlib/soil"``.

Reflectances are smooth, so they are resampled by linear interpolation at the band centres (exact
when the grid is a subset of the native one, as for 400..700 nm at 10 nm). Illuminants can be spiky
(fluorescent lines), so each band averages the power under a triangular response whose half-width
is the band spacing, as a sensor integrates it. A band outside a native range raises. Results are
cached in memory only.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import numpy as np

from hiralign.spectral import VISIBLE_31

#: Reflectance collections from colour-science: name -> short description.
COLOUR_LIBRARIES = {
    "colorchecker": "X-Rite ColorChecker Classic, BabelColor average (24 patches)",
    "pmc": "PMC real-object collection: skin, fruit, foliage, sky ... (30 patches)",
    "rawtoaces190": "AMPAS RAWtoACES camera-characterisation training set (190 patches)",
    "cie2017": "CIE 2017 colour-fidelity-index test colour samples (99)",
    "cie1995": "CIE 1995 colour-rendering test colour samples (14)",
    "nist-cqs": "NIST Colour Quality Scale 9.0 samples (15)",
}

#: earthlib collections; ``"earthlib/<type>"`` further selects any earthlib type name.
EARTHLIB_LIBRARIES = {
    "earthlib": "earthlib full library: soil, vegetation, npv, char, urban (7,261 spectra)",
    "earthlib-optimized": "earthlib curated endmember subset (313 spectra)",
}


def library_names() -> list[str]:
    """Names accepted by :func:`load_library` (plus ``"earthlib/<type>"`` for any earthlib type)."""
    return [*COLOUR_LIBRARIES, *EARTHLIB_LIBRARIES]


def resample(native_nm: np.ndarray, values: np.ndarray, wavelengths_nm: np.ndarray, what: str) -> np.ndarray:
    """Linear interpolation of ``values`` (..., K) sampled at ``native_nm`` onto ``wavelengths_nm``.

    Raises ``ValueError`` naming ``what`` when a requested band lies outside the native range.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    lo, hi = float(native_nm[0]), float(native_nm[-1])
    if wl.size == 0 or wl.min() < lo - 1e-6 or wl.max() > hi + 1e-6:
        raise ValueError(
            f"{what} covers {lo:g}..{hi:g} nm; cannot resample to "
            f"{wl.min() if wl.size else float('nan'):g}..{wl.max() if wl.size else float('nan'):g} nm"
        )
    flat = values.reshape(-1, values.shape[-1])
    out = np.stack([np.interp(wl, native_nm, row) for row in flat])
    return out.reshape(*values.shape[:-1], wl.size)


def band_average(native_nm: np.ndarray, values: np.ndarray, wavelengths_nm: np.ndarray, what: str) -> np.ndarray:
    """Band-integrated resampling of ``values`` (K,): each band a triangle of half-width = spacing.

    The native curve is linearly interpolated at 1 nm, then averaged under each band's triangular
    response (clipped to the native range). A lone band gets a 10 nm half-width.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    resample(native_nm, values[None], wl, what)  # range check only
    fine = np.arange(native_nm[0], native_nm[-1] + 0.5, 1.0)
    curve = np.interp(fine, native_nm, values)
    half = np.gradient(wl) if wl.size > 1 else np.array([10.0])
    weights = np.clip(1.0 - np.abs(fine[None, :] - wl[:, None]) / half[:, None], 0.0, None)
    return (weights @ curve) / weights.sum(axis=1)


def _from_sds(sds: Any, prefix: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Native wavelengths, (N, K) values and labels of a name -> SpectralDistribution mapping."""
    items = list(sds.items())
    native = np.asarray(items[0][1].wavelengths, dtype=np.float64)
    for name, sd in items:
        if not np.array_equal(sd.wavelengths, native):
            raise ValueError(f"{prefix}: sample {name!r} is on a different wavelength grid")
    values = np.stack([np.asarray(sd.values, dtype=np.float64) for _, sd in items])
    return native, values, tuple(f"{prefix}/{name}" for name, _ in items)


def _from_msds(msds: Any, prefix: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Native wavelengths, (N, K) values and labels of a colour MultiSpectralDistributions."""
    native = np.asarray(msds.wavelengths, dtype=np.float64)
    return native, np.asarray(msds.values, dtype=np.float64).T, tuple(f"{prefix}/{n}" for n in msds.labels)


def _colorchecker() -> tuple:
    import colour

    return _from_sds(colour.SDS_COLOURCHECKERS["BabelColor Average"], "colorchecker")


def _pmc() -> tuple:
    import colour

    return _from_sds(colour.SDS_COLOURCHECKERS["PMC"], "pmc")


def _rawtoaces190() -> tuple:
    from colour.characterisation import read_training_data_rawtoaces_v1

    return _from_msds(read_training_data_rawtoaces_v1(), "rawtoaces190")


def _cie2017() -> tuple:
    import colour
    from colour.quality.cfi2017 import load_TCS_CIE2017

    return _from_msds(load_TCS_CIE2017(colour.SpectralShape(380, 780, 5)), "cie2017")


def _cie1995() -> tuple:
    from colour.quality import SDS_TCS

    return _from_sds(SDS_TCS["CIE 1995"], "cie1995")


def _nist_cqs() -> tuple:
    from colour.quality import SDS_VS

    return _from_sds(SDS_VS["NIST CQS 9.0"], "nist-cqs")


_COLOUR_READERS: dict[str, Callable[[], tuple]] = {
    "colorchecker": _colorchecker,
    "pmc": _pmc,
    "rawtoaces190": _rawtoaces190,
    "cie2017": _cie2017,
    "cie1995": _cie1995,
    "nist-cqs": _nist_cqs,
}


def _earthlib(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """earthlib spectra: the full or optimized library, optionally one type (any of LEVEL_1..3)."""
    import earthlib

    base, _, kind = name.partition("/")
    lib = earthlib.full_library if base == "earthlib" else earthlib.library
    meta = lib.metadata
    keep = np.ones(len(lib), dtype=bool)
    if kind:
        levels = ("LEVEL_1", "LEVEL_2", "LEVEL_3")
        keep = np.zeros(len(lib), dtype=bool)
        for level in levels:
            keep |= (meta[level] == kind).to_numpy()
        if not keep.any():
            known = sorted({str(t) for level in levels for t in meta[level].unique()})
            raise ValueError(f"earthlib has no spectra of type {kind!r}; known types: {', '.join(known)}")
    native = np.asarray(lib.sensor.band_centers, dtype=np.float64)
    if lib.sensor.wavelength_unit.lower().startswith("micro"):
        native = native * 1000.0
    native = np.round(native, 3)  # float32 micrometres -> whole nm
    rows = np.flatnonzero(keep)
    labels = tuple(
        f"earthlib/{meta['LEVEL_2'].iat[i]}/{meta['LEVEL_3'].iat[i]}/{lib.names[i]}" for i in rows
    )
    return native, np.asarray(lib.data[rows], dtype=np.float64), labels


@lru_cache(maxsize=None)
def _native_library(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A library on its native grid: wavelengths (K,), values (N, K) as shipped, labels."""
    if name in _COLOUR_READERS:
        return _COLOUR_READERS[name]()
    if name in EARTHLIB_LIBRARIES or name.startswith("earthlib/") or name.startswith("earthlib-optimized/"):
        return _earthlib(name)
    raise ValueError(f"unknown spectral library {name!r}; choose from {', '.join(library_names())} "
                     "or 'earthlib/<type>' (e.g. earthlib/soil, earthlib/vegetation, earthlib/built)")


def reflectance_in_unit_range(values: np.ndarray) -> np.ndarray:
    """Reflectances forced into [0, 1] without changing spectral shape.

    Negative round-off becomes 0; a fluorescent sample whose reflectance factor exceeds 1 (a few
    RAWtoACES patches reach 1.44) is scaled down by its own maximum.
    """
    values = np.clip(values, 0.0, None)
    peak = values.max(axis=-1, keepdims=True)
    return values / np.maximum(peak, 1.0)


@lru_cache(maxsize=64)
def _load_library(name: str, wavelengths: tuple[float, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    native, values, labels = _native_library(name)
    spectra = reflectance_in_unit_range(resample(native, values, np.asarray(wavelengths), f"library {name!r}"))
    spectra = spectra.astype(np.float32)
    spectra.setflags(write=False)
    return spectra, labels


def load_library(name: str, wavelengths: Any = VISIBLE_31) -> tuple[np.ndarray, tuple[str, ...]]:
    """Reflectance spectra of library ``name`` at ``wavelengths`` (nm).

    Returns ``(spectra, labels)``: a read-only float32 ``(N, B)`` array in [0, 1] and N labels
    ``"<library>/<sample>"``. See :func:`library_names`; ``"earthlib/<type>"`` selects one earthlib
    type (``soil``, ``vegetation``, ``npv``, ``built``, ``impervious`` ...).
    """
    wl = tuple(float(w) for w in np.asarray(wavelengths, dtype=np.float64).reshape(-1))
    return _load_library(name, wl)


def illuminant_names() -> list[str]:
    """Names accepted by :func:`illuminant`: CIE/ISO illuminants, then colour's light sources."""
    import colour

    return [*colour.SDS_ILLUMINANTS.keys(), *colour.SDS_LIGHT_SOURCES.keys()]


@lru_cache(maxsize=64)
def _illuminant(name: str, wavelengths: tuple[float, ...]) -> np.ndarray:
    import colour

    if name in colour.SDS_ILLUMINANTS:
        sd = colour.SDS_ILLUMINANTS[name]
    elif name in colour.SDS_LIGHT_SOURCES:
        sd = colour.SDS_LIGHT_SOURCES[name]
    else:
        raise ValueError(f"unknown illuminant {name!r}; see hiralign.data.spectra.illuminant_names()")
    native = np.asarray(sd.wavelengths, dtype=np.float64)
    spd = band_average(native, np.asarray(sd.values, dtype=np.float64), np.asarray(wavelengths), f"illuminant {name!r}")
    spd = np.clip(spd, 0.0, None)
    if spd.max() <= 0:
        raise ValueError(f"illuminant {name!r} has no power in {wavelengths[0]:g}..{wavelengths[-1]:g} nm")
    spd = (spd / spd.max()).astype(np.float32)
    spd.setflags(write=False)
    return spd


def illuminant(name: str, wavelengths: Any = VISIBLE_31) -> np.ndarray:
    """Relative spectral power of illuminant ``name`` (e.g. ``"D65"``, ``"A"``, ``"FL11"``,
    ``"LED-B3"``) at ``wavelengths`` (nm): read-only float32 ``(B,)`` with maximum 1."""
    wl = tuple(float(w) for w in np.asarray(wavelengths, dtype=np.float64).reshape(-1))
    return _illuminant(name, wl)
