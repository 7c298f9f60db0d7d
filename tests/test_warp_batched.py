"""Batched warps (issue 17): several pairs optimised in one transport, one index per proxy.

The batched path must give what one-at-a-time calls give (within 1e-5: Adam works element by
element and each pair's gradient is its own loss's), and every loss term must reduce a batch
pair by pair. The sparse Parzen joint histogram of the MI term is checked against the dense
triangular-window formula it replaces.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hiralign.spectral import VISIBLE_31, to_rgb
from hiralign.warp import WarpParams, demo_guide, spectral_warp, spectral_warps
from hiralign.warp import losses, transport
from hiralign.warp.optimise import TransportProblem, optimise_transport
from hiralign.warp.retrieval import Candidates

FAST = {"threads": 1, "iters": 40}


def dense_joint_histogram(a: np.ndarray, b: np.ndarray, bins: int) -> np.ndarray:
    """The triangular-window (B-spline order 1) Parzen joint histogram from dense memberships."""
    centres = np.linspace(0.0, 1.0, bins)

    def memberships(v):
        return np.maximum(0.0, 1.0 - np.abs(v[..., None] - centres) * (bins - 1))  # (G, n, bins)
    wa, wb = memberships(a), memberships(b)
    return np.einsum("gni,gnj->gij", wa, wb) / a.shape[1]


def test_sparse_joint_histogram_equals_the_dense_parzen_formula_and_has_its_gradient():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(4, 500))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    a[0, :3], b[0, :3] = [0.0, 1.0, 0.5], [1.0, 0.0, 0.25]  # the ends and bin centres
    ours = losses.soft_joint_histogram(torch.from_numpy(a), torch.from_numpy(b), 16).numpy()
    np.testing.assert_allclose(ours, dense_joint_histogram(a, b, 16), atol=1e-12)
    np.testing.assert_allclose(ours.sum(axis=(1, 2)), 1.0, atol=1e-12)
    inside = torch.from_numpy(rng.uniform(0.01, 0.99, size=(2, 30)))  # away from bin centres: differentiable
    inside = inside + (inside * 15 % 1 < 1e-3) * 1e-2
    assert torch.autograd.gradcheck(lambda x: losses.soft_joint_histogram(x, inside.flip(1), 16), (inside.clone().requires_grad_(True),))


def batch_of_images(p: int = 3, size: int = 12):
    gen = torch.Generator().manual_seed(1)
    image, guide = torch.rand(p, 3, size, size, generator=gen), torch.rand(p, 3, size, size, generator=gen)
    return image, guide


@pytest.mark.parametrize("term", ["rgb", "patch", "mi", "ssim", "grad", "tv", "curvature"])
def test_every_loss_term_reduces_a_batch_pair_by_pair(term):
    image, guide = batch_of_images()
    coverage = losses.patch_coverage(12, 12, 5)
    sample = torch.arange(0, 144, 2)
    fn = {
        "rgb": lambda x, g: losses.rgb_l1(x, g),
        "patch": lambda x, g: losses.patch_l1(x, g, coverage),
        "mi": lambda x, g: losses.mutual_information_loss(x, g, 16, sample),
        "ssim": lambda x, g: losses.ssim_loss(x, g, 7, 1.5),
        "grad": lambda x, g: losses.gradient_l1(x, g),
        "tv": lambda x, g: losses.coordinate_tv(x[:2] if x.dim() == 3 else x[:, :2]),
        "curvature": lambda x, g: losses.displacement_curvature(x[:2] if x.dim() == 3 else x[:, :2]),
    }[term]
    batched = fn(image, guide)
    assert batched.shape == (3,)
    singles = torch.stack([fn(image[i], guide[i]) for i in range(3)])
    assert all(fn(image[i], guide[i]).dim() == 0 for i in range(3))
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-6)


def test_batched_transport_interpolation_and_aggregation_equal_pair_by_pair():
    gen = torch.Generator().manual_seed(2)
    pre, beta = torch.rand(2, 3, 5, 6, generator=gen), torch.softmax(torch.rand(2, 9, 30, generator=gen), dim=1)
    torch.testing.assert_close(transport.interpolate(pre, beta, 3), torch.stack([transport.interpolate(pre[i], beta[i], 3) for i in range(2)]))
    pre64, beta64 = pre.double().requires_grad_(True), beta.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, b: transport.interpolate(x, b, 3), (pre64, beta64))
    values, alpha = torch.rand(2, 30, 5, 4, generator=gen), torch.softmax(torch.rand(2, 30, 4, generator=gen), dim=-1)
    torch.testing.assert_close(transport.aggregate(values, alpha, 5, 6),
                               torch.stack([transport.aggregate(values[i], alpha[i], 5, 6) for i in range(2)]))


@pytest.mark.parametrize("mode", ["coherent", "paper"])
def test_batched_warps_equal_one_at_a_time_and_reuse_the_proxy_index(cave_crop, mode):
    hsi, rgb = cave_crop
    other_hsi = np.ascontiguousarray(hsi[:, ::-1])
    other_rgb = to_rgb(other_hsi, VISIBLE_31)
    guides = [demo_guide(rgb, seed=s) for s in range(3)]
    pairs = [(hsi, rgb, g) for g in guides] + [(other_hsi, other_rgb, demo_guide(other_rgb, seed=7))]
    batched = list(spectral_warps(pairs, mode=mode, **FAST))
    alone = [spectral_warp(*pair, mode=mode, **FAST) for pair in pairs]
    assert [r.diagnostics["batch_pairs"] for r in batched] == [4] * 4
    assert [r.diagnostics["batch_pairs"] for r in alone] == [1] * 4
    for b, a in zip(batched, alone):
        np.testing.assert_allclose(b.hsi, a.hsi, atol=1e-5)
        np.testing.assert_allclose(b.aggregation_weights, a.aggregation_weights, atol=1e-5)
        np.testing.assert_allclose(b.interpolation_weights, a.interpolation_weights, atol=1e-5)
        np.testing.assert_array_equal(b.candidates, a.candidates)
        assert b.loss_history.keys() == a.loss_history.keys()
        np.testing.assert_allclose(b.loss_history["total"], a.loss_history["total"], rtol=1e-5)
    # the proxy's index serves its later guides whose descriptors are computed alike; a new proxy builds its own
    def descriptor_settings(r):
        m = r.diagnostics["guide_model"]
        return r.diagnostics["intensity_scale"], float(np.hypot(m["sigma"], m["blur"])), m["patch"]
    models = [descriptor_settings(r) for r in batched]
    expected = [models[i] in models[:i] for i in range(3)] + [False]
    assert [r.diagnostics["index_reused"] for r in batched] == expected
    assert any(expected), "a guide no brighter than its proxy shares the proxy's scale, so its index"


def test_batches_split_by_size_and_pixel_budget(cave_crop):
    hsi, rgb = cave_crop
    small = (hsi[:, :32, :32].copy(), rgb[:, :32, :32].copy())
    pairs = [(hsi, rgb, rgb), (hsi, rgb, rgb), (*small, small[1]), (hsi, rgb, rgb)]
    sizes = [r.diagnostics["batch_pairs"] for r in spectral_warps(pairs, mode="paper", batch_pixels=2 * 64 * 64, **FAST)]
    assert sizes == [2, 2, 1, 1]
    assert [r.diagnostics["batch_pairs"] for r in spectral_warps(pairs[:2], mode="paper", batch_pixels=0, **FAST)] == [1, 1]


def test_pairs_of_a_batch_must_share_size_and_parameters():
    def problem(size, **changes):
        n = size * size
        candidates = Candidates(torch.zeros(n, 2, dtype=torch.int64), torch.ones(n, 2), "flat")
        return TransportProblem(torch.rand(3, size, size), torch.rand(3, size, size), candidates, WarpParams(iters=1, **changes))
    with pytest.raises(ValueError, match="one size"):
        optimise_transport([problem(4), problem(5)])
    with pytest.raises(ValueError, match="share their warp parameters"):
        optimise_transport([problem(4), problem(4, lr=0.1)])
    assert len(optimise_transport([problem(4), problem(4, lambda_flow=0.0)])) == 2  # the guide model's weight may differ


def test_the_thread_limit_never_outlives_a_batch(cave_crop):
    """Between the results it yields, ``spectral_warps`` leaves the caller's thread count alone."""
    hsi, rgb = cave_crop
    before = torch.get_num_threads()
    seen = [torch.get_num_threads() for _ in spectral_warps([(hsi, rgb, rgb)] * 2, mode="paper", batch_pixels=0, threads=before + 1, iters=2)]
    assert seen == [before, before]
