"""How different the guides are: mean ``1 - SSIM`` between guides of a proxy and to the proxy.

Guides should differ from each other (they enlarge target coverage) while keeping the proxy's
layout (the warp must match them to the proxy). Both are measured with the project's SSIM
(:func:`hiralign.metrics.ssim`, mean over the three channels; images of at least 11 x 11 px).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from hiralign.metrics import ssim


@dataclass(frozen=True)
class GuideDiversity:
    """Per proxy: mean ``1 - SSIM`` over guide pairs (``between_guides``) and guide-vs-proxy (``to_proxy``)."""

    between_guides: np.ndarray  # (N,); NaN where a proxy has a single guide
    to_proxy: np.ndarray  # (N,)

    def summary(self) -> dict[str, float]:
        """Means over proxies, as plain floats (for artifacts and tables)."""
        return {
            "between_guides": float(np.nanmean(self.between_guides)) if np.isfinite(self.between_guides).any() else float("nan"),
            "to_proxy": float(np.mean(self.to_proxy)),
        }


def dissimilarity(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - SSIM`` of two ``(3, H, W)`` images in [0, 1]."""
    return 1.0 - ssim(a, b, data_range=1.0)


def guide_diversity(proxy_rgbs: np.ndarray, guides: np.ndarray) -> GuideDiversity:
    """Diversity of ``(N, G, 3, H, W)`` guides of ``(N, 3, H, W)`` proxies."""
    proxy_rgbs, guides = np.asarray(proxy_rgbs, np.float32), np.asarray(guides, np.float32)
    if guides.ndim != 5 or guides.shape[0] != proxy_rgbs.shape[0] or guides.shape[2:] != proxy_rgbs.shape[1:]:
        raise ValueError(f"guides {guides.shape} do not match proxies {proxy_rgbs.shape} (need (N, G, 3, H, W) and (N, 3, H, W))")
    proxy_rgbs = np.clip(proxy_rgbs, 0.0, 1.0)
    between = np.array([
        np.mean([dissimilarity(g[i], g[j]) for i, j in combinations(range(len(g)), 2)]) if len(g) > 1 else np.nan
        for g in guides
    ])
    to_proxy = np.array([np.mean([dissimilarity(x, p) for x in g]) for g, p in zip(guides, proxy_rgbs)])
    return GuideDiversity(between_guides=between, to_proxy=to_proxy)
