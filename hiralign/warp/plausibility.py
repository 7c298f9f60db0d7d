"""Spatial-spectral plausibility of the synthesized HSIs: do spectra change across the new layouts
as they do across the proxies?

Inside one material neighbouring spectra are nearly parallel; at a boundary the angle jumps. The
distribution of the spectral angle between neighbouring pixels (:func:`hiralign.metrics.neighbour_sam`)
therefore summarises how a scene's spectra are arranged. A warp that scrambles spectra inside
regions raises the angles in flat areas; one that copies whole proxy regions keeps the proxy's
distribution. Measured here: the median neighbour angle of the synthesized HSIs and of the proxies,
and the 1-Wasserstein distance between the two distributions (``scipy.stats.wasserstein_distance``),
in degrees. A histogram of each on :data:`HISTOGRAM_EDGES` goes into the artifact for the figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import wasserstein_distance

from hiralign.metrics import neighbour_sam

#: Bins (degrees) of the stored neighbour-angle histograms; angles above the last edge fall in the last bin.
HISTOGRAM_EDGES = np.linspace(0.0, 20.0, 41)


@dataclass(frozen=True)
class Plausibility:
    """Neighbour-angle statistics (degrees) of the synthesized HSIs against the proxies they came from."""

    median_synthesized: float
    median_proxy: float
    w1: float
    histogram_synthesized: np.ndarray  # (len(HISTOGRAM_EDGES) - 1,) fractions
    histogram_proxy: np.ndarray

    def summary(self) -> dict[str, float]:
        return {"nsam_synthesized": self.median_synthesized, "nsam_proxy": self.median_proxy, "nsam_w1": self.w1}

    def tree(self) -> dict[str, np.ndarray]:
        return {"median_synthesized": np.float64(self.median_synthesized), "median_proxy": np.float64(self.median_proxy),
                "w1": np.float64(self.w1), "histogram_synthesized": self.histogram_synthesized,
                "histogram_proxy": self.histogram_proxy, "histogram_edges": HISTOGRAM_EDGES}

    @classmethod
    def from_tree(cls, tree: dict) -> "Plausibility":
        return cls(float(tree["median_synthesized"]), float(tree["median_proxy"]), float(tree["w1"]),
                   np.asarray(tree["histogram_synthesized"]), np.asarray(tree["histogram_proxy"]))


def neighbour_angles(cubes: np.ndarray) -> np.ndarray:
    """Every neighbour angle (degrees) of a stack ``(..., B, H, W)`` of cubes, pooled."""
    cubes = np.asarray(cubes)
    return np.concatenate([neighbour_sam(c) for c in cubes.reshape(-1, *cubes.shape[-3:])])


def histogram(angles: np.ndarray) -> np.ndarray:
    """Fractions of ``angles`` in the bins of :data:`HISTOGRAM_EDGES` (the last bin takes the rest)."""
    counts, _ = np.histogram(np.minimum(angles, HISTOGRAM_EDGES[-1]), bins=HISTOGRAM_EDGES)
    return counts / max(len(angles), 1)


def spatial_spectral_plausibility(proxy_hsi: np.ndarray, synthesized: np.ndarray) -> Plausibility:
    """Neighbour-angle statistics of ``synthesized`` ``(N, G, B, H, W)`` against ``proxy_hsi`` ``(N, B, H, W)``."""
    synthesized, proxy_hsi = np.asarray(synthesized), np.asarray(proxy_hsi)
    if synthesized.ndim != 5 or proxy_hsi.ndim != 4 or synthesized.shape[2:] != proxy_hsi.shape[1:]:
        raise ValueError(f"synthesized {synthesized.shape} and proxies {proxy_hsi.shape} must be (N, G, B, H, W) and (N, B, H, W)")
    a_syn, a_proxy = neighbour_angles(synthesized), neighbour_angles(proxy_hsi)
    return Plausibility(float(np.median(a_syn)), float(np.median(a_proxy)), float(wasserstein_distance(a_syn, a_proxy)),
                        histogram(a_syn), histogram(a_proxy))
