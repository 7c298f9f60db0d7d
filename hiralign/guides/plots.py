"""Figures of stage 2a: the proxy RGB next to its guides, and the measured guide diversity."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from hiralign.guides.diversity import GuideDiversity


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


def plot_diversity(diversity: GuideDiversity, names: list[str] | None = None, title: str = ""):
    """Bars per proxy of mean ``1 - SSIM`` between guides and between each guide and its proxy."""
    n = len(diversity.to_proxy)
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * n + 2), 3.0))
    ax.bar(x - 0.2, diversity.between_guides, width=0.4, label="between guides")
    ax.bar(x + 0.2, diversity.to_proxy, width=0.4, label="guide vs proxy")
    ax.set_xticks(x, names if names else [str(i) for i in x], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("mean 1 - SSIM")
    summary = diversity.summary()
    ax.set_title(title or f"guide diversity: between {summary['between_guides']:.3f}, to proxy {summary['to_proxy']:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
