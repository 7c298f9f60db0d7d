"""Stage 2b, warp-based hyperspectral generation (Eq. 9-26): invariants, known answers on the real
CAVE scene, independent references for each building block, the notebook and the benchmark script.

Warps run on 64 x 64 crops of the CAVE balloons scene with one torch/faiss thread, so the whole file
takes well under two minutes on two shared cores.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hiralign.data import Cube
from hiralign.spectral import VISIBLE_31, to_rgb
from hiralign.warp import (
    WarpInputError,
    WarpParams,
    demo_guide,
    patch_descriptors,
    retrieval_recall,
    spectral_warp,
    transport_image,
)
from hiralign.warp import losses, retrieval, transport
from hiralign.warp.operator import composed_operator
from hiralign.stages import run_stage
from stage_helpers import tiny_params

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
FAST = {"threads": 1}


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(reference, test, data_range=1.0))


@pytest.fixture(scope="module")
def identity_warp(cave_crop):
    hsi, rgb = cave_crop
    return spectral_warp(hsi, rgb, rgb, **FAST)


# ----------------------------------------------------------------------------- operator invariants


@pytest.mark.parametrize("mode", ["paper", "coherent"])
def test_operator_is_sparse_row_stochastic_and_reproduces_hsi(cave_crop, mode):
    hsi, rgb = cave_crop
    guide = demo_guide(rgb, seed=3)
    result = spectral_warp(hsi, rgb, guide, iters=20, mode=mode, **FAST)
    w = result.operator
    bands = hsi.shape[0]
    n = SIZE * SIZE
    assert w.shape == (n, n) and w.format == "csr"
    assert w.data.min() >= 0.0
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    assert np.diff(w.indptr).max() <= result.params["n_candidates"] * result.params["stencil"] ** 2
    np.testing.assert_allclose((w @ hsi.reshape(bands, -1).T).T.reshape(hsi.shape), result.hsi, atol=1e-5)
    np.testing.assert_allclose((w @ rgb.reshape(3, -1).T).T.reshape(rgb.shape), result.rgb, atol=1e-5)
    # every warped spectrum is a convex combination of proxy spectra: inside the per-band proxy range
    flat = hsi.reshape(bands, -1)
    out = result.hsi.reshape(bands, -1)
    assert np.all(out >= flat.min(axis=1, keepdims=True) - 1e-6)
    assert np.all(out <= flat.max(axis=1, keepdims=True) + 1e-6)
    assert result.hsi.dtype == np.float32 and result.hsi.shape == hsi.shape
    assert result.displacement.shape == (2, SIZE, SIZE) and result.rgb.shape == (3, SIZE, SIZE)


def test_operator_equals_direct_eq23_24_in_torch(cave_crop):
    """Eq. 25-26 (sparse W = S A) and Eq. 23-24 computed directly agree for the optimised weights."""
    hsi, rgb = cave_crop
    result = spectral_warp(hsi, rgb, demo_guide(rgb, seed=1), iters=10, **FAST)
    direct = transport_image(
        torch.from_numpy(hsi),
        torch.from_numpy(result.candidates),
        torch.from_numpy(result.aggregation_weights),
        torch.from_numpy(np.ascontiguousarray(result.interpolation_weights.T)),
        result.params["stencil"],
    ).numpy()
    np.testing.assert_allclose(direct, result.hsi, atol=1e-5)
    np.testing.assert_allclose(result.aggregation_weights.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.interpolation_weights.sum(axis=1), 1.0, atol=1e-5)


def test_composed_operator_sums_repeated_columns_and_clamps_borders():
    """Two identical candidates and a stencil leaving the image: repeats are summed, rows still sum to 1."""
    height, width, stencil = 3, 4, 3
    n = height * width
    indices = np.stack([np.arange(n), np.arange(n)], axis=1)  # each pixel's two candidates are itself
    alpha = np.full((n, 2), 0.5)
    beta = np.zeros((n, stencil * stencil))
    beta[:, 0] = 1.0  # offset (-1, -1): clamps to the border on the first row / column
    w = composed_operator(indices, alpha, beta, height, width, stencil).toarray()
    expected = np.zeros((n, n))
    for y in range(height):
        for x in range(width):
            expected[y * width + x, max(y - 1, 0) * width + max(x - 1, 0)] = 1.0
    np.testing.assert_allclose(w, expected)


# ----------------------------------------------------------------------------- known answers (real CAVE)


def test_identity_guide_reproduces_proxy(cave_crop, identity_warp):
    hsi, _ = cave_crop
    assert psnr(hsi, identity_warp.hsi) >= 40.0
    assert np.abs(np.median(identity_warp.displacement, axis=(1, 2))).max() < 0.5


def test_flipped_guide_gives_flipped_hsi(cave_crop):
    hsi, rgb = cave_crop
    result = spectral_warp(hsi, rgb, np.ascontiguousarray(rgb[:, :, ::-1]), **FAST)
    assert psnr(np.ascontiguousarray(hsi[:, :, ::-1]), result.hsi) >= 35.0


def test_shifted_guide_gives_shifted_hsi_and_recovers_the_shift(cave_crop):
    hsi, rgb = cave_crop
    shift = 7
    result = spectral_warp(hsi, rgb, np.roll(rgb, shift, axis=2), **FAST)
    assert psnr(np.roll(hsi, shift, axis=2), result.hsi) >= 40.0
    # guide(x) = proxy(x - 7): displacement = expected proxy coordinate - guide coordinate = -7
    interior = result.displacement[:, 8:-8, shift + 8 : -8]  # away from the image border and the wrap seam
    assert abs(np.median(interior[1]) + shift) <= 0.5
    assert abs(np.median(interior[0])) <= 0.5


def test_default_optimisation_beats_retrieval_alone(cave_crop):
    """With a real transformation (shift + colour jitter + blur) 200 Adam steps of the paper's seven
    Eq. 20 terms bring the RGB closer to the guide."""
    hsi, rgb = cave_crop
    guide = demo_guide(rgb, seed=5, flip=False, max_shift=5, jitter=0.1, blur_sigma=0.7)
    assert WarpParams().iters == 200
    optimised = spectral_warp(hsi, rgb, guide, mode="paper", **FAST)
    initial = spectral_warp(hsi, rgb, guide, mode="paper", iters=0, **FAST)
    scale = float(guide.max())
    assert psnr(guide / scale, optimised.rgb / scale) > psnr(guide / scale, initial.rgb / scale) + 0.5
    history = optimised.loss_history
    assert len(history["total"]) == 201 and history["total"][-1] < history["total"][0]
    assert set(history) == {"total", "rgb", "patch", "mi", "ssim", "grad", "tv", "prior"}
    assert len(initial.loss_history["total"]) == 1
    assert {"descriptors", "retrieval", "optimisation", "transfer", "total"} <= set(optimised.timings)


def test_zero_weight_switches_a_term_off(cave_crop):
    hsi, rgb = cave_crop
    result = spectral_warp(hsi[:, :24, :24], rgb[:, :24, :24], rgb[:, :24, :24], mode="paper", iters=3, lambda_mi=0.0, lambda_tv=0.0, **FAST)
    assert set(result.loss_history) == {"total", "rgb", "patch", "ssim", "grad", "prior"}
    assert all(len(v) == 4 for v in result.loss_history.values())


def test_accepts_a_cube_and_is_deterministic(cave_crop):
    hsi, rgb = cave_crop
    small, small_rgb = hsi[:, :32, :32], rgb[:, :32, :32]
    guide = demo_guide(small_rgb, seed=2)
    a = spectral_warp(Cube(small, VISIBLE_31), small_rgb, guide, iters=5, **FAST)
    b = spectral_warp(small, small_rgb, guide, iters=5, **FAST)
    np.testing.assert_array_equal(a.hsi, b.hsi)
    assert a.loss_history == b.loss_history


# ----------------------------------------------------------------------------- input and parameter validation


def test_bad_inputs_raise_clear_errors(cave_crop):
    hsi, rgb = cave_crop
    with pytest.raises(WarpInputError, match="spatial sizes differ"):
        spectral_warp(hsi, rgb, rgb[:, :32, :32])
    with pytest.raises(WarpInputError, match="3-channel"):
        spectral_warp(hsi, rgb, np.concatenate([rgb, rgb[:1]]))
    bad = rgb.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(WarpInputError, match="guide_rgb contains 1 NaN"):
        spectral_warp(hsi, rgb, bad)
    with pytest.raises(WarpInputError, match="proxy_hsi must be"):
        spectral_warp(hsi[0], rgb, rgb)
    with pytest.raises(TypeError, match="unknown warp parameter.*'iterations'"):
        spectral_warp(hsi, rgb, rgb, iterations=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"patch": 4}, "patch must be a positive odd"), ({"stencil": 0}, "stencil must be"),
     ({"n_candidates": 20, "k": 2, "radius": 0}, "exceeds the candidate pool"), ({"index": "lsh"}, "index must be one of"),
     ({"tau": 0.0}, "tau must be"), ({"lambda_mi": -1.0}, "lambda_mi must be"), ({"device": "tpu"}, "device must be"),
     ({"mode": "fast"}, "mode must be one of"), ({"coherence_iters": -1}, "coherence_iters must be"),
     ({"coherence_discount": -0.1}, "coherence_discount must be"), ({"noisy_patch": 4}, "noisy_patch must be"),
     ({"max_guide_blur": float("nan")}, "max_guide_blur must be"),
     ({name: 0.0 for name in WarpParams.loss_weight_names()}, "nothing to optimise")],
)
def test_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarpParams(**kwargs)


def test_defaults_follow_the_paper():
    p = WarpParams()
    assert (p.k, p.n_candidates, p.w_grad, p.w_chroma, p.tau, p.iters, p.lr) == (16, 16, 0.5, 0.25, 1.0, 200, 0.05)


# ----------------------------------------------------------------------------- descriptors (Eq. 9)


def test_descriptor_is_the_vectorised_patch_of_the_eq9_channels():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.05, 1.0, size=(3, 9, 11)).astype(np.float32)
    desc = patch_descriptors(torch.from_numpy(rgb), patch=3, w_chroma=0.25, w_grad=0.5, eps=1e-6).numpy()
    assert desc.shape == (9 * 11, 8 * 9)
    chroma = rgb / (rgb.sum(axis=0, keepdims=True) + 1e-6)
    grey = np.pad(rgb.mean(axis=0), 1, mode="edge")
    gx = 0.5 * (grey[1:-1, 2:] - grey[1:-1, :-2])
    gy = 0.5 * (grey[2:, 1:-1] - grey[:-2, 1:-1])
    channels = np.concatenate([rgb, 0.25 * chroma, 0.5 * np.stack([gx, gy])])
    padded = np.pad(channels, ((0, 0), (1, 1), (1, 1)), mode="edge")
    y, x = 4, 6  # an interior pixel; the (channel, dy, dx) order is that of torch unfold
    expected = padded[:, y : y + 3, x : x + 3].reshape(-1)
    np.testing.assert_allclose(desc[y * 11 + x], expected, rtol=1e-5, atol=1e-6)
    corner = padded[:, 0:3, 0:3].reshape(-1)  # replicate border
    np.testing.assert_allclose(desc[0], corner, rtol=1e-5, atol=1e-6)


def test_chroma_part_is_invariant_to_intensity():
    rgb = torch.rand(3, 8, 8) + 0.1
    a = patch_descriptors(rgb, patch=1, eps=1e-9)
    b = patch_descriptors(2.0 * rgb, patch=1, eps=1e-9)
    torch.testing.assert_close(a[:, 3:6], b[:, 3:6], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(2.0 * a[:, :3], b[:, :3])


# ----------------------------------------------------------------------------- retrieval (Eq. 10-13)


def test_expand_seeds_clamps_to_the_image():
    pool = retrieval.expand_seeds(torch.tensor([[0, 5]]), height=3, width=3, radius=1)
    assert pool.shape == (1, 18)
    assert sorted(set(pool[0, :9].tolist())) == [0, 1, 3, 4]  # corner window clamped
    assert sorted(pool[0, 9:].tolist()) == sorted([1, 2, 2, 4, 5, 5, 7, 8, 8])


def test_score_pool_is_mean_absolute_distance_with_repeats_scored_once():
    rng = np.random.default_rng(1)
    proxy = torch.from_numpy(rng.normal(size=(20, 6)).astype(np.float32))
    guide = torch.from_numpy(rng.normal(size=(3, 6)).astype(np.float32))
    pool = torch.tensor([[4, 2, 4, 9], [1, 1, 1, 1], [0, 19, 7, 3]])
    sorted_pool, dist = retrieval.score_pool(guide, proxy, pool)
    for q in range(3):
        finite = torch.isfinite(dist[q])
        assert sorted(sorted_pool[q][finite].tolist()) == sorted(set(pool[q].tolist()))
        for idx, d in zip(sorted_pool[q][finite], dist[q][finite]):
            assert float(d) == pytest.approx(float((guide[q] - proxy[idx]).abs().mean()), rel=1e-5)
    indices, best = retrieval.select_candidates(sorted_pool, dist, 2)
    assert indices[1].tolist() == [1, 1]  # one unique member: the best repeats
    assert torch.all(best[:, 0] <= best[:, 1])


def test_identity_retrieval_finds_each_pixel_itself(cave_crop, identity_warp):
    """Both modes rank each pixel itself first; Eq. 13 (paper mode) keeps the candidates sorted by
    distance, the coherent mode by its coherence-aware ranking."""
    hsi, rgb = cave_crop
    n = SIZE * SIZE
    paper = spectral_warp(hsi, rgb, rgb, mode="paper", iters=0, **FAST)
    for result in (identity_warp, paper):
        assert np.array_equal(result.candidates[:, 0], np.arange(n))
        assert np.allclose(result.candidate_distances[:, 0], 0.0)
    assert np.all(np.diff(paper.candidate_distances, axis=1) >= 0)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall(cave_crop, kind):
    _, rgb = cave_crop
    proxy = patch_descriptors(torch.from_numpy(rgb / rgb.max())).numpy()
    guide = patch_descriptors(torch.from_numpy(demo_guide(rgb, seed=0) / rgb.max())).numpy()
    index = retrieval.build_index(proxy, kind, seed=0)
    stats = retrieval_recall(index, guide, proxy, k=16, n_queries=500, seed=0)
    assert stats["recall"] >= 0.9 and stats["recall_ties"] >= stats["recall"]
    exact = retrieval.build_index(proxy, "flat")
    assert retrieval_recall(exact, guide, proxy, k=16, n_queries=200)["recall"] == pytest.approx(1.0)


def test_auto_index_choice():
    assert retrieval.resolve_index_kind("auto", 64 * 64, 32768) == "flat"
    assert retrieval.resolve_index_kind("auto", 512 * 512, 32768) == "ivf"
    assert retrieval.resolve_index_kind("auto", 512 * 512, 32768, on_gpu=True) == "flat"
    assert retrieval.resolve_index_kind("hnsw", 16, 32768) == "hnsw"


def test_faiss_gpu_path_is_taken_when_faiss_sees_a_gpu(monkeypatch):
    """Without a GPU here, fake faiss's GPU entry points and check that the GPU indexes are built."""
    import faiss

    made = []

    class FakeResources:
        pass

    def fake_gpu_flat(res, dim):
        made.append(("GpuIndexFlatL2", type(res).__name__))
        return faiss.IndexFlatL2(dim)

    def fake_to_gpu(res, device, index):
        made.append(("index_cpu_to_gpu", device))
        return index

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", FakeResources, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatL2", fake_gpu_flat, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", fake_to_gpu, raising=False)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 16))).astype(np.float32)  # rank 6: PCA to 8 keeps it
    flat = retrieval.build_index(data, "flat", device="cuda")
    ivf = retrieval.build_index(data, "ivf", device="cuda:1", pca_dim=8)
    hnsw = retrieval.build_index(data, "hnsw", device="cuda")
    assert made == [("GpuIndexFlatL2", "FakeResources"), ("index_cpu_to_gpu", 1)]
    assert flat.on_gpu and ivf.on_gpu and not hnsw.on_gpu
    assert retrieval_recall(ivf, data, data, k=4, n_queries=100)["recall"] > 0.9
    assert not retrieval.faiss_gpu_available("cpu")


# ----------------------------------------------------------------------------- transport and losses (Eq. 14-21)


def test_interpolation_one_hot_offset_is_a_replicate_shift():
    image = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    beta = torch.zeros(9, 12)
    beta[5] = 1.0  # offset (dy, dx) = (0, +1)
    shifted = transport.interpolate(image, beta, 3)
    expected = torch.cat([image[:, :, 1:], image[:, :, -1:]], dim=2)  # x + 1, last column replicated
    torch.testing.assert_close(shifted, expected)
    assert transport.BOUNDARY_RULE == "replicate"


def test_expected_coordinates_and_displacement():
    indices = torch.tensor([[1, 2], [0, 3], [3, 3], [0, 0]])  # 2 x 2 image
    alpha = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75], [1.0, 0.0]])
    coords = transport.candidate_coordinates(indices, width=2)
    expected = transport.expected_coordinates(coords, alpha, 2, 2)
    torch.testing.assert_close(expected[:, 0, 0], torch.tensor([0.5, 0.5]))  # mean of (0,1) and (1,0)
    torch.testing.assert_close(expected[:, 1, 0], torch.tensor([1.0, 1.0]))
    disp = transport.displacement_field(expected)
    torch.testing.assert_close(disp[:, 1, 1], torch.tensor([-1.0, -1.0]))  # pixel (1,1) takes from (0,0)


def test_patch_l1_equals_the_mean_over_unfolded_patches():
    rng = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 13, 10, generator=rng), torch.rand(3, 13, 10, generator=rng)
    unfolded = (F.unfold(a[None], 5) - F.unfold(b[None], 5)).abs().mean()
    coverage = losses.patch_coverage(13, 10, 5)
    torch.testing.assert_close(losses.patch_l1(a, b, coverage), unfolded)


def test_ssim_loss_matches_skimage():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 40, 40)).astype(np.float32)
    y = np.clip(x + rng.normal(scale=0.1, size=x.shape), 0, 1).astype(np.float32)
    ours = 1.0 - float(losses.ssim_loss(torch.from_numpy(x), torch.from_numpy(y), 11, 1.5))
    reference = np.mean([
        structural_similarity(x[c], y[c], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for c in range(3)
    ])
    assert ours == pytest.approx(reference, abs=0.02)  # skimage averages a cropped map; ours the valid region
    gx, gy = torch.from_numpy(x), torch.from_numpy(y)
    stats = losses.ssim_guide_statistics(gy, losses.ssim_kernel(11, 1.5, 40, 40))
    torch.testing.assert_close(losses.ssim_loss(gx, gy, 11, 1.5, stats), losses.ssim_loss(gx, gy, 11, 1.5))


def test_mutual_information_loss_orders_dependence():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 32, 32, generator=gen)
    same = float(losses.mutual_information_loss(x, x, 16))
    monotone = float(losses.mutual_information_loss(x ** 2, x, 16))
    independent = float(losses.mutual_information_loss(torch.rand(3, 32, 32, generator=gen), x, 16))
    # soft (Parzen) histograms spread each value over two bins, so even identical images keep a floor
    assert same < 0.35 and monotone < 0.4 and independent > 0.95
    y = x.clone().requires_grad_(True)
    losses.mutual_information_loss(y, x.flip(2), 16, torch.arange(0, 1024, 3)).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_descriptor_prior_and_coordinate_tv():
    alpha = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    distances = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    normalised = transport.normalised_distances(distances, eps=0.0)
    assert float(losses.descriptor_prior(alpha, normalised)) == pytest.approx((1 / 3 + 1.0) / 2)
    grid = transport.pixel_grid(5, 9)
    # identity map, normalised: y/(H-1) steps 1/4 along y, x/(W-1) steps 1/8 along x; mean over both components
    assert float(losses.coordinate_tv(grid)) == pytest.approx((1 / 4) / 2 + (1 / 8) / 2)
    assert float(losses.coordinate_tv(torch.zeros(2, 5, 9))) == 0.0


# ----------------------------------------------------------------------------- demo guide, notebook, benchmark


def test_demo_guide_is_seeded_and_transforms_the_image():
    rgb = np.random.default_rng(0).uniform(size=(3, 16, 20)).astype(np.float32)
    np.testing.assert_array_equal(demo_guide(rgb, seed=4), demo_guide(rgb, seed=4))
    assert not np.array_equal(demo_guide(rgb, seed=4), demo_guide(rgb, seed=5))
    plain = demo_guide(rgb, seed=0, flip=True, max_shift=0, jitter=0.0, blur_sigma=0.0)
    np.testing.assert_allclose(plain, rgb[:, :, ::-1], rtol=1e-6)
    with pytest.raises(ValueError, match="3, H, W"):
        demo_guide(rgb[:2])


def test_stage_warps_observed_proxies_from_a_run_directory(tmp_path, cave_crop):
    """01_proxy.h5 + 02_guides.h5 in, 03_warp.h5 out (docs/ARTIFACTS.md); a current artifact is read back."""
    from hiralign.store import RunStore
    from hiralign.warp import stage

    hsi, rgb = cave_crop
    proxies = np.stack([hsi[:, :20, :20], hsi[:, 20:40, 20:40], hsi[:, 40:60, :20]])
    proxy_rgb = np.stack([to_rgb(p, VISIBLE_31) for p in proxies])
    guides = np.stack([[demo_guide(r, seed=g) for g in range(2)] for r in proxy_rgb])
    store = RunStore(tmp_path)
    store.write("01_proxy", {"proxy": proxies, "proxy_rgb": proxy_rgb, "wavelengths": VISIBLE_31,
                             "names": ["a", "b", "c"], "observed": np.array([True, False, True])}, {})
    store.write("02_guides", {"guides": guides, "proxy_rgb": proxy_rgb}, {}, attrs={"demo": False})
    inputs = stage.inputs_of(store.read("01_proxy"), store.read("02_guides"))
    assert inputs.names == ["a", "c"] and inputs.guides.shape == (2, 2, 3, 20, 20) and not inputs.demo
    params = tiny_params("03_warp", iters=2)
    tree = run_stage("03_warp", tmp_path, params, log=lambda _: None).data
    art = store.read("03_warp")
    assert set(art.header.upstream) == {"01_proxy", "02_rgb_guides"}
    assert art["hsi"].shape == (2, 2, 31, 20, 20) and art["rgb"].shape == (2, 2, 3, 20, 20)
    assert art["names"] == ["a", "c"] and sorted(art["operators"]) == ["0_0", "0_1", "1_0", "1_1"]
    w = stage.operator_from_arrays(art["operators"]["1_1"])
    np.testing.assert_allclose((w @ proxies[2].reshape(31, -1).T).T.reshape(31, 20, 20), art["hsi"][1, 1], atol=1e-5)
    np.testing.assert_array_equal(tree["hsi"], art["hsi"])
    messages = []
    again = run_stage("03_warp", tmp_path, params, log=messages.append)  # current: read, not recomputed
    np.testing.assert_array_equal(again["displacement"], art["displacement"])
    assert messages == ["03_warp.h5 is current (same parameters and inputs): loaded it"]
    assert inputs.limit(3).guides.shape[:2] == (1, 2) and inputs.limit(1).guides.shape[:2] == (1, 1)


@pytest.mark.slow
def test_notebook_runs_headless_and_writes_its_artifact(tmp_path):
    papermill = pytest.importorskip("papermill")
    from hiralign.store import RunStore

    out = tmp_path / "03_warp.ipynb"
    run_dir = tmp_path / "run"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "03_warp.ipynb"), str(out), cwd=str(REPO / "notebooks"), progress_bar=False,
        parameters={"run_dir": str(run_dir), "demo": True, "image_size": 24, "iters": 5, "k": 8, "n_candidates": 8},
    )
    art = RunStore(run_dir).read("03_warp")
    assert art["hsi"].shape == (1, 1, 31, 24, 24) and art["displacement"].shape == (1, 1, 2, 24, 24)
    assert set(art["operators"]["0_0"]) == {"data", "indices", "indptr", "shape"}
    assert len(art["loss_history"]["0_0"]["total"]) == 6
    assert art.params["k"] == 8 and art.attrs["demo"]


@pytest.mark.slow
def test_benchmark_script_writes_its_table(tmp_path, cave_path):  # the benchmark scene is the real CAVE one
    cmd = [sys.executable, str(REPO / "benchmarks" / "warp.py"), "--sizes", "32", "--indexes", "ivf",
           "--iters", "2", "--threads", "1", "--recall-queries", "200", "--out", str(tmp_path), "--scene", str(cave_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    report = json.loads((tmp_path / "warp_bench.json").read_text())["benchmark"]
    assert [r["index"] for r in report["rows"]] == ["ivf"]
    assert report["rows"][0]["recall"] >= 0.9 and report["machine"]["cpu_cores"] >= 1
    assert "| size |" in (tmp_path / "warp_bench.md").read_text()


def test_interpolation_backward_matches_autograd_through_padding():
    """The hand-written Eq. 17 backward passes gradcheck and the forward equals an independent slice-and-pad version."""
    gen = torch.Generator().manual_seed(3)
    pre = torch.rand(1, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    beta = torch.softmax(torch.randn(9, 12, generator=gen, dtype=torch.float64), dim=0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, b: transport.interpolate(p, b, 3), (pre, beta))
    big_pre, big_beta = torch.rand(2, 5, 6, generator=gen), torch.softmax(torch.randn(25, 30, generator=gen), dim=0)
    padded = F.pad(big_pre[None], (2, 2, 2, 2), mode="replicate")[0]
    shifts = [padded[:, 2 + dy : 7 + dy, 2 + dx : 8 + dx] for dy, dx in transport.stencil_offsets(5)]
    reference = sum(big_beta[o].reshape(1, 5, 6) * shifts[o] for o in range(25))
    torch.testing.assert_close(transport.interpolate(big_pre, big_beta, 5), reference)


def test_aggregation_backward_matches_autograd():
    gen = torch.Generator().manual_seed(4)
    values = torch.rand(6, 3, 4, generator=gen, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(6, 4, generator=gen, dtype=torch.float64), dim=1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: transport.aggregate(values, a, 2, 3), (alpha,))
    assert torch.autograd.gradcheck(lambda a: transport.aggregate(values, a, 2, 3, transport.channel_major(values)), (alpha,))
    torch.testing.assert_close(transport.aggregate(values, alpha, 2, 3), (values * alpha[:, None, :]).sum(2).T.reshape(3, 2, 3))


def test_notebook_03_figures_are_readable_and_stable():
    """Displacement components with a colour bar and a sparse quiver; one figure-level spectra legend;
    each loss term keeps its colour whether the history is fresh or reloaded (sorted keys)."""
    import matplotlib.pyplot as plt
    import scipy.sparse as sp

    from hiralign.warp import plots

    displacement = np.stack([np.zeros((32, 32)), np.tile(np.linspace(-30, 30, 32), (32, 1))]).astype(np.float32)
    fig = plots.plot_displacement(displacement)
    assert len(fig.axes) == 4  # x, y, quiver, colour bar
    quiver = fig.axes[2].collections[0]
    assert len(quiver.U) == 64 and "longest arrow = 28.1 px" in fig.axes[2].get_title()  # sampled at px 2, 6, ..., 30

    fresh = {"total": [3.0, 2.0], "rgb": [1.0, 0.5], "ssim": [1.0, 0.8], "tv": [1.0, 0.9]}
    reloaded = {k: fresh[k] for k in sorted(fresh)}
    colours = [[line.get_color() for line in plots.plot_loss_history(h).axes[1].lines] for h in (fresh, reloaded)]
    labels = [[line.get_label() for line in plots.plot_loss_history(h).axes[1].lines] for h in (fresh, reloaded)]
    assert colours[0] == colours[1] and labels[0] == labels[1] == ["rgb", "ssim", "tv"]

    hsi = np.random.default_rng(0).random((5, 4, 4)).astype(np.float32)
    fig = plots.plot_spectra(hsi, sp.identity(16, format="csr"), hsi, np.arange(5.0), n_pixels=3)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    plt.close("all")
