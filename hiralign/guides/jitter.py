"""Offline ``jitter`` generator: geometric + photometric augmentation of the proxy RGB.

A no-weights baseline in the spirit of the paper's "random shuffle" comparison (Eq. 54): guides
keep the proxy's content but not its exact geometry or colours. Each guide draws, from a seeded
generator, one affine warp (optional horizontal / vertical flip, rotation, zoom-in crop-resize,
small shift; reflection at the borders) and one photometric change (brightness, contrast,
saturation, hue rotation in YIQ).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from hiralign.guides.resize import as_rgb_batch

#: RGB -> YIQ (NTSC); hue jitter rotates the (I, Q) chroma plane.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def affine_warp(rgb: torch.Tensor, angle_deg: float, zoom: float, shift: tuple[float, float], flip_h: bool, flip_v: bool) -> torch.Tensor:
    """Rotate by ``angle_deg``, zoom in by ``zoom`` (>= 1 crops), shift (fractions of the half-size), flip."""
    a = math.radians(angle_deg)
    sx = (-1.0 if flip_h else 1.0) / zoom
    sy = (-1.0 if flip_v else 1.0) / zoom
    aspect = rgb.shape[-2] / rgb.shape[-1]  # rotate in pixel units, not in the [-1, 1] square
    theta = torch.tensor(
        [[math.cos(a) * sx, -math.sin(a) * aspect * sy, shift[0]], [math.sin(a) / aspect * sx, math.cos(a) * sy, shift[1]]],
        dtype=rgb.dtype,
    )[None]
    grid = F.affine_grid(theta, list(rgb[None].shape), align_corners=False)
    return F.grid_sample(rgb[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def photometric(rgb: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float) -> np.ndarray:
    """Scale brightness, stretch contrast about the mean, blend saturation with grey, rotate hue."""
    out = rgb * brightness
    out = (out - out.mean()) * contrast + out.mean()
    grey = np.tensordot(RGB_TO_YIQ[0], out, axes=1)[None]
    out = grey + (out - grey) * saturation
    c, s = math.cos(2 * math.pi * hue), math.sin(2 * math.pi * hue)
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    colour = np.linalg.inv(RGB_TO_YIQ) @ rotation @ RGB_TO_YIQ
    return np.tensordot(colour, out, axes=1)


def jitter_guides(
    proxy_rgbs,
    n_guides: int = 3,
    seed: int = 0,
    flip_horizontal: bool = True,
    flip_vertical: bool = False,
    max_rotation_deg: float = 8.0,
    max_zoom: float = 0.15,
    max_shift: float = 0.05,
    brightness: float = 0.15,
    contrast: float = 0.15,
    saturation: float = 0.2,
    hue: float = 0.03,
) -> np.ndarray:
    """``(N, G, 3, H, W)`` jittered copies of each proxy RGB, in [0, 1], reproducible from ``seed``.

    Each flip happens with probability 1/2 when enabled; the rotation angle is uniform in
    ``+-max_rotation_deg``, the zoom in ``[1, 1 + max_zoom]``, the shift in ``+-max_shift``; the
    brightness / contrast / saturation factors are uniform in ``1 +- value`` and the hue rotation in
    ``+-hue`` turns.
    """
    proxies = as_rgb_batch(proxy_rgbs)
    rng = np.random.default_rng(seed)
    guides = np.empty((len(proxies), n_guides) + proxies.shape[1:], dtype=np.float32)
    for n, proxy in enumerate(proxies):
        tensor = torch.from_numpy(proxy)
        for g in range(n_guides):
            warped = affine_warp(
                tensor,
                angle_deg=rng.uniform(-max_rotation_deg, max_rotation_deg),
                zoom=1.0 + rng.uniform(0.0, max_zoom),
                shift=tuple(rng.uniform(-max_shift, max_shift, size=2)),
                flip_h=flip_horizontal and rng.random() < 0.5,
                flip_v=flip_vertical and rng.random() < 0.5,
            ).numpy()
            factors = 1.0 + rng.uniform(-1.0, 1.0, size=3) * (brightness, contrast, saturation)
            guides[n, g] = np.clip(photometric(warped, *factors, hue=rng.uniform(-hue, hue)), 0.0, 1.0)
    return guides
