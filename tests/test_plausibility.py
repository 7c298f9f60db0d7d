"""Stage-2 spatial-spectral plausibility (hiralign.warp.plausibility): known answers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from hiralign.metrics import neighbour_sam
from hiralign.warp.plausibility import HISTOGRAM_EDGES, Plausibility, spatial_spectral_plausibility


def test_copies_of_the_proxies_are_perfectly_plausible(cave_crop):
    hsi = cave_crop[0][None]
    p = spatial_spectral_plausibility(hsi, np.repeat(hsi[:, None], 2, axis=1))
    assert p.w1 == 0.0 and p.median_synthesized == p.median_proxy
    assert np.array_equal(p.histogram_synthesized, p.histogram_proxy)
    assert p.histogram_proxy.sum() == pytest.approx(1.0) and len(p.histogram_proxy) == len(HISTOGRAM_EDGES) - 1


def test_scrambled_spectra_move_the_neighbour_angles_up(cave_crop):
    hsi = cave_crop[0]
    rng = np.random.default_rng(0)
    flat = hsi.reshape(hsi.shape[0], -1)
    scrambled = flat[:, rng.permutation(flat.shape[1])].reshape(hsi.shape)  # the proxy's spectra, no layout
    p = spatial_spectral_plausibility(hsi[None], scrambled[None, None])
    assert p.median_synthesized > 2 * p.median_proxy
    assert p.w1 == pytest.approx(wasserstein_distance(neighbour_sam(scrambled), neighbour_sam(hsi)))
    again = Plausibility.from_tree(p.tree())  # the artifact round trip
    assert again.summary() == p.summary() and np.array_equal(again.histogram_synthesized, p.histogram_synthesized)


def test_plausibility_rejects_mismatched_shapes(cave_crop):
    with pytest.raises(ValueError, match="must be"):
        spatial_spectral_plausibility(cave_crop[0][None], cave_crop[0][None])
