"""Stage-2a quality: do the guides bring new layouts while keeping the target's colours?

For ``(N, G, 3, H, W)`` guides of ``(N, 3, H, W)`` proxy RGBs (all in [0, 1]):

* **layout similarity** ``ssim_to_proxy``: mean SSIM between each guide and its own proxy (1 =
  the proxy's layout; a near-copy scores 0.8-0.9). Its floor ``ssim_unrelated`` is the SSIM of the
  proxy to itself circularly shifted by half its size: an unrelated layout with the same colours
  and texture. Smooth, low-contrast images have a high floor (0.4-0.5): SSIM's constants make
  flat regions of similar brightness agree whatever their layout;
* **diversity** ``between_guides``: mean ``1 - SSIM`` over the guide pairs of one proxy, and
  ``across_proxies``: the same over guide pairs of different proxies (0 for identical guides);
* **colour distance** ``colour_distance``: the sliced 1-Wasserstein distance
  (:func:`hiralign.metrics.sliced_wasserstein`) between the RGB values of all guides and of all
  proxies (0 when the guides only rearrange proxy pixels); ``colour_distance_own`` is the same per
  proxy, its guides against itself.

SSIM is the project's (:func:`hiralign.metrics.ssim`, mean over the channels; at least 11 x 11 px).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from hiralign.metrics import sliced_wasserstein, ssim

#: Guide pairs of different proxies scored at most (drawn with the seed when there are more).
MAX_ACROSS_PAIRS = 200
#: RGB values drawn from each side of a colour distance at most.
MAX_COLOUR_SAMPLES = 20000


@dataclass(frozen=True)
class GuideQuality:
    """Per proxy ``(N,)`` arrays and set-level scalars of the module docstring."""

    ssim_to_proxy: np.ndarray
    ssim_unrelated: np.ndarray
    between_guides: np.ndarray  # NaN where a proxy has a single guide
    colour_distance_own: np.ndarray
    across_proxies: float  # NaN with a single proxy
    colour_distance: float

    def summary(self) -> dict[str, float]:
        """Means over proxies and the set-level values, as plain floats (for artifacts and tables)."""
        def mean(values: np.ndarray) -> float:
            return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

        return {"ssim_to_proxy": mean(self.ssim_to_proxy), "ssim_unrelated": mean(self.ssim_unrelated),
                "between_guides": mean(self.between_guides),
                "across_proxies": float(self.across_proxies), "colour_distance": float(self.colour_distance),
                "colour_distance_own": mean(self.colour_distance_own)}

    def tree(self) -> dict[str, np.ndarray]:
        return {"ssim_to_proxy": self.ssim_to_proxy, "ssim_unrelated": self.ssim_unrelated, "between_guides": self.between_guides,
                "colour_distance_own": self.colour_distance_own, "across_proxies": np.float64(self.across_proxies),
                "colour_distance": np.float64(self.colour_distance)}

    @classmethod
    def from_tree(cls, tree: dict) -> "GuideQuality":
        return cls(np.asarray(tree["ssim_to_proxy"]), np.asarray(tree["ssim_unrelated"]), np.asarray(tree["between_guides"]),
                   np.asarray(tree["colour_distance_own"]), float(tree["across_proxies"]), float(tree["colour_distance"]))


def dissimilarity(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - SSIM`` of two ``(3, H, W)`` images in [0, 1]."""
    return 1.0 - ssim(a, b, data_range=1.0)


def unrelated_layout(rgb: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` circularly shifted by half its height and width: same statistics, unrelated layout."""
    return np.roll(rgb, (rgb.shape[1] // 2, rgb.shape[2] // 2), axis=(1, 2))


def rgb_values(images: np.ndarray, rng: np.random.Generator, max_samples: int = MAX_COLOUR_SAMPLES) -> np.ndarray:
    """The RGB values ``(M, 3)`` of ``(..., 3, H, W)`` images, at most ``max_samples`` of them (drawn with ``rng``)."""
    values = np.moveaxis(np.asarray(images, np.float64), -3, -1).reshape(-1, 3)
    if len(values) > max_samples:
        values = values[rng.choice(len(values), max_samples, replace=False)]
    return values


def across_proxy_dissimilarity(guides: np.ndarray, rng: np.random.Generator, max_pairs: int = MAX_ACROSS_PAIRS) -> float:
    """Mean ``1 - SSIM`` over guide pairs of different proxies (at most ``max_pairs``, drawn with ``rng``)."""
    n, g = guides.shape[:2]
    pairs = [(a, b) for a, b in combinations(range(n * g), 2) if a // g != b // g]
    if not pairs:
        return float("nan")
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in rng.choice(len(pairs), max_pairs, replace=False)]
    flat = guides.reshape(n * g, *guides.shape[2:])
    return float(np.mean([dissimilarity(flat[a], flat[b]) for a, b in pairs]))


def guide_quality(proxy_rgbs: np.ndarray, guides: np.ndarray, seed: int = 0) -> GuideQuality:
    """Layout similarity, diversity and colour distance of ``(N, G, 3, H, W)`` guides of ``(N, 3, H, W)`` proxies."""
    proxy_rgbs, guides = np.asarray(proxy_rgbs, np.float32), np.asarray(guides, np.float32)
    if guides.ndim != 5 or guides.shape[0] != proxy_rgbs.shape[0] or guides.shape[2:] != proxy_rgbs.shape[1:]:
        raise ValueError(f"guides {guides.shape} do not match proxies {proxy_rgbs.shape} (need (N, G, 3, H, W) and (N, 3, H, W))")
    proxy_rgbs = np.clip(proxy_rgbs, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    between = np.array([
        np.mean([dissimilarity(g[i], g[j]) for i, j in combinations(range(len(g)), 2)]) if len(g) > 1 else np.nan
        for g in guides
    ])
    to_proxy = np.array([np.mean([ssim(x, p, data_range=1.0) for x in g]) for g, p in zip(guides, proxy_rgbs)])
    floor = np.array([ssim(unrelated_layout(p), p, data_range=1.0) for p in proxy_rgbs])
    own = np.array([sliced_wasserstein(rgb_values(g, rng), rgb_values(p, rng), seed=seed) for g, p in zip(guides, proxy_rgbs)])
    colour = sliced_wasserstein(rgb_values(guides, rng), rgb_values(proxy_rgbs, rng), seed=seed)
    return GuideQuality(to_proxy, floor, between, own, across_proxy_dissimilarity(guides, rng), colour)
