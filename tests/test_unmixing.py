"""hiralign.unmixing: exact recovery on noise-free synthetic mixtures, FCLS constraints, NMF descent,
the SVD basis against scipy, endmember matching, input errors, and the real Jasper Ridge ground truth."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.linalg
from scipy.ndimage import gaussian_filter1d

from hiralign import unmixing
from hiralign.unmixing import (
    Unmixing,
    abundance_rmse,
    abundance_rmse_per_endmember,
    fcls,
    load_jasper_ridge,
    match_endmembers,
    nfindr,
    nmf_unmixing,
    spectral_angle_distance,
    svd_basis,
    svd_coefficients,
    unmix,
    vca,
)

JASPER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jasper_ridge_r198.mat"


def _openblas_thread_controls() -> list[tuple]:
    """``(get_num_threads, set_num_threads)`` of every OpenBLAS loaded here (numpy's and scipy's wheels)."""
    controls = []
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "openblas" in line and ".so" in line}
    except OSError:
        return controls
    for path in sorted(libs):
        lib = ctypes.CDLL(path)
        for suffix in ("64_", ""):
            getter, setter = f"scipy_openblas_get_num_threads{suffix}", f"scipy_openblas_set_num_threads{suffix}"
            if hasattr(lib, getter) and hasattr(lib, setter):
                controls.append((getattr(lib, getter), getattr(lib, setter)))
                break
    return controls


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """One OpenBLAS thread for this module (restored after): on the shared 2-core machine a 198 x 10000
    SVD takes ~0.1 s on one thread and 10+ s in OpenBLAS's spinning thread pool (no-op where not found)."""
    controls = _openblas_thread_controls()
    before = [get() for get, _ in controls]
    for _, set_threads in controls:
        set_threads(1)
    yield
    for (_, set_threads), n in zip(controls, before):
        set_threads(n)


def smooth_spectra(rng: np.random.Generator, n_bands: int, k: int) -> np.ndarray:
    """k positive, smooth, clearly distinct spectra (B, K) in about [0.05, 1]."""
    raw = gaussian_filter1d(rng.random((n_bands, k)), sigma=4, axis=0)
    raw = (raw - raw.min(axis=0)) / np.ptp(raw, axis=0)
    return 0.05 + 0.95 * raw


def mixture(rng: np.random.Generator, n_pixels: int = 400, n_bands: int = 40, k: int = 4):
    """Noise-free LMM pixels (P, B), endmembers (B, K), Dirichlet abundances (P, K) with K pure pixels."""
    m = smooth_spectra(rng, n_bands, k)
    a = rng.dirichlet(np.full(k, 0.7), size=n_pixels)
    a[:k] = np.eye(k)
    a = a[rng.permutation(n_pixels)]
    return a @ m.T, m, a


# ----------------------------------------------------------------------------- endmembers + FCLS


@pytest.mark.parametrize("extract", [vca, nfindr])
def test_extraction_recovers_the_endmembers_of_a_noise_free_mixture(rng, extract):
    pixels, m, a = mixture(rng)
    for seed in range(3):
        estimated = extract(pixels, 4, seed=seed)
        assert estimated.shape == (40, 4)
        perm = match_endmembers(estimated, m)
        assert spectral_angle_distance(estimated, m, perm).max() < 1e-6
        assert np.abs(fcls(pixels, estimated)[:, perm] - a).max() < 1e-6


def test_extraction_is_reproducible_for_a_seed(rng):
    pixels = mixture(rng)[0] + 0.01 * rng.standard_normal((400, 40))
    assert np.array_equal(vca(pixels, 4, seed=3), vca(pixels, 4, seed=3))
    assert np.array_equal(nfindr(pixels, 4, seed=3), nfindr(pixels, 4, seed=3))


def test_fcls_is_non_negative_and_sums_to_one_on_random_data(rng):
    pixels, endmembers = rng.random((300, 25)) * 3 - 1, rng.random((25, 5))  # nothing like a mixture
    a = fcls(pixels, endmembers)
    assert a.shape == (300, 5)
    assert a.min() >= 0
    assert np.abs(a.sum(axis=1) - 1).max() < 1e-6
    assert (a == 0).any()  # the constraints are active: plain least squares would go negative


def test_fcls_matches_a_brute_force_simplex_search(rng):
    """On a 3-endmember problem FCLS equals the best point of a fine grid on the simplex (or beats it)."""
    endmembers = rng.random((10, 3))
    pixel = rng.random(10)
    grid = np.array([(i, j, 200 - i - j) for i in range(201) for j in range(201 - i)]) / 200
    best = np.min(np.sum((grid @ endmembers.T - pixel) ** 2, axis=1))
    a = fcls(pixel[None], endmembers)[0]
    assert np.sum((endmembers @ a - pixel) ** 2) <= best + 1e-12


def test_fcls_is_fast_enough_for_a_real_scene(rng):
    import time

    pixels, m, _ = mixture(rng, n_pixels=10000, n_bands=50)
    start = time.perf_counter()
    fcls(pixels, m)
    assert time.perf_counter() - start < 10  # about 0.1 s on one idle core


# ----------------------------------------------------------------------------- NMF


def test_nmf_keeps_the_constraints_and_lowers_the_error_of_its_vca_start(rng):
    pixels, m, _ = mixture(rng, n_pixels=300, n_bands=30)
    pixels = np.clip(pixels + 0.02 * rng.standard_normal(pixels.shape), 0, None)
    endmembers, a = nmf_unmixing(pixels, 4, seed=0, max_iter=150)
    assert endmembers.shape == (30, 4) and a.shape == (300, 4)
    assert endmembers.min() >= 0 and a.min() >= 0
    assert np.abs(a.sum(axis=1) - 1).max() < 1e-6
    start = vca(pixels, 4, seed=0)
    error_start = np.linalg.norm(pixels - fcls(pixels, start) @ start.T)
    error_nmf = np.linalg.norm(pixels - a @ endmembers.T)
    assert error_nmf < 0.9 * error_start
    assert spectral_angle_distance(endmembers, m).mean() < 0.1


def test_nmf_objective_never_increases(rng):
    pixels = np.clip(mixture(rng, n_pixels=200, n_bands=20)[0] + 0.02 * rng.standard_normal((200, 20)), 0, None)
    delta = 3.0
    objectives = []
    for n in (0, 10, 30, 60):
        m, _ = nmf_unmixing(pixels, 3, max_iter=n, tol=0.0, delta=delta)
        objectives.append(np.linalg.norm(pixels - fcls(pixels, m) @ m.T))
    assert all(b <= a + 1e-12 for a, b in zip(objectives, objectives[1:]))


# ----------------------------------------------------------------------------- SVD basis


def test_svd_basis_is_orthonormal_and_matches_scipy_up_to_sign(rng):
    pixels = rng.random((120, 15))
    basis = svd_basis(pixels, 5)
    assert basis.shape == (15, 5)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-12)
    reference = scipy.linalg.svd(pixels.T, full_matrices=False)[0][:, :5]
    np.testing.assert_allclose(np.abs(np.sum(basis * reference, axis=0)), 1, atol=1e-10)
    np.testing.assert_allclose(np.abs(basis), np.abs(reference), atol=1e-10)
    assert np.all(basis[np.argmax(np.abs(basis), axis=0), range(5)] > 0)  # the documented sign rule


def test_svd_basis_spans_a_rank_k_data_set_exactly(rng):
    pixels = rng.random((200, 3)) @ rng.random((3, 25))  # rank 3
    basis = svd_basis(pixels, 3)
    coefficients = svd_coefficients(pixels, basis)
    assert coefficients.shape == (200, 3)
    np.testing.assert_allclose(coefficients @ basis.T, pixels, atol=1e-12)
    # any basis of the same span gives the same projection (least-squares branch)
    skewed = basis @ np.array([[2.0, 1, 0], [0, 1, 0], [0, 0.5, 3]])
    np.testing.assert_allclose(svd_coefficients(pixels, skewed) @ skewed.T, pixels, atol=1e-10)


# ----------------------------------------------------------------------------- scores


def test_match_endmembers_finds_a_known_permutation(rng):
    m = smooth_spectra(rng, 30, 5)
    shuffle = np.array([3, 0, 4, 1, 2])
    estimated = m[:, shuffle] * rng.uniform(0.5, 2, 5) + 0.002 * rng.standard_normal((30, 5))  # scale: angle-blind
    perm = match_endmembers(estimated, m)
    assert np.array_equal(estimated[:, perm].argmax(axis=0), m.argmax(axis=0))
    assert np.array_equal(perm, np.argsort(shuffle))
    assert spectral_angle_distance(estimated, m).max() < 0.05


def test_spectral_angle_and_rmse_on_hand_computed_answers():
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    estimated = np.array([[0.0, np.cos(0.3)], [2.0, np.sin(0.3)]])  # columns swapped; the second 0.3 rad off
    np.testing.assert_allclose(spectral_angle_distance(estimated, reference), [0.3, 0.0], atol=1e-15)
    est_a = np.array([[0.0, 1.0], [0.5, 0.5]])
    ref_a = np.array([[1.0, 0.0], [0.25, 0.75]])
    perm = match_endmembers(estimated, reference)
    assert abundance_rmse(est_a, ref_a, perm) == pytest.approx(np.sqrt((0 + 0 + 0.0625 + 0.0625) / 4))
    np.testing.assert_allclose(abundance_rmse_per_endmember(est_a, ref_a, perm), [np.sqrt(0.0625 / 2)] * 2)
    assert abundance_rmse(est_a, ref_a) == pytest.approx(np.sqrt((1 + 1 + 0.0625 + 0.0625) / 4))


# ----------------------------------------------------------------------------- cube API


@pytest.mark.parametrize("method", ["vca", "nfindr", "nmf"])
def test_unmix_returns_maps_that_reconstruct_the_cube(rng, method):
    pixels, m, _ = mixture(rng, n_pixels=12 * 10, n_bands=20, k=3)
    cube = pixels.T.reshape(20, 12, 10)
    result = unmix(cube, 3, method=method)
    assert isinstance(result, Unmixing)
    assert result.endmembers.shape == (20, 3) and result.abundances.shape == (3, 12, 10)
    assert result.abundances.min() >= 0
    np.testing.assert_allclose(result.abundances.sum(axis=0), 1, atol=1e-6)
    tolerance = 1e-8 if method != "nmf" else 1e-2
    assert np.abs(result.reconstruct() - cube).max() < tolerance


@pytest.mark.parametrize("call, message", [
    (lambda x: vca(x.reshape(4, 10, 20), 3), "2-D (P, B)"),
    (lambda x: vca(np.where(x > 0.9, np.nan, x), 3), "NaN/infinite"),
    (lambda x: vca(x, 0), "at least 1"),
    (lambda x: vca(x, 21), "exceeds the number of bands B=20"),
    (lambda x: vca(x[:2], 3), "exceeds the number of pixels P=2"),
    (lambda x: vca(x, 2.5), "must be an integer"),
    (lambda x: nfindr(x, 3, max_iter=0), "max_iter"),
    (lambda x: fcls(x, np.ones((19, 3))), "19 bands"),
    (lambda x: nmf_unmixing(x - 0.5, 3), "non-negative"),
    (lambda x: nmf_unmixing(x, 3, init="kmeans"), "unknown init 'kmeans'"),
    (lambda x: unmix(x, 3), "3-D (B, H, W)"),
    (lambda x: unmix(x.T.reshape(20, 5, 8), 3, method="ica"), "unknown unmixing method 'ica'"),
    (lambda x: unmix(np.full((20, 5, 8), np.inf), 3), "cube contains 800 NaN/infinite"),
    (lambda x: svd_basis(x, 0), "k must be"),
    (lambda x: match_endmembers(np.ones((20, 2)), np.ones((20, 3))), "fewer than"),
    (lambda x: spectral_angle_distance(np.zeros((20, 2)), np.ones((20, 2))), "all-zero"),
    (lambda x: abundance_rmse(np.ones((5, 2)), np.ones((4, 2))), "5 pixels"),
    (lambda x: abundance_rmse(np.ones((5, 2)), np.ones((5, 2)), [0, 0]), "distinct column indices"),
    (lambda x: Unmixing(np.ones((20, 3)), np.ones((2, 4, 4))), "3 spectra but abundances 2"),
])
def test_bad_input_raises_a_value_error_naming_the_problem(rng, call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(rng.random((40, 20)))


# ----------------------------------------------------------------------------- Jasper Ridge loader


def write_jasper_like(path: Path, cube: np.ndarray, m: np.ndarray, a: np.ndarray, max_value: float) -> None:
    """A file in the Jasper layout: bands x pixels in MATLAB column order (row index fastest)."""
    n_bands, n_rows, n_cols = cube.shape
    y = np.round(cube * max_value).reshape(n_bands, -1, order="F").astype(np.uint16)
    scipy.io.savemat(path, {"Y": y, "M": m, "A": a.reshape(a.shape[0], -1, order="F"), "maxValue": max_value,
                            "nRow": n_rows, "nCol": n_cols})


def test_loader_undoes_the_column_order_and_the_scale(tmp_path, rng):
    cube = np.round(rng.random((6, 5, 7)) * 1000) / 1000
    a = rng.dirichlet(np.ones(2), size=35).T.reshape(2, 5, 7)
    write_jasper_like(tmp_path / "j.mat", cube, rng.random((6, 2)), a, 1000.0)
    loaded, m, maps = load_jasper_ridge(tmp_path / "j.mat")
    np.testing.assert_allclose(loaded, cube, atol=1e-12)
    np.testing.assert_allclose(maps, a)
    assert loaded.dtype == np.float64 and m.shape == (6, 2)


def test_loader_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_jasper_ridge(tmp_path / "absent.mat")
    (tmp_path / "corrupt.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 3)
    with pytest.raises(ValueError, match="corrupt.mat: not a readable MATLAB"):
        load_jasper_ridge(tmp_path / "corrupt.mat")
    scipy.io.savemat(tmp_path / "no_gt.mat", {"Y": np.ones((3, 4), np.uint16), "maxValue": 1.0})
    with pytest.raises(ValueError, match="missing variable.*M, A"):
        load_jasper_ridge(tmp_path / "no_gt.mat")


@pytest.fixture(scope="module")
def jasper():
    if not JASPER.exists():
        pytest.skip(f"Jasper Ridge scene not found at {JASPER}")
    return load_jasper_ridge(JASPER)


def test_jasper_ground_truth_explains_the_loaded_cube(jasper):
    cube, m, a = jasper
    assert cube.shape == (198, 100, 100) and m.shape == (198, 4) and a.shape == (4, 100, 100)
    assert 0 <= cube.min() and 1.0 < cube.max() < 1.1  # raw / maxValue: 5437 / 5000
    np.testing.assert_allclose(a.sum(axis=0), 1, atol=1e-9)
    relative = np.linalg.norm(cube - Unmixing(m, a).reconstruct()) / np.linalg.norm(cube)
    assert 0.17 < relative < 0.18  # measured 0.1745: the GT is a labelled estimate, not an exact LMM fit
    water = unmixing.JASPER_ENDMEMBERS.index("water")
    assert m.mean(axis=0).argmin() == water  # water is the dark endmember


def test_jasper_extraction_stays_within_its_measured_error(jasper):
    cube, m, a = jasper
    pixels, reference = cube.reshape(198, -1).T, a.reshape(4, -1).T
    # measured: VCA seed 0 mean SAD 0.397 rad, RMSE 0.290; N-FINDR 0.160 rad, RMSE 0.159
    for extract, sad_bound, rmse_bound in ((vca, 0.42, 0.30), (nfindr, 0.17, 0.165)):
        endmembers = extract(pixels, 4, seed=0)
        perm = match_endmembers(endmembers, m)
        assert spectral_angle_distance(endmembers, m, perm).mean() < sad_bound, extract.__name__
        assert abundance_rmse(fcls(pixels, endmembers), reference, perm) < rmse_bound, extract.__name__
