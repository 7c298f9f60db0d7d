"""Figures of notebook 07: the synthesis sources' HSIs side by side (RGB renders, spectra, fidelity)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from hiralign.generators.compare import SourceView
from hiralign.guides.plots import to_image


def plot_sources_rgb(views: Sequence[SourceView], image: int = 0, max_hsis: int = 3, pixels: Sequence[tuple[int, int]] = ()):
    """One row per source: the proxy RGB of observed image ``image``, then up to ``max_hsis`` of its
    synthesized HSIs rendered to RGB (Eq. 4); ``pixels`` (row, column) are marked on every panel."""
    g = min(max_hsis, min(v.hsi.shape[1] for v in views))
    fig, axes = plt.subplots(len(views), g + 1, figsize=(2.0 * (g + 1), 2.1 * len(views)), squeeze=False)
    for row, view in enumerate(views):
        panels = [(view.proxy_rgb[image], f"proxy: {view.names[image]}")]
        panels += [(view.rgb[image, j], f"{view.label} #{j}") for j in range(g)]
        for col, (rgb, title) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(to_image(rgb))
            for k, (r, c) in enumerate(pixels):
                ax.plot(c, r, "o", ms=5, mfc="none", mec=f"C{k}", mew=1.5)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_spectra_at(views: Sequence[SourceView], pixels: Sequence[tuple[int, int]], image: int = 0):
    """One panel per pixel: the clean target and the proxy spectrum there, and each source's first
    synthesized HSI at the same pixel (a new layout puts other content there: that is the point)."""
    fig, axes = plt.subplots(1, len(pixels), figsize=(3.6 * len(pixels), 3.0), squeeze=False)
    wl = views[0].wavelengths
    for ax, (r, c) in zip(axes[0], pixels):
        if views[0].clean is not None:
            ax.plot(wl, views[0].clean[image, :, r, c], "k-", lw=2, label="clean target")
        ax.plot(wl, views[0].proxy_hsi[image, :, r, c], "k--", lw=1, label="proxy")
        for k, view in enumerate(views):
            ax.plot(wl, view.hsi[image, 0, :, r, c], color=f"C{k + 1}", lw=1.2, label=view.label)
        ax.set_title(f"pixel ({r}, {c}) of {views[0].names[image]}", fontsize=8)
        ax.set_xlabel("wavelength (nm)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("reflectance", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_fidelity(views: Sequence[SourceView]):
    """sPr and sRec of each source's synthesized HSIs against the clean target spectra (notebook 05)."""
    measured = [v for v in views if v.spr is not None and v.srec is not None]
    if not measured:
        raise ValueError("no source has sPr / sRec: run stage 05 (notebook 05_evaluate) in its run folder")
    x = np.arange(len(measured))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(measured) + 2), 3.0))
    ax.bar(x - 0.2, [v.spr for v in measured], width=0.4, label="sPr (precision)")
    ax.bar(x + 0.2, [v.srec for v in measured], width=0.4, label="sRec (recall)")
    ax.set_xticks(x, [v.label for v in measured], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("spectral fidelity of the synthesized HSIs vs the clean target spectra", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
