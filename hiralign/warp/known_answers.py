"""Known-answer guides for the warp (stage 2b): transforms of a proxy whose true output is known.

A case is made from a proxy HSI ``(B, H, W)`` in three steps:

1. a **spatial transform** of the HSI (none, a geometric warp, and/or a Gaussian blur), which gives the
   truth: the warp should place the proxy spectra exactly as the transform moved them;
2. the guide RGB = :func:`hiralign.spectral.to_rgb` of the transformed HSI (the Eq. 4 bands);
3. a **photometric change of the RGB only** (gain, gamma, colour cast, noise, JPEG-like quantisation).

What "truth" means. A per-pixel photometric change leaves the layout unchanged, and a convex
combination of proxy spectra cannot -- and should not -- copy the guide's intensity change or noise:
its truth is the proxy HSI under the spatial transform alone (``truths["sharp"]``). A blur is a
spatial transform: its truth is the blurred HSI (``truths["blurred"]``), but the sharp HSI agrees
with the guide's layout as well, so blurred cases carry both truths and :func:`score` reports both
and the better one. ``displacement`` is the known field in the :class:`~hiralign.warp.WarpResult`
convention, (y, x) in pixels, **source (proxy) coordinate minus guide coordinate**: truth(p) =
proxy(p + displacement(p)), bilinear between pixels (``scipy.ndimage.map_coordinates``, order 1, so
the truth stays a convex combination of proxy spectra).

Borders. Geometric warps sample with ``mode="nearest"``. Where a guide pixel's source lies outside
the proxy lattice (the corners of a rotation, the edges of an elastic field) the truth is undefined:
``valid`` is False there and :func:`score` leaves those pixels out of every HSI and displacement
metric (the RGB PSNR against the guide uses all pixels). Flip, affine zoom-in, mosaic, blur and the
photometric cases are valid everywhere (blur uses ``mode="nearest"``, the guide was made the same way).

Everything is deterministic for a seed; each case draws from its own generator keyed by
``(seed, crc32(name))``, so a case is identical whether made alone or within the full set.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from hiralign import metrics
from hiralign.spectral import to_rgb

KINDS = ("photometric", "geometric", "combined", "new layout")

#: Standard JPEG (ITU-T T.81 Annex K) luminance quantisation table, quality 50.
JPEG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)

#: Per-channel (R, G, B) gains of the "colour cast" case: a warm cast.
COLOUR_CAST = (1.10, 1.0, 0.85)


@dataclass(frozen=True)
class CaseSpec:
    """How one standard case is made: geometric transform (name + parameters), HSI blur sigma (px),
    then photometric RGB operations ``(op, value)`` in order."""

    kind: str
    geometric: tuple[str, float] | None = None
    blur: float = 0.0
    photometric: tuple[tuple[str, float], ...] = ()


#: The standard set, in table order. Names are stable: results files and acceptance criteria use them.
STANDARD_CASES: dict[str, CaseSpec] = {
    "gain 1.1": CaseSpec("photometric", photometric=(("gain", 1.1),)),
    "gamma 0.8": CaseSpec("photometric", photometric=(("gamma", 0.8),)),
    "colour cast": CaseSpec("photometric", photometric=(("cast", 1.0),)),
    "noise 0.01": CaseSpec("photometric", photometric=(("noise", 0.01),)),
    "noise 0.02": CaseSpec("photometric", photometric=(("noise", 0.02),)),
    "noise 0.05": CaseSpec("photometric", photometric=(("noise", 0.05),)),
    "jpeg q50": CaseSpec("photometric", photometric=(("jpeg", 50),)),
    "blur 1": CaseSpec("photometric", blur=1.0),
    "blur 2": CaseSpec("photometric", blur=2.0),
    "blur 1 + noise 0.02": CaseSpec("photometric", blur=1.0, photometric=(("noise", 0.02),)),
    "blur 2 + noise 0.02": CaseSpec("photometric", blur=2.0, photometric=(("noise", 0.02),)),
    "flip": CaseSpec("geometric", geometric=("flip", 0.0)),
    "rotate 5 deg": CaseSpec("geometric", geometric=("rotate", 5.0)),
    "affine 1.2x": CaseSpec("geometric", geometric=("affine", 1.2)),
    "elastic 6 px": CaseSpec("geometric", geometric=("elastic", 6.0)),
    "elastic 6 px + blur 1 + noise 0.02": CaseSpec("combined", geometric=("elastic", 6.0), blur=1.0, photometric=(("noise", 0.02),)),
    "flip + gain + blur 1 + noise 0.02": CaseSpec("combined", geometric=("flip", 0.0), blur=1.0, photometric=(("gain", 1.1), ("noise", 0.02))),
    "mosaic 4x4": CaseSpec("new layout", geometric=("mosaic", 4)),
}

CASE_NAMES: tuple[str, ...] = tuple(STANDARD_CASES)


@dataclass
class KnownAnswerCase:
    """A guide with a known answer.

    ``guide_rgb`` (3, H, W) float32 >= 0; ``truths`` name -> (B, H, W) float32 (``"sharp"`` always,
    ``"blurred"`` where the guide was blurred); ``displacement`` (2, H, W) (y, x) px, source minus
    guide coordinate, or None where undefined; ``valid`` (H, W) bool, the pixels where the truth is
    defined (scored); ``kind`` one of :data:`KINDS`; ``description`` says how the case was made.
    """

    name: str
    guide_rgb: np.ndarray
    truths: dict[str, np.ndarray]
    displacement: np.ndarray | None
    kind: str
    valid: np.ndarray
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def truth(self) -> np.ndarray:
        """The layout-only truth (``truths["sharp"]``)."""
        return self.truths["sharp"]


# ----------------------------------------------------------------------------- building blocks


def case_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one case: keyed by the seed and the case name (stable across subsets)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def pixel_grid(height: int, width: int) -> np.ndarray:
    """Guide coordinates (2, H, W) float64: row y and column x of every pixel."""
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    return np.stack([ys, xs])


def flip_source(height: int, width: int) -> np.ndarray:
    """Source coordinates of a left-right flip: (y, W-1-x)."""
    grid = pixel_grid(height, width)
    grid[1] = (width - 1) - grid[1]
    return grid


def rotation_source(height: int, width: int, degrees: float) -> np.ndarray:
    """Source coordinates of a rotation by ``degrees`` about the image centre (the guide shows the
    scene turned by ``degrees``; its source is the guide point turned back)."""
    grid = pixel_grid(height, width)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    t = np.deg2rad(degrees)
    dy, dx = grid[0] - cy, grid[1] - cx
    return np.stack([cy + np.cos(t) * dy - np.sin(t) * dx, cx + np.sin(t) * dy + np.cos(t) * dx])


def affine_source(height: int, width: int, zoom: float, rng: np.random.Generator) -> np.ndarray:
    """Source coordinates of a crop-rescale: a ``1/zoom`` sub-window at a seeded offset magnified to the
    full size (``zoom`` > 1 zooms in; every source lies inside the proxy)."""
    if zoom < 1:
        raise ValueError(f"affine zoom must be >= 1 (zoom in), got {zoom}")
    grid = pixel_grid(height, width)
    out = np.empty_like(grid)
    for axis, size in enumerate((height, width)):
        span = (size - 1) / zoom
        offset = rng.uniform(0.0, (size - 1) - span)
        out[axis] = offset + grid[axis] / zoom
    return out


def elastic_field(height: int, width: int, max_px: float, rng: np.random.Generator, smooth: float | None = None) -> np.ndarray:
    """A smooth random displacement (2, H, W): white noise smoothed by a Gaussian of ``smooth`` px
    (default ``max(H, W) / 8``), scaled so the largest vector length is exactly ``max_px``."""
    smooth = max(height, width) / 8 if smooth is None else smooth
    noise = rng.standard_normal((2, height, width))
    field_ = np.stack([ndimage.gaussian_filter(noise[i], smooth, mode="reflect") for i in range(2)])
    peak = float(np.sqrt((field_**2).sum(axis=0)).max())
    return field_ * (max_px / peak) if peak > 0 else field_


def mosaic_source(height: int, width: int, tiles: int, rng: np.random.Generator) -> np.ndarray:
    """Source coordinates of a mosaic: the image cut into ``tiles x tiles`` equal tiles of
    ``(H // tiles, W // tiles)`` px, permuted by a seeded derangement (no tile stays in place); rows and
    columns beyond ``tiles * tile size`` keep their place. Integer coordinates: the mapping is exact."""
    th, tw = height // tiles, width // tiles
    if th < 1 or tw < 1:
        raise ValueError(f"a {tiles}x{tiles} mosaic needs at least {tiles} px per side, got {height}x{width}")
    n = tiles * tiles
    perm = rng.permutation(n)
    while n > 1 and np.any(perm == np.arange(n)):
        perm = rng.permutation(n)
    src = pixel_grid(height, width)
    for dst_tile, src_tile in enumerate(perm):
        dy, dx = divmod(dst_tile, tiles)
        sy, sx = divmod(int(src_tile), tiles)
        src[0, dy * th : (dy + 1) * th, dx * tw : (dx + 1) * tw] += (sy - dy) * th
        src[1, dy * th : (dy + 1) * th, dx * tw : (dx + 1) * tw] += (sx - dx) * tw
    return src


def warp_hsi(hsi: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``hsi`` (B, H, W) sampled at ``source`` (2, H, W) (y, x): exact indexing where the coordinates
    are integers, else bilinear (``map_coordinates`` order 1, ``mode="nearest"``) per band."""
    if np.all(source == np.round(source)):
        ys = np.clip(source[0].astype(np.int64), 0, hsi.shape[1] - 1)
        xs = np.clip(source[1].astype(np.int64), 0, hsi.shape[2] - 1)
        return np.ascontiguousarray(hsi[:, ys, xs], dtype=np.float32)
    return np.stack([ndimage.map_coordinates(band, source, order=1, mode="nearest") for band in hsi]).astype(np.float32)


def source_valid(source: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """(H, W) bool: the source coordinate lies on the proxy lattice ``[0, H-1] x [0, W-1]``."""
    _, height, width = source.shape
    return (source[0] >= -tol) & (source[0] <= height - 1 + tol) & (source[1] >= -tol) & (source[1] <= width - 1 + tol)


def blur_hsi(hsi: np.ndarray, sigma: float) -> np.ndarray:
    """Spatial Gaussian blur of every band (``mode="nearest"``)."""
    return ndimage.gaussian_filter(hsi, sigma=(0, sigma, sigma), mode="nearest").astype(np.float32)


def jpeg_quantise(rgb: np.ndarray, quality: int = 50) -> np.ndarray:
    """A JPEG-like degradation of a (3, H, W) RGB, pure numpy/scipy: each channel scaled so its
    maximum is 255 and rounded to 8 bits, level-shifted by 128, cut into 8x8 blocks (edge-padded),
    orthonormal 2-D DCT-II per block (JPEG's DCT), coefficients quantised with the standard luminance
    table scaled by the IJG quality rule, inverse DCT, rounded and clipped to [0, 255], scaled back.
    No colour transform and no chroma subsampling: every channel gets the luminance table."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    table = np.clip(np.floor((JPEG_LUMA * scale + 50.0) / 100.0), 1.0, 255.0)
    rgb = np.asarray(rgb, dtype=np.float64)
    c, h, w = rgb.shape
    peak = float(rgb.max()) or 1.0
    pixels = np.round(np.clip(rgb / peak, 0.0, 1.0) * 255.0)
    ph, pw = -h % 8, -w % 8
    padded = np.pad(pixels, ((0, 0), (0, ph), (0, pw)), mode="edge") - 128.0
    blocks = padded.reshape(c, (h + ph) // 8, 8, (w + pw) // 8, 8).transpose(0, 1, 3, 2, 4)
    coeffs = sfft.dctn(blocks, type=2, axes=(-2, -1), norm="ortho")
    coeffs = np.round(coeffs / table) * table
    back = sfft.idctn(coeffs, type=2, axes=(-2, -1), norm="ortho").transpose(0, 1, 3, 2, 4).reshape(padded.shape)
    out = np.clip(np.round(back + 128.0), 0.0, 255.0)[:, :h, :w]
    return (out / 255.0 * peak).astype(np.float32)


def apply_photometric(rgb: np.ndarray, op: str, value: float, rng: np.random.Generator) -> np.ndarray:
    """One photometric change of a (3, H, W) RGB (result >= 0, float32).

    ``gain``: ``rgb * value``. ``gamma``: ``peak * (rgb / peak) ** value`` with peak = the maximum.
    ``cast``: per-channel gains :data:`COLOUR_CAST` (``value`` scales their deviation from 1).
    ``noise``: additive Gaussian noise of standard deviation ``value`` times the RGB's 99th percentile
    (its reference white, the level the warp normalises to), clipped at 0. ``jpeg``: :func:`jpeg_quantise`
    at quality ``value``.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if op == "gain":
        out = rgb * value
    elif op == "gamma":
        peak = float(rgb.max()) or 1.0
        out = peak * np.power(np.clip(rgb / peak, 0.0, None), value)
    elif op == "cast":
        gains = 1.0 + value * (np.asarray(COLOUR_CAST, dtype=np.float64) - 1.0)
        out = rgb * gains[:, None, None]
    elif op == "noise":
        white = float(np.percentile(rgb, 99)) or float(rgb.max()) or 1.0
        out = rgb + rng.normal(0.0, value * white, size=rgb.shape)
    elif op == "jpeg":
        return jpeg_quantise(rgb, int(value))
    else:
        raise ValueError(f"unknown photometric operation {op!r}")
    return np.clip(out, 0.0, None).astype(np.float32)


# ----------------------------------------------------------------------------- cases


def _source(geometric: tuple[str, float], height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    kind, value = geometric
    if kind == "flip":
        return flip_source(height, width)
    if kind == "rotate":
        return rotation_source(height, width, value)
    if kind == "affine":
        return affine_source(height, width, value, rng)
    if kind == "elastic":
        return pixel_grid(height, width) + elastic_field(height, width, value, rng)
    if kind == "mosaic":
        return mosaic_source(height, width, int(value), rng)
    raise ValueError(f"unknown geometric transform {kind!r}")


def _describe(spec: CaseSpec) -> str:
    parts = []
    if spec.geometric:
        kind, value = spec.geometric
        parts.append({
            "flip": "left-right flip of the HSI",
            "rotate": f"rotation of the HSI by {value:g} deg about the centre (bilinear)",
            "affine": f"{value:g}x zoom into a seeded sub-window of the HSI (bilinear)",
            "elastic": f"smooth random elastic deformation of the HSI, max {value:g} px (bilinear)",
            "mosaic": f"{int(value)}x{int(value)} tiles of the HSI permuted (seeded derangement)",
        }[kind])
    if spec.blur:
        parts.append(f"Gaussian blur sigma {spec.blur:g} px of the HSI")
    parts.append("RGB = Eq. 4 bands")
    for op, value in spec.photometric:
        parts.append({
            "gain": f"RGB gain {value:g}", "gamma": f"RGB gamma {value:g}", "cast": f"RGB colour cast gains {COLOUR_CAST}",
            "noise": f"RGB Gaussian noise sigma {value:g} x 99th percentile", "jpeg": f"RGB 8x8 DCT quantisation, quality {int(value)}",
        }[op])
    return "; ".join(parts)


def make_case(name: str, hsi: Any, wavelengths: Sequence[float] | None = None, seed: int = 0, spec: CaseSpec | None = None) -> KnownAnswerCase:
    """One case by its standard name (or a custom ``spec`` under any name) from a proxy HSI
    ``(B, H, W)`` (array or :class:`~hiralign.data.Cube`) and its wavelengths (nm)."""
    from hiralign.data.cube import Cube

    if isinstance(hsi, Cube):
        wavelengths = hsi.wavelengths if wavelengths is None else wavelengths
        hsi = hsi.data
    if wavelengths is None:
        raise ValueError("make_case needs the proxy's wavelengths (nm)")
    hsi = np.ascontiguousarray(hsi, dtype=np.float32)
    if hsi.ndim != 3:
        raise ValueError(f"the proxy HSI must be (B, H, W), got shape {hsi.shape}")
    if spec is None:
        if name not in STANDARD_CASES:
            raise ValueError(f"unknown known-answer case {name!r}; standard cases: {list(CASE_NAMES)}")
        spec = STANDARD_CASES[name]
    if spec.kind not in KINDS:
        raise ValueError(f"case kind must be one of {KINDS}, got {spec.kind!r}")
    _, height, width = hsi.shape
    rng = case_rng(seed, name)
    if spec.geometric:
        source = _source(spec.geometric, height, width, rng)
        sharp = warp_hsi(hsi, source)
        displacement = (source - pixel_grid(height, width)).astype(np.float32)
        valid = source_valid(source)
    else:
        sharp = hsi.copy()
        displacement = np.zeros((2, height, width), dtype=np.float32)
        valid = np.ones((height, width), dtype=bool)
    truths = {"sharp": sharp}
    rendered = sharp
    if spec.blur:
        rendered = truths["blurred"] = blur_hsi(sharp, spec.blur)
    guide = to_rgb(rendered, wavelengths).astype(np.float64)
    for op, value in spec.photometric:
        guide = apply_photometric(guide, op, value, rng)
    params = {"geometric": spec.geometric, "blur": spec.blur, "photometric": [list(p) for p in spec.photometric], "seed": int(seed)}
    return KnownAnswerCase(
        name=name, guide_rgb=np.ascontiguousarray(guide, dtype=np.float32), truths=truths, displacement=displacement,
        kind=spec.kind, valid=valid, description=_describe(spec), params=params,
    )


def make_cases(hsi: Any, wavelengths: Sequence[float] | None = None, seed: int = 0, names: Iterable[str] | None = None) -> list[KnownAnswerCase]:
    """The standard known-answer set (:data:`CASE_NAMES`, in that order), or the named subset in the
    order given; unknown names raise ``ValueError`` listing the valid ones."""
    names = list(CASE_NAMES if names is None else names)
    unknown = [n for n in names if n not in STANDARD_CASES]
    if unknown:
        raise ValueError(f"unknown known-answer case(s) {unknown}; standard cases: {list(CASE_NAMES)}")
    return [make_case(name, hsi, wavelengths, seed) for name in names]


# ----------------------------------------------------------------------------- scoring


def _masked(cube: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (C, 1, n) of the masked pixels, a shape the metrics accept."""
    return np.asarray(cube, dtype=np.float64)[:, mask][:, None, :]


def _top_candidate_displacement(result: Any) -> np.ndarray | None:
    """(2, H, W) displacement of each pixel's highest-weight candidate, when the result carries
    ``candidates`` and ``aggregation_weights`` (N, K); else None."""
    cand, alpha = getattr(result, "candidates", None), getattr(result, "aggregation_weights", None)
    if cand is None or alpha is None:
        return None
    _, height, width = np.asarray(result.hsi).shape
    best = np.asarray(cand)[np.arange(height * width), np.argmax(np.asarray(alpha), axis=1)]
    return np.stack([best // width, best % width]).reshape(2, height, width).astype(np.float64) - pixel_grid(height, width)


def score(result: Any, case: KnownAnswerCase, margin: int = 0) -> dict[str, Any]:
    """Fidelity of a warp result (anything with ``.hsi`` (B,H,W), ``.rgb`` (3,H,W), ``.displacement``
    (2,H,W)) on ``case``.

    HSI metrics and the end-point error are computed over ``case.valid`` pixels (minus a ``margin``-px
    border when ``margin`` > 0). ``hsi_psnr`` (dB, data range 1, :func:`hiralign.metrics.psnr`: mean of
    per-band PSNR, capped at 100 dB) is the best over the truths, ``best_truth`` names it,
    ``hsi_psnr_by_truth`` holds every truth's value; ``sam`` (degrees, :func:`hiralign.metrics.sam`) is
    against the best truth; ``epe_median``, ``epe_p90``, ``epe_mean`` (px) are the lengths of
    ``result.displacement - case.displacement`` (None when the case has no field); where the result
    carries ``candidates`` and ``aggregation_weights`` (a real :class:`WarpResult`), ``epe_top_median`` /
    ``epe_top_p90`` are the same for each pixel's highest-weight candidate (Eq. 18 averages candidates,
    which can lie far apart on repeated colours, so the two can differ a lot); ``rgb_psnr`` is
    ``result.rgb`` against the guide over all pixels, both divided by the guide maximum.
    """
    hsi = np.asarray(result.hsi)
    if hsi.shape != case.truth.shape:
        raise ValueError(f"result HSI {hsi.shape} does not match the case truth {case.truth.shape}")
    mask = np.asarray(case.valid, dtype=bool).copy()
    if margin > 0:
        border = np.zeros_like(mask)
        border[margin:-margin, margin:-margin] = True
        mask &= border
    if not mask.any():
        raise ValueError(f"case {case.name!r}: no valid pixel left to score")
    est = _masked(hsi, mask)
    by_truth = {name: metrics.psnr(est, _masked(truth, mask), data_range=1.0) for name, truth in case.truths.items()}
    best = max(by_truth, key=by_truth.get)
    out: dict[str, Any] = {
        "hsi_psnr": by_truth[best],
        "best_truth": best,
        "hsi_psnr_by_truth": by_truth,
        "sam": metrics.sam(est, _masked(case.truths[best], mask)),
        "epe_median": None, "epe_p90": None, "epe_mean": None,
        "valid_fraction": float(mask.mean()),
    }
    if case.displacement is not None and getattr(result, "displacement", None) is not None:
        err = np.sqrt(((np.asarray(result.displacement, dtype=np.float64) - case.displacement) ** 2).sum(axis=0))[mask]
        out.update(epe_median=float(np.median(err)), epe_p90=float(np.percentile(err, 90)), epe_mean=float(err.mean()))
        top = _top_candidate_displacement(result)
        if top is not None:
            top_err = np.sqrt(((top - case.displacement) ** 2).sum(axis=0))[mask]
            out.update(epe_top_median=float(np.median(top_err)), epe_top_p90=float(np.percentile(top_err, 90)))
    scale = max(float(case.guide_rgb.max()), 1e-12)
    out["rgb_psnr"] = metrics.psnr(np.asarray(result.rgb, dtype=np.float64) / scale, case.guide_rgb.astype(np.float64) / scale, data_range=1.0)
    return out
