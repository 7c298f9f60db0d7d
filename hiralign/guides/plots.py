"""Figures of stage 2a: the proxy RGB next to its guides, and the measured guide quality."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from hiralign.guides.quality import GuideQuality


def to_image(rgb: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] to an ``(H, W, 3)`` image for ``imshow`` (no rescaling: guides are in [0, 1])."""
    return np.clip(np.moveaxis(np.asarray(rgb, dtype=np.float32), 0, -1), 0.0, 1.0)


def plot_guide_grid(proxy_rgbs: np.ndarray, guides: np.ndarray, names: list[str] | None = None, max_proxies: int = 4, title: str = ""):
    """One row per proxy: the proxy RGB, then its G guides."""
    n = min(len(proxy_rgbs), max_proxies)
    g = guides.shape[1]
    fig, axes = plt.subplots(n, g + 1, figsize=(2.0 * (g + 1), 2.0 * n), squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(to_image(proxy_rgbs[row]))
        axes[row, 0].set_title(f"proxy: {names[row]}" if names else "proxy RGB", fontsize=8)
        for col in range(g):
            axes[row, col + 1].imshow(to_image(guides[row, col]))
            axes[row, col + 1].set_title(f"guide {col}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_quality(quality: GuideQuality, names: list[str] | None = None, title: str = ""):
    """Bars per proxy: SSIM of its guides to it (layout kept), mean ``1 - SSIM`` between its guides (diversity)."""
    n = len(quality.ssim_to_proxy)
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * n + 2), 3.0))
    ax.bar(x - 0.2, quality.ssim_to_proxy, width=0.4, label="SSIM guide vs proxy (layout kept)")
    ax.bar(x + 0.2, quality.between_guides, width=0.4, label="1 - SSIM between guides (diversity)")
    ax.set_xticks(x, names if names else [str(i) for i in x], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    s = quality.summary()
    ax.set_title(title or (f"SSIM to proxy {s['ssim_to_proxy']:.3f}, between guides {s['between_guides']:.3f}, "
                           f"across proxies {s['across_proxies']:.3f}, colour distance {s['colour_distance']:.4f}"), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
