"""Seeded misalignment of a reference image: the unregistered HR RGB of the ``sr-ref`` tasks.

UAFL (Zhang et al., "Enhancing Unregistered Hyperspectral Image Super-Resolution via Unmixing-based
Abundance Fusion Learning", CVPR 2026) super-resolves an LR HSI with a high-resolution RGB of the
same scene that is *not* registered with it (platform vibration, viewpoint and acquisition-time
differences). We simulate that reference from the clean HSI: its Eq. 4 RGB (bands nearest
660 / 550 / 470 nm) resampled through a displacement field made of

* a global translation of exactly ``shift`` pixels in a random direction,
* a rotation by up to ``rotation_deg`` and a zoom by up to ``zoom`` about the image centre,
* a smooth elastic field (white noise low-passed by a Gaussian of ``elastic_sigma`` px, scaled so
  that its largest displacement is ``elastic`` px),

and optionally a colour change (per-channel gain and gamma within ``1 +- colour``). The field is
returned, so evaluation and tests know the misalignment exactly:
``reference(p) = rgb(p + flow(p))`` with ``flow`` ``(2, H, W)`` = (dx, dy) in pixels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Misalignment:
    """How far the reference is from registered (all zero: a registered reference)."""

    shift: float = 4.0  # px, length of the global translation
    rotation_deg: float = 1.0  # largest |rotation| about the centre
    zoom: float = 0.01  # largest |scale - 1|
    elastic: float = 1.0  # px, largest displacement of the smooth elastic part
    elastic_sigma: float = 8.0  # px, Gaussian smoothing of the elastic noise
    colour: float = 0.0  # largest |gain - 1| and |gamma - 1| per channel

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"misalignment {name} must be a finite number >= 0; got {value}")
        if self.elastic_sigma <= 0:
            raise ValueError(f"elastic_sigma must be > 0; got {self.elastic_sigma}")
        if self.zoom >= 1 or self.colour >= 1:
            raise ValueError(f"zoom and colour must be < 1; got {self.zoom}, {self.colour}")


def affine_field(shape: tuple[int, int], shift_xy: tuple[float, float], rotation_deg: float, zoom: float) -> np.ndarray:
    """``(2, H, W)`` (dx, dy) of ``q = c + s R(theta) (p - c) + t`` minus ``p`` (centre ``c``)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    theta = np.deg2rad(rotation_deg)
    scale = 1.0 + zoom
    qx = cx + scale * (np.cos(theta) * (xx - cx) - np.sin(theta) * (yy - cy)) + shift_xy[0]
    qy = cy + scale * (np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)) + shift_xy[1]
    return np.stack([qx - xx, qy - yy])


def elastic_field(shape: tuple[int, int], rng: np.random.Generator, amplitude: float, sigma: float) -> np.ndarray:
    """``(2, H, W)`` smooth random displacements whose largest magnitude is ``amplitude`` px."""
    if amplitude == 0:
        return np.zeros((2, *shape))
    noise = ndimage.gaussian_filter(rng.standard_normal((2, *shape)), sigma=(0, sigma, sigma), mode="reflect")
    peak = np.sqrt((noise ** 2).sum(axis=0)).max()
    return noise * (amplitude / peak) if peak > 0 else noise


def misalignment_field(shape: tuple[int, int], rng: np.random.Generator, m: Misalignment) -> tuple[np.ndarray, dict]:
    """The seeded ``(2, H, W)`` field of :class:`Misalignment` ``m`` and its drawn parameters."""
    direction = rng.uniform(0.0, 2 * np.pi)
    shift_xy = (m.shift * np.cos(direction), m.shift * np.sin(direction))
    rotation = rng.uniform(-m.rotation_deg, m.rotation_deg)
    zoom = rng.uniform(-m.zoom, m.zoom)
    flow = affine_field(shape, shift_xy, rotation, zoom) + elastic_field(shape, rng, m.elastic, m.elastic_sigma)
    drawn = {"shift_xy": [float(v) for v in shift_xy], "rotation_deg": float(rotation), "zoom": float(zoom)}
    return flow, drawn


def warp_image(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out(p) = image(p + flow(p))`` for ``(C, H, W)`` ``image``: bilinear, the border repeated
    outside (the convention of :func:`hiralign.restorers.deform.flow_warp`)."""
    _, h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = np.stack([yy + flow[1], xx + flow[0]])
    return np.stack([ndimage.map_coordinates(band, coords, order=1, mode="nearest") for band in image]).astype(np.float32)


def colour_change(rgb: np.ndarray, rng: np.random.Generator, amount: float) -> tuple[np.ndarray, dict]:
    """Per-channel ``gain * rgb ** gamma`` with gain, gamma in ``1 +- amount``, clipped to [0, 1]."""
    if amount == 0:
        return rgb, {"gain": [1.0, 1.0, 1.0], "gamma": [1.0, 1.0, 1.0]}
    gain = rng.uniform(1 - amount, 1 + amount, size=3)
    gamma = rng.uniform(1 - amount, 1 + amount, size=3)
    out = gain[:, None, None] * np.clip(rgb, 0.0, None) ** gamma[:, None, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32), {"gain": gain.tolist(), "gamma": gamma.tolist()}


def misaligned_reference(rgb: np.ndarray, rng: np.random.Generator, m: Misalignment) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(reference, flow, drawn)``: ``rgb`` ``(3, H, W)`` warped by the seeded field, then recoloured."""
    flow, drawn = misalignment_field(rgb.shape[1:], rng, m)
    reference, colour = colour_change(warp_image(rgb, flow), rng, m.colour)
    return reference, flow.astype(np.float32), {**drawn, **colour}
