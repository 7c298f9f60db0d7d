"""hiralign.metrics: PSNR/SSIM against scikit-image, SAM/ERGAS/sPr/sRec on hand-computed answers."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.io import loadmat
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hiralign import metrics
from hiralign.data import Cube
from hiralign.spectral import VISIBLE_31


def smooth_cube(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A spatially smooth, spectrally correlated cube in [0, 1]."""
    base = gaussian_filter(rng.random(shape), sigma=(1.0, 3.0, 3.0))
    base = (base - base.min()) / (base.max() - base.min())
    return base.astype(np.float32)


def noisy(rng: np.random.Generator, cube: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(cube + sigma * rng.standard_normal(cube.shape), 0, 1).astype(np.float32)


def skimage_psnr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([peak_signal_noise_ratio(y[b], x[b], data_range=1) for b in range(len(x))]))


def skimage_ssim(x: np.ndarray, y: np.ndarray) -> float:
    kw = dict(data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return float(np.mean([structural_similarity(x[b], y[b], **kw) for b in range(len(x))]))


def cube_pairs(rng: np.random.Generator):
    """(estimate, reference) pairs: random, and noisy versions of smooth square/non-square cubes."""
    yield rng.random((8, 32, 32)).astype(np.float32), rng.random((8, 32, 32)).astype(np.float32)
    for shape, sigma in [((8, 32, 32), 0.05), ((6, 24, 40), 0.1), ((5, 40, 17), 0.02)]:
        ref = smooth_cube(rng, shape)
        yield noisy(rng, ref, sigma), ref


# ----------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_and_ssim_match_skimage(rng):
    for x, y in cube_pairs(rng):
        assert metrics.psnr(x, y) == pytest.approx(skimage_psnr(x, y), abs=1e-4)
        assert metrics.ssim(x, y) == pytest.approx(skimage_ssim(x, y), abs=1e-4)
        # float64 inputs: skimage then also works in float64, so agreement is much tighter
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        assert metrics.ssim(x64, y64) == pytest.approx(skimage_ssim(x64, y64), abs=1e-10)


def test_psnr_and_ssim_match_skimage_on_real_cave_crop(cave_path):
    ref = (loadmat(cave_path)["Omsi"][64:112, 80:120, ::3].astype(np.float64) / 65535).transpose(2, 0, 1)
    est = noisy(np.random.default_rng(1), ref, 0.03)
    assert metrics.psnr(est, ref) == pytest.approx(skimage_psnr(est, ref), abs=1e-4)
    assert metrics.ssim(est, ref) == pytest.approx(skimage_ssim(est, ref), abs=1e-4)


def test_psnr_known_answer_and_data_range():
    y = np.full((3, 16, 16), 0.5)
    assert metrics.psnr(y + 0.1, y) == pytest.approx(20.0)  # MSE 0.01, peak 1
    assert metrics.psnr(2 * (y + 0.1), 2 * y, data_range=2.0) == pytest.approx(20.0)


def test_psnr_exact_bands_are_capped_at_max_db(rng):
    y = rng.random((4, 16, 16))
    assert metrics.psnr(y, y) == 100.0
    assert metrics.psnr(y, y, max_db=None) == np.inf
    x = y.copy()
    x[1:] += 0.1  # band 0 exact (-> 100 dB), bands 1..3 at 20 dB
    np.testing.assert_allclose(metrics.psnr_per_band(x, y), [100, 20, 20, 20])
    assert metrics.psnr(x, y) == pytest.approx(40.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning for exact bands
        metrics.psnr(y, y, max_db=None)


def test_ssim_identity_and_symmetry(rng):
    x, y = next(cube_pairs(rng))
    assert metrics.ssim(y, y) == pytest.approx(1.0)
    assert metrics.ssim(x, y) == pytest.approx(metrics.ssim(y, x))
    with pytest.raises(ValueError, match="11x11"):
        metrics.ssim(x[:, :10], y[:, :10])


# ----------------------------------------------------------------------------- SAM


def as_cube(spectra: np.ndarray) -> np.ndarray:
    """(N, B) spectra -> (B, 1, N) cube."""
    return np.asarray(spectra, dtype=np.float64).T[:, None, :]


def test_sam_parallel_scaled_orthogonal(rng):
    y = rng.random((6, 8, 8)) + 0.1
    assert metrics.sam(y, y) == pytest.approx(0.0, abs=1e-6)
    assert metrics.sam(3.7 * y, y) == pytest.approx(0.0, abs=1e-6)
    e = np.eye(4)
    assert metrics.sam(as_cube(e[[0, 1]]), as_cube(e[[2, 3]])) == pytest.approx(90.0)
    assert metrics.sam(as_cube(e[[0]]), as_cube(-e[[0]])) == pytest.approx(180.0)


def test_sam_recovers_a_known_rotation_angle(rng):
    theta = 23.0
    phi = rng.uniform(0, 2 * np.pi, 50)
    mags = rng.uniform(0.1, 5, (2, 50))
    x = np.zeros((50, 5))  # the rotation acts in the plane of bands 1 and 3 of a 5-band spectrum
    y = np.zeros((50, 5))
    x[:, 1], x[:, 3] = mags[0] * np.cos(phi), mags[0] * np.sin(phi)
    y[:, 1], y[:, 3] = mags[1] * np.cos(phi + np.radians(theta)), mags[1] * np.sin(phi + np.radians(theta))
    np.testing.assert_allclose(metrics.sam_map(as_cube(x), as_cube(y)), theta, atol=1e-9)
    assert metrics.sam(as_cube(x), as_cube(y)) == pytest.approx(theta)


def test_sam_zero_spectra_convention():
    x = as_cube([[1, 2, 3], [0, 0, 0], [0, 0, 0], [1, 2, 3]])
    y = as_cube([[2, 4, 6], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(metrics.sam_map(x, y).ravel(), [0, 0, 90, 90], atol=1e-9)
    assert metrics.sam(x, y) == pytest.approx(45.0)
    assert np.isfinite(metrics.sam(np.zeros((3, 4, 4)), np.zeros((3, 4, 4))))


# ----------------------------------------------------------------------------- ERGAS


def test_ergas_known_answer():
    y = np.stack([np.full((8, 8), 0.5), np.full((8, 8), 0.25)])
    x = y + 0.05  # RMSE_b = 0.05; relative errors 0.1 and 0.2 -> sqrt((0.01 + 0.04) / 2)
    expected = 100 * np.sqrt(0.025)
    assert metrics.ergas(x, y) == pytest.approx(expected)
    assert metrics.ergas(x, y, scale=4) == pytest.approx(expected / 4)
    assert metrics.ergas(y, y) == 0.0


def test_ergas_zero_mean_reference_band_is_finite():
    y = np.stack([np.full((8, 8), 0.5), np.zeros((8, 8))])
    x = y.copy()
    assert metrics.ergas(x, y) == 0.0  # the zero band is reproduced exactly
    x[1] += 1e-3
    value = metrics.ergas(x, y, eps=1e-8)
    assert value == pytest.approx(100 * np.sqrt((1e-6 / 1e-8) / 2))


# ----------------------------------------------------------------------------- validation / inputs


def test_shape_mismatch_and_nan_are_rejected(rng):
    y = rng.random((4, 16, 16))
    for fn in (metrics.psnr, metrics.ssim, metrics.sam, metrics.ergas, metrics.evaluate):
        with pytest.raises(ValueError, match=r"\(4, 16, 16\).*\(4, 16, 15\)"):
            fn(y, y[:, :, :15])
        bad = y.copy()
        bad[2, 3, 4] = np.nan
        with pytest.raises(ValueError, match="x contains 1 NaN"):
            fn(bad, y)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        metrics.psnr(y[0], y[0])


def test_cube_and_torch_inputs_and_evaluate(rng):
    torch = pytest.importorskip("torch")
    x, y = next(cube_pairs(rng))
    want = metrics.evaluate(x, y)
    assert set(want) == {"psnr", "ssim", "sam"}
    assert all(isinstance(v, float) for v in want.values())
    cube_x = Cube(np.repeat(x, 4, axis=0)[:31], VISIBLE_31)  # 31 bands for the wavelength grid
    cube_y = Cube(np.repeat(y, 4, axis=0)[:31], VISIBLE_31)
    assert metrics.sam(cube_x, cube_y) == pytest.approx(metrics.sam(cube_x.data, cube_y.data))
    got = metrics.evaluate(torch.from_numpy(x).requires_grad_(), torch.from_numpy(y))
    assert got == pytest.approx(want)


# ----------------------------------------------------------------------------- sPr / sRec


def test_spr_srec_identical_sets_score_one(rng):
    spectra = rng.random((300, 6))
    assert metrics.spectral_precision_recall(spectra, spectra, k=5) == (1.0, 1.0)


def test_spr_srec_far_generated_set_scores_zero(rng):
    real = rng.random((200, 6))
    generated = rng.random((150, 6)) + 100.0
    assert metrics.spectral_precision_recall(generated, real, k=5) == (0.0, 0.0)


def test_spr_srec_subset_cluster_is_precise_but_has_low_recall(rng):
    cluster_a = 0.05 * rng.standard_normal((100, 4))
    cluster_b = 10.0 + 0.05 * rng.standard_normal((100, 4))
    real = np.concatenate([cluster_a, cluster_b])
    generated = cluster_a[:30]
    precision, recall = metrics.spectral_precision_recall(generated, real, k=3)
    assert precision == 1.0  # every generated spectrum is a real one
    assert 30 / 200 <= recall <= 0.5  # cluster B is never reached


def test_spr_srec_hand_counted_1d_case():
    # real {0,1,2,10,11}, k=1: every radius is 1 -> manifold [-1,3] U [9,12]
    real = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    # inside: -1 (on the sphere), 2.5, 12 (on the sphere); outside: 5, 8, 13 -> sPr = 3/6
    # generated radii (k=1): 3.5, 2.5, 2.5, 3, 1, 1 -> union [-4.5, 14] covers every real -> sRec = 1
    generated = np.array([[-1.0], [2.5], [5.0], [8.0], [12.0], [13.0]])
    np.testing.assert_allclose(metrics.kth_neighbour_radii(generated, 1), [3.5, 2.5, 2.5, 3, 1, 1])
    assert metrics.spectral_precision_recall(generated, real, k=1) == (0.5, 1.0)
    assert metrics.spectral_precision_recall(real, generated, k=1) == (1.0, 0.5)


def test_spr_srec_hand_counted_2d_case():
    real = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)  # k=1: all radii 1
    # (0.5,0.5) in; (2,0) and (0,-1) on a sphere -> in; (2,2) and (-1,-1) at sqrt(2) -> out
    generated = np.array([[0.5, 0.5], [2, 0], [0, -1], [2, 2], [-1, -1]], dtype=float)
    precision, recall = metrics.spectral_precision_recall(generated, real, k=1)
    assert precision == pytest.approx(3 / 5)
    assert recall == 1.0  # every corner is within 0.71 of (0.5,0.5), whose radius is sqrt(2.5)


def test_spr_srec_kdtree_fallback_agrees_with_faiss(rng, monkeypatch):
    real = rng.random((120, 5))
    generated = 0.4 + 0.8 * rng.random((90, 5))  # overlaps the real set only partly
    with_faiss = metrics.spectral_precision_recall(generated, real, k=4)
    radii_faiss = metrics.kth_neighbour_radii(real, 4)
    monkeypatch.setattr(metrics, "_load_faiss", lambda: None)
    assert metrics.spectral_precision_recall(generated, real, k=4) == with_faiss
    np.testing.assert_allclose(metrics.kth_neighbour_radii(real, 4), radii_faiss, rtol=1e-12)
    assert 0 < with_faiss.precision < 1 and 0 < with_faiss.recall < 1


def test_spr_srec_inputs_subsampling_and_groups(rng):
    real_cube = rng.random((5, 12, 10))
    gen_cube = rng.random((5, 12, 10)) * 1.2
    as_spectra = metrics.spectral_precision_recall(gen_cube.reshape(5, -1).T, real_cube.reshape(5, -1).T, k=3)
    assert metrics.spectral_precision_recall(gen_cube, real_cube, k=3) == as_spectra
    assert metrics.spectral_precision_recall([gen_cube[:, :6], gen_cube[:, 6:]], real_cube, k=3) == as_spectra
    assert metrics.pixel_spectra(gen_cube[None]).shape == (120, 5)  # (N, B, H, W) batch
    sub = metrics.spectral_precision_recall(gen_cube, real_cube, k=3, max_samples=50, n_groups=2, seed=7)
    assert sub == metrics.spectral_precision_recall(gen_cube, real_cube, k=3, max_samples=50, n_groups=2, seed=7)
    with pytest.raises(ValueError, match="bands"):
        metrics.spectral_precision_recall(gen_cube[:4], real_cube, k=3)
    with pytest.raises(ValueError, match="k must be"):
        metrics.spectral_precision_recall(gen_cube, real_cube, k=3, max_samples=8, n_groups=4)
    bad = real_cube.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="real contains 1 NaN"):
        metrics.spectral_precision_recall(gen_cube, bad, k=3)


def test_spr_srec_match_a_dense_brute_force_reference(rng):
    from scipy.spatial.distance import cdist

    def reference(gen, real, k):
        def inside(q, c):
            radii = np.sort(cdist(c, c), axis=1)[:, k]  # column 0 is the point itself
            return (cdist(q, c) <= radii[None, :]).any(axis=1).mean()

        return inside(gen, real), inside(real, gen)

    real = rng.random((250, 4))
    generated = 0.3 + 0.8 * rng.random((180, 4))  # partly outside the real unit box
    got = metrics.spectral_precision_recall(generated, real, k=10)
    assert got == pytest.approx(reference(generated, real, 10), abs=0)
    assert 0 < got.precision < 1 and 0 < got.recall < 1


# ----------------------------------------------------------------------------- stage-2 distributions


def test_sliced_wasserstein_matches_scipy_on_each_projection():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4000, 3)), rng.normal(0.3, 1.5, size=(3000, 3))
    # one projection: the 1-D W1 of the projected sets, which scipy computes exactly
    direction = np.random.default_rng(7).normal(size=(1, 3))
    direction /= np.linalg.norm(direction)
    ours = metrics.sliced_wasserstein(x, y, n_projections=1, n_quantiles=4000, seed=7)
    assert ours == pytest.approx(wasserstein_distance(x @ direction[0], y @ direction[0]), rel=0.01)
    assert metrics.sliced_wasserstein(x, x) == 0.0


def test_sliced_wasserstein_of_a_shift_is_half_its_length_in_3d():
    x = np.random.default_rng(1).uniform(size=(5000, 3))
    v = np.array([0.2, -0.1, 0.05])
    assert metrics.sliced_wasserstein(x, x + v, n_projections=4096) == pytest.approx(np.linalg.norm(v) / 2, rel=0.02)


def test_sliced_wasserstein_rejects_bad_sets():
    with pytest.raises(ValueError, match="point sets"):
        metrics.sliced_wasserstein(np.zeros((3, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.sliced_wasserstein(np.full((3, 3), np.nan), np.zeros((3, 3)))


def test_neighbour_sam_known_answers():
    flat = np.ones((4, 5, 6))
    angles = metrics.neighbour_sam(flat)
    assert angles.shape == (5 * 5 + 4 * 6,) and np.allclose(angles, 0.0)
    # two orthogonal materials side by side: 90 deg across the vertical boundary only
    two = np.zeros((2, 3, 4))
    two[0, :, :2], two[1, :, 2:] = 1.0, 1.0
    angles = metrics.neighbour_sam(two)
    assert np.isclose(angles, 90.0).sum() == 3 and np.isclose(angles, 0.0).sum() == len(angles) - 3
    with pytest.raises(ValueError, match="cube"):
        metrics.neighbour_sam(np.ones((3, 3)))
