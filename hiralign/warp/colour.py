"""Tone correction of the guide before matching (coherent mode, ``match_colours``).

A convex combination of proxy spectra cannot reproduce a global gain, gamma or colour cast of the
guide: fitting one pulls every pixel towards a brighter or tinted metamer elsewhere in the proxy
(the paper mode answers a gamma-0.8 guide with 30 px displacements). The guide is therefore first
mapped into the proxy's colours by a per-channel tone curve ``proxy_c ~ gain_c * guide_c ** gamma_c``
(two numbers per channel), fitted on the channel quantiles of the two images
(:func:`quantile_pairs`). That needs no correspondence but is biased where the layouts differ (a
zoomed crop, a rotation's corners), so :mod:`hiralign.warp.guide_model` keeps the curves only when the
toned guide matches the proxy clearly better. (A refit on matched pixel pairs was tried and dropped:
on blurred guides the pairs of blurred guide and sharp proxy bias gamma to about 0.86.)

A global two-parameter curve cannot absorb local content, unlike histogram matching of the full
distributions, which bends colours wherever the two images hold different things.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

#: Percentiles whose values are paired in the fit.
QUANTILES = np.linspace(1.0, 99.0, 99)


def quantile_pairs(guide_rgb: np.ndarray, proxy_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(3, Q)`` guide and proxy channel values at :data:`QUANTILES`."""
    guide = np.percentile(guide_rgb.reshape(3, -1), QUANTILES, axis=1).T
    proxy = np.percentile(proxy_rgb.reshape(3, -1), QUANTILES, axis=1).T
    return guide, proxy


def fit_tone_curves(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``(3, 2)`` per-channel (gain, gamma) minimising ``sum w (gain * source ** gamma - target) ** 2``
    over paired values ``(3, n)`` (soft-L1 robust loss, scipy ``least_squares``), gamma in [0.25, 4]."""
    curves = np.ones((3, 2))
    for c in range(3):
        x = np.clip(np.asarray(source[c], dtype=np.float64), 0.0, None)
        y = np.asarray(target[c], dtype=np.float64)
        w = np.ones_like(x) if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64))
        scale = max(float(np.max(y)), 1e-12)
        if float(np.max(x)) <= 0 or not np.any(w > 0):
            continue

        def residual(theta: np.ndarray) -> np.ndarray:
            return w * (theta[0] * x ** theta[1] - y) / scale

        fit = least_squares(residual, x0=[1.0, 1.0], bounds=([1e-3, 0.25], [1e3, 4.0]), loss="soft_l1", f_scale=0.05)
        curves[c] = fit.x
    return curves


def apply_tone_curves(rgb: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """``gain_c * rgb_c ** gamma_c`` for a ``(3, H, W)`` image (negative values clipped to 0 first)."""
    rgb = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, None)
    out = curves[:, 0, None, None] * rgb ** curves[:, 1, None, None]
    return np.ascontiguousarray(out, dtype=np.float32)


def tone_curves_from_quantiles(guide_rgb: np.ndarray, proxy_rgb: np.ndarray) -> np.ndarray:
    """The curves mapping the guide's channel quantiles onto the proxy's."""
    return fit_tone_curves(*quantile_pairs(guide_rgb, proxy_rgb))
