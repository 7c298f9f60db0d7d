"""Figures for notebook 03_warp: RGB triplet, displacement field, loss curves, spectra."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import hsv_to_rgb

from hiralign.spectral import display_rgb


def flow_image(displacement: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """HSV rendering ``(H, W, 3)`` of a (2, H, W) (y, x) displacement: hue = direction, value = magnitude."""
    dy, dx = displacement
    magnitude = np.hypot(dx, dy)
    top = max_magnitude or float(np.percentile(magnitude, 99)) or 1.0
    hue = (np.arctan2(dy, dx) + np.pi) / (2 * np.pi)
    hsv = np.stack([hue, np.ones_like(hue), np.clip(magnitude / top, 0.0, 1.0)], axis=-1)
    return hsv_to_rgb(hsv)


def plot_rgb_triplet(proxy_rgb: np.ndarray, guide_rgb: np.ndarray, warped_rgb: np.ndarray, title: str = ""):
    """Proxy RGB, guide RGB and the warped RGB (``W`` applied to the proxy RGB, Eq. 26) side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, img, name in zip(axes, (proxy_rgb, guide_rgb, warped_rgb), ("proxy RGB", "guide RGB", "warped RGB (W x proxy)")):
        ax.imshow(display_rgb(img))
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_displacement(displacement: np.ndarray, step: int | None = None):
    """The Eq. 18 displacement: HSV flow image with a subsampled quiver (arrows point to the proxy source)."""
    _, height, width = displacement.shape
    step = step or max(1, min(height, width) // 16)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    axes[0].imshow(flow_image(displacement))
    axes[0].set_title("displacement (hue: direction, value: length)")
    ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    axes[1].quiver(xs, ys, displacement[1][ys, xs], displacement[0][ys, xs], angles="xy", scale_units="xy", scale=1, width=0.004)
    axes[1].set_xlim(0, width)
    axes[1].set_ylim(height, 0)
    axes[1].set_aspect("equal")
    axes[1].set_title("u(p) - p, every %d px" % step)
    magnitude = np.hypot(*displacement)
    fig.suptitle(f"median |displacement| {np.median(magnitude):.1f} px, max {magnitude.max():.1f} px")
    fig.tight_layout()
    return fig


def plot_loss_history(history: dict[str, Sequence[float]]):
    """Each Eq. 20 term (unweighted) and the weighted total against the Adam iteration."""
    terms = [t for t in history if t != "total"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].plot(history["total"], color="k")
    axes[0].set_title("total (weighted Eq. 20)")
    for term in terms:
        values = np.asarray(history[term], dtype=float)
        start = values[0] if values[0] != 0 else 1.0
        axes[1].plot(values / start, label=term)
    axes[1].set_title("each term / its initial value")
    axes[1].legend(fontsize=8, ncol=2)
    for ax in axes:
        ax.set_xlabel("iteration")
    fig.tight_layout()
    return fig


def plot_spectra(warped_hsi: np.ndarray, operator, proxy_hsi: np.ndarray, wavelengths: np.ndarray, n_pixels: int = 4, seed: int = 0):
    """Warped spectra at random guide pixels against the proxy spectra they mix (Eq. 26).

    For each pixel: the proxy spectrum with the largest weight in its operator row, and the band-wise
    range (min..max) of all proxy spectra in the row's support, which a convex combination cannot leave.
    """
    bands, height, width = warped_hsi.shape
    proxy_flat = proxy_hsi.reshape(bands, -1)
    pixels = np.random.default_rng(seed).choice(height * width, size=n_pixels, replace=False)
    fig, axes = plt.subplots(1, n_pixels, figsize=(3.2 * n_pixels, 3), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, p in zip(axes, pixels):
        row = operator.getrow(int(p))
        support, weights = row.indices, row.data
        main = support[np.argmax(weights)]
        ax.fill_between(wavelengths, proxy_flat[:, support].min(axis=1), proxy_flat[:, support].max(axis=1),
                        color="0.85", label=f"range of {support.size} mixed proxy spectra")
        ax.plot(wavelengths, proxy_flat[:, main], "--", label=f"proxy px {divmod(int(main), width)}, w={weights.max():.2f}")
        ax.plot(wavelengths, warped_hsi[:, p // width, p % width], label=f"warped px {divmod(int(p), width)}")
        ax.set_xlabel("nm")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("value")
    fig.suptitle("warped spectra: convex combinations of proxy spectra (Eq. 26)")
    fig.tight_layout()
    return fig
