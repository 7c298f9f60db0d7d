"""Figures for notebook 03_warp: RGB triplet, displacement field, loss curves, spectra."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from hiralign.spectral import display_rgb
from hiralign.warp.losses import TERM_WEIGHTS


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


def plot_displacement(displacement: np.ndarray, arrows: int = 8):
    """The Eq. 18 displacement ``u(p) - p``: its x and y components as images on one symmetric colour
    scale (with a colour bar), and a sparse quiver of ``arrows`` x ``arrows`` arrows scaled so the
    longest spans one grid step (the title gives the scale); arrows point to the proxy source."""
    _, height, width = displacement.shape
    magnitude = np.hypot(*displacement)
    top = float(np.percentile(np.abs(displacement), 99)) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    for ax, component, name in zip(axes, (displacement[1], displacement[0]), ("x", "y")):
        shown = ax.imshow(component, cmap="RdBu_r", vmin=-top, vmax=top)
        ax.set_title(f"{name} component (px)")
        ax.axis("off")
    fig.colorbar(shown, ax=axes[:2], shrink=0.85, label="displacement (px)")
    step = max(1, min(height, width) // max(arrows, 1))
    ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    longest = float(magnitude[ys, xs].max()) or 1.0
    axes[2].quiver(xs, ys, displacement[1][ys, xs], displacement[0][ys, xs], angles="xy", scale_units="xy",
                   scale=longest / step, width=0.006)
    axes[2].set_xlim(0, width)
    axes[2].set_ylim(height, 0)
    axes[2].set_aspect("equal")
    axes[2].set_title(f"every {step} px; longest arrow = {longest:.1f} px")
    fig.suptitle(f"median |displacement| {np.median(magnitude):.1f} px, 90th percentile "
                 f"{np.percentile(magnitude, 90):.1f} px, max {magnitude.max():.1f} px")
    return fig


#: One colour per Eq. 20 term, in the order of :data:`hiralign.warp.losses.TERM_WEIGHTS`: a term keeps
#: its colour whether the history comes from a fresh run or from a reloaded artifact (sorted keys).
TERM_COLOURS = dict(zip(TERM_WEIGHTS, plt.get_cmap("tab10").colors))


def plot_loss_history(history: dict[str, Sequence[float]]):
    """Each Eq. 20 term (unweighted) and the weighted total against the Adam iteration."""
    terms = [t for t in TERM_WEIGHTS if t in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].plot(history["total"], color="k")
    axes[0].set_title("total (weighted Eq. 20)")
    for term in terms:
        values = np.asarray(history[term], dtype=float)
        start = values[0] if values[0] != 0 else 1.0
        axes[1].plot(values / start, label=term, color=TERM_COLOURS[term])
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
                        color="0.85", label="range of the mixed proxy spectra")
        ax.plot(wavelengths, proxy_flat[:, main], "--", color="tab:orange", label="proxy spectrum of largest weight")
        ax.plot(wavelengths, warped_hsi[:, p // width, p % width], color="tab:blue", label="warped spectrum")
        ax.set_title(f"warped px {divmod(int(p), width)}\nmixes {support.size}; largest w={weights.max():.2f} "
                     f"at {divmod(int(main), width)}", fontsize=9)
        ax.set_xlabel("nm")
    axes[0].set_ylabel("value")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("warped spectra: convex combinations of proxy spectra (Eq. 26)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def plot_known_answer(case, result, score: dict, wavelengths: np.ndarray):
    """One known-answer case (:mod:`hiralign.warp.known_answers`): the truth, the guide, the warped HSI
    (as proxy RGB), the per-pixel absolute error and the spectral-angle map against the best truth."""
    from hiralign.spectral import to_rgb

    truth = case.truths[score["best_truth"]]
    error = np.abs(result.hsi - truth).mean(axis=0)
    dot = (result.hsi * truth).sum(axis=0)
    norms = np.linalg.norm(result.hsi, axis=0) * np.linalg.norm(truth, axis=0)
    angle = np.degrees(np.arccos(np.clip(dot / np.maximum(norms, 1e-12), -1.0, 1.0)))
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.8), layout="constrained")
    for ax, image, title in zip(axes, (to_rgb(truth, wavelengths), case.guide_rgb, to_rgb(result.hsi, wavelengths)),
                                (f"truth ({score['best_truth']})", f"guide: {case.name}", "warped HSI")):
        ax.imshow(display_rgb(image))
        ax.set_title(title)
    for ax, image, title, unit in ((axes[3], error, "mean |error|", ""), (axes[4], angle, "spectral angle", "deg")):
        shown = ax.imshow(image, cmap="magma", vmin=0, vmax=float(np.percentile(image, 99)) or 1.0)
        ax.set_title(title)
        fig.colorbar(shown, ax=ax, shrink=0.8, label=unit)
    for ax in axes:
        ax.axis("off")
    epe = "-" if score.get("epe_median") is None else f"{score['epe_median']:.2f} px"
    fig.suptitle(f"{case.name}: HSI PSNR {score['hsi_psnr']:.2f} dB, SAM {score['sam']:.2f} deg, median end-point error {epe}")
    return fig
