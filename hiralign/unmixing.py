"""Linear spectral unmixing: endmember extraction (VCA, N-FINDR), abundances (FCLS), NMF unmixing,
the SVD basis of UAFL, and the unmixing scores (SAD, abundance RMSE) against a ground truth.

The linear mixing model (LMM) writes every pixel spectrum ``y`` (B bands) as a convex combination of
K endmember spectra, the columns of ``M`` (B x K), plus noise::

    y = M a + n,      a >= 0,      1^T a = 1                                   (LMM)

Conventions (shared by every function here):

* ``pixels`` is a ``(P, B)`` array, one pixel spectrum a row; a ``(B, H, W)`` cube gives
  ``cube.reshape(B, -1).T`` (row-major pixels, ``p = h * W + w``), which :func:`unmix` does for you.
* Endmembers are ``(B, K)`` (one spectrum a column), abundances ``(P, K)`` (one pixel a row), or
  ``(K, H, W)`` maps in :class:`Unmixing`. All arithmetic is float64.
* Randomness (VCA's projection directions, N-FINDR's start, NMF's init) comes only from ``seed``
  (``numpy.random.default_rng(seed)``): the same call gives the same answer.
* Bad input raises :class:`UnmixingError` (a ``ValueError``) naming the argument and the problem.

References: Nascimento & Bioucas-Dias, "Vertex Component Analysis: A Fast Algorithm to Unmix
Hyperspectral Data", IEEE TGRS 2005 (VCA); Winter, "N-FINDR: an algorithm for fast autonomous
spectral end-member determination in hyperspectral data", SPIE 1999 (N-FINDR); Heinz & Chang, "Fully
Constrained Least Squares Linear Spectral Mixture Analysis Method for Material Quantification in
Hyperspectral Imagery", IEEE TGRS 2001 (FCLS); Lee & Seung, "Algorithms for Non-negative Matrix
Factorization", NIPS 2000 (multiplicative updates). Jasper Ridge ground truth: Zhu, "Hyperspectral
Unmixing: Ground Truth Labeling, Datasets, Benchmark Performances and Survey", arXiv:1708.05125, 2017.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment, nnls

from hiralign.errors import UserError

__all__ = [
    "JASPER_ENDMEMBERS", "Unmixing", "UnmixingError", "abundance_rmse", "abundance_rmse_per_endmember",
    "fcls", "load_jasper_ridge", "match_endmembers", "nfindr", "nmf_unmixing", "spectral_angle_distance",
    "spectral_angles", "svd_basis", "svd_coefficients", "unmix", "vca",
]

#: Ground-truth endmember order of ``jasper_ridge_r198.mat`` (its ``cood`` variable reads
#: 1-tree, 2-water, 3-dirt, 4-road; "dirt" is the "soil" of the unmixing literature).
JASPER_ENDMEMBERS = ("tree", "water", "soil", "road")

#: FCLS sum-to-one weight: the data rows are scaled by ``delta = FCLS_DELTA / ||M||_F`` against a
#: unit row of ones (Heinz & Chang's augmentation), so the sum-to-one row dominates the fit.
FCLS_DELTA = 1e-3

#: NMF sum-to-one weight relative to the data: ``delta = NMF_DELTA * rms pixel norm``, i.e. a sum
#: that is off by 1 / NMF_DELTA costs as much as a whole average pixel.
NMF_DELTA = 10.0

#: Floor added to NMF's initial abundances: multiplicative updates can never leave an exact zero.
NMF_INIT_FLOOR = 1e-3

#: Guards divisions by zero in the multiplicative updates.
_EPS = 1e-12

UNMIXING_METHODS = ("vca", "nfindr", "nmf")
NMF_INITS = ("vca", "nfindr", "random")


class UnmixingError(UserError, ValueError):
    """Bad input to an unmixing function; the message names the argument and the problem."""


# ----------------------------------------------------------------------------- input handling


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        n_bad = int(arr.size - np.isfinite(arr).sum())
        raise UnmixingError(f"{name} contains {n_bad} NaN/infinite values")


def _as_pixels(pixels: Any, name: str = "pixels") -> np.ndarray:
    """``pixels`` as a finite, non-empty float64 ``(P, B)`` array."""
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim != 2:
        hint = " (for a (B, H, W) cube use unmix(), or cube.reshape(B, -1).T)" if arr.ndim == 3 else ""
        raise UnmixingError(f"{name} must be a 2-D (P, B) array of P pixel spectra; got shape {arr.shape}{hint}")
    if arr.size == 0:
        raise UnmixingError(f"{name} must be non-empty; got shape {arr.shape}")
    _check_finite(arr, name)
    return arr


def _as_endmembers(endmembers: Any, n_bands: int | None = None, name: str = "endmembers") -> np.ndarray:
    """``endmembers`` as a finite float64 ``(B, K)`` array without zero columns."""
    arr = np.asarray(endmembers, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise UnmixingError(f"{name} must be a non-empty 2-D (B, K) array, one spectrum a column; got shape {arr.shape}")
    if n_bands is not None and arr.shape[0] != n_bands:
        raise UnmixingError(f"{name} has {arr.shape[0]} bands (rows) but the pixels have {n_bands}; "
                            f"endmembers are (B, K), pixels (P, B)")
    _check_finite(arr, name)
    return arr


def _check_n_endmembers(n_endmembers: Any, n_pixels: int, n_bands: int) -> int:
    """``n_endmembers`` as an int in ``[1, min(B, P)]``."""
    if isinstance(n_endmembers, bool) or not isinstance(n_endmembers, (int, np.integer)):
        raise UnmixingError(f"n_endmembers must be an integer; got {n_endmembers!r}")
    k = int(n_endmembers)
    if k < 1:
        raise UnmixingError(f"n_endmembers must be at least 1; got {k}")
    if k > n_bands:
        raise UnmixingError(f"n_endmembers={k} exceeds the number of bands B={n_bands}")
    if k > n_pixels:
        raise UnmixingError(f"n_endmembers={k} exceeds the number of pixels P={n_pixels}")
    return k


# ----------------------------------------------------------------------------- subspaces


def _top_left_singular_vectors(data: np.ndarray, k: int) -> np.ndarray:
    """First ``k`` left singular vectors of ``data`` (B, P), each signed so its largest entry is positive."""
    n_rows, n_cols = data.shape
    if n_cols > 2 * n_rows:  # wide (B << P): data = R^T Q^T shares its left singular vectors with R^T
        u = np.linalg.svd(np.linalg.qr(data.T, mode="r").T)[0][:, :k]
    else:
        u = np.linalg.svd(data, full_matrices=False)[0][:, :k]
    pivot = np.argmax(np.abs(u), axis=0)
    return u * np.sign(u[pivot, np.arange(k)])


def svd_basis(pixels: Any, k: int) -> np.ndarray:
    """The SVD reformulation of UAFL: the first ``k`` left singular vectors of the ``(B, P)`` data matrix.

    With ``X = pixels.T = U S V^T``, returns ``U[:, :k]`` (B x k, orthonormal columns): the best rank-k
    subspace of the data in the least-squares sense (Eckart-Young). No mean is removed. Each column's
    sign is fixed so that its entry of largest magnitude is positive (the SVD fixes it only up to sign).
    """
    x = _as_pixels(pixels)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= min(x.shape):
        raise UnmixingError(f"k must be an integer in [1, min(P, B)] = [1, {min(x.shape)}]; got {k!r}")
    return _top_left_singular_vectors(x.T, int(k))


def svd_coefficients(pixels: Any, basis: Any) -> np.ndarray:
    """Coefficients ``(P, K)`` of the orthogonal projection of every pixel onto the span of ``basis`` (B, K).

    For an orthonormal basis (as :func:`svd_basis` returns) this is ``c = U^T y`` per pixel, i.e.
    ``pixels @ basis``; for any other full-rank basis, the least-squares coefficients
    ``argmin_c ||y - U c||``. ``coefficients @ basis.T`` is the projected data.
    """
    x = _as_pixels(pixels)
    u = _as_endmembers(basis, x.shape[1], name="basis")
    gram = u.T @ u
    if np.allclose(gram, np.eye(u.shape[1]), atol=1e-10):
        return x @ u
    return np.linalg.lstsq(u, x.T, rcond=None)[0].T


# ----------------------------------------------------------------------------- VCA


def _vca_snr_db(data: np.ndarray, p: int) -> float:
    """VCA's SNR estimate (Nascimento & Bioucas-Dias, Eq. 13), in dB, from the rank-p PCA of ``data`` (B, P).

    ``SNR = 10 log10((P_p - (p / B) P_y) / (P_y - P_p))`` with ``P_y`` the mean pixel power and ``P_p``
    the mean power of the data projected onto its mean plus the first p principal directions; a
    noise-free rank-p mixture has ``P_y = P_p``: infinite SNR.
    """
    n_bands, n_pixels = data.shape
    mean = data.mean(axis=1, keepdims=True)
    centred = data - mean
    directions = _top_left_singular_vectors(centred, p)
    power_data = float(np.sum(data**2)) / n_pixels
    power_proj = float(np.sum((directions.T @ centred) ** 2)) / n_pixels + float(np.sum(mean**2))
    noise = power_data - power_proj
    if noise <= 1e-12 * power_data:
        return float("inf")
    signal = power_proj - p / n_bands * power_data
    return 10 * np.log10(signal / noise) if signal > 0 else -float("inf")


def _vca_projected(data: np.ndarray, p: int, snr_db: float) -> np.ndarray:
    """The data (B, P) in VCA's p-dimensional coordinates, where the endmembers are the simplex vertices.

    High SNR: projective projection ``y = x / (x^T u)`` of the rank-p SVD coordinates ``x`` onto the
    hyperplane ``x^T u = 1`` (u the mean of x), which also absorbs per-pixel scale (illumination).
    Low SNR: the mean-removed rank-(p-1) PCA coordinates lifted by a constant ``c = max ||x||``.
    """
    threshold_db = 15 + 10 * np.log10(p)  # Eq. 14 of the paper
    if snr_db > threshold_db:
        coords = _top_left_singular_vectors(data, p).T @ data  # (p, P)
        u = coords.mean(axis=1)
        scale = u @ coords
        scale[np.abs(scale) < _EPS] = _EPS
        return coords / scale
    centred = data - data.mean(axis=1, keepdims=True)
    coords = _top_left_singular_vectors(centred, p - 1).T @ centred if p > 1 else np.zeros((0, data.shape[1]))
    lift = np.sqrt(np.max(np.sum(coords**2, axis=0))) if p > 1 else 1.0
    return np.vstack([coords, np.full((1, data.shape[1]), lift)])


def vca_indices(pixels: Any, n_endmembers: int, seed: int = 0, *, snr_db: float | None = None) -> np.ndarray:
    """Indices (K,) of the pixels VCA picks as endmembers, in the order found.

    Iteration i (paper, Algorithm 1): draw a Gaussian direction ``w``, make it orthogonal to the
    vertices found so far, ``f = (I - E E^+) w``, and pick the pixel of largest ``|f^T y|``: the
    extreme of a linear functional over a simplex is one of its vertices, and the found ones score 0.
    ``snr_db`` overrides the SNR estimate (it selects the projection, see :func:`_vca_projected`).
    """
    x = _as_pixels(pixels)
    p = _check_n_endmembers(n_endmembers, *x.shape)
    data = x.T
    projected = _vca_projected(data, p, _vca_snr_db(data, p) if snr_db is None else snr_db)
    rng = np.random.default_rng(seed)
    vertices = np.zeros((p, p))
    vertices[-1, 0] = 1.0  # the paper's start, e_u = [0, ..., 0, 1]
    indices = np.zeros(p, dtype=np.int64)
    for i in range(p):
        w = rng.standard_normal(p)
        f = w - vertices @ (np.linalg.pinv(vertices) @ w)
        f /= np.linalg.norm(f)
        indices[i] = int(np.argmax(np.abs(f @ projected)))
        vertices[:, i] = projected[:, indices[i]]
    return indices


def vca(pixels: Any, n_endmembers: int, seed: int = 0) -> np.ndarray:
    """Vertex Component Analysis: ``n_endmembers`` endmember spectra ``(B, K)`` picked among the pixels.

    Returns the input spectra of the pixels :func:`vca_indices` selects (not their projections onto
    the signal subspace), so a noise-free mixture with pure pixels gives back the exact endmembers.
    """
    x = _as_pixels(pixels)
    return x[vca_indices(x, n_endmembers, seed)].T.copy()


# ----------------------------------------------------------------------------- N-FINDR


def _simplex_cofactors(vertices: np.ndarray, j: int) -> np.ndarray:
    """Cofactors (p,) of column j of the p x p matrix ``E`` (columns ``[1; z_k]``).

    Laplace expansion along column j: ``det(E with column j := v) = c_j . v``, so one dot product
    per pixel scores every replacement of vertex j; no inverse, so a degenerate start still works.
    """
    p = vertices.shape[0]
    minors = np.delete(vertices, j, axis=1)
    signs = (-1.0) ** (np.arange(p) + j)
    return signs * np.array([np.linalg.det(np.delete(minors, i, axis=0)) if p > 1 else 1.0 for i in range(p)])


def nfindr_indices(pixels: Any, n_endmembers: int, seed: int = 0, max_iter: int = 10) -> np.ndarray:
    """Indices (K,) of the pixels N-FINDR picks: a (locally) largest-volume simplex among the pixels.

    The data are reduced to their first K-1 principal components ``z``; the volume of the simplex with
    vertices ``z_1..z_K`` is ``|det [1 ... 1; z_1 ... z_K]| / (K-1)!``. Starting from K random pixels
    (Winter 1999), each vertex in turn is replaced by the pixel that maximises the volume; sweeps
    repeat until one changes nothing or ``max_iter`` sweeps are done.
    """
    x = _as_pixels(pixels)
    p = _check_n_endmembers(n_endmembers, *x.shape)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise UnmixingError(f"max_iter must be a positive integer; got {max_iter!r}")
    centred = x.T - x.T.mean(axis=1, keepdims=True)
    reduced = _top_left_singular_vectors(centred, p - 1).T @ centred if p > 1 else np.zeros((0, x.shape[0]))
    lifted = np.vstack([np.ones((1, x.shape[0])), reduced])  # (p, P): columns [1; z]
    indices = np.random.default_rng(seed).choice(x.shape[0], size=p, replace=False)
    for _ in range(max_iter):
        changed = False
        for j in range(p):
            vertices = lifted[:, indices]
            volumes = np.abs(_simplex_cofactors(vertices, j) @ lifted)  # det up to (p-1)!, all pixels
            best = int(np.argmax(volumes))
            if volumes[best] > volumes[indices[j]] * (1 + 1e-12) and best not in indices:
                indices[j] = best
                changed = True
        if not changed:
            break
    return indices


def nfindr(pixels: Any, n_endmembers: int, seed: int = 0, max_iter: int = 10) -> np.ndarray:
    """N-FINDR endmembers ``(B, K)``: the spectra of the pixels :func:`nfindr_indices` selects."""
    x = _as_pixels(pixels)
    return x[nfindr_indices(x, n_endmembers, seed, max_iter)].T.copy()


# ----------------------------------------------------------------------------- FCLS


def fcls(pixels: Any, endmembers: Any) -> np.ndarray:
    """Fully constrained least-squares abundances ``(P, K)``: ``min ||y - M a||`` s.t. ``a >= 0, 1^T a = 1``.

    Heinz & Chang's augmentation turns the sum-to-one equality into one more, heavily weighted row of
    a non-negative least-squares problem, solved per pixel with ``scipy.optimize.nnls``::

        min_{a >= 0} || [delta M; 1^T] a - [delta y; 1] ||^2,     delta = FCLS_DELTA / ||M||_F

    The (B+1) x K system is first reduced by one QR factorisation shared by all pixels,
    ``[delta M; 1^T] = Q R``, to the K x K problem ``min_{a >= 0} ||R a - Q^T [delta y; 1]||`` (same
    minimiser, the dropped residual does not depend on a). A finite delta leaves the sum off by a
    residual of order ``delta^2`` times the misfit (below 1e-6 for reflectance data); each row is then
    divided by its sum, so the returned abundances are exactly >= 0 and sum to 1 up to rounding.
    """
    x = _as_pixels(pixels)
    m = _as_endmembers(endmembers, x.shape[1])
    if not np.any(m):
        raise UnmixingError("endmembers are all zero")
    delta = FCLS_DELTA / np.linalg.norm(m)
    system = np.vstack([delta * m, np.ones((1, m.shape[1]))])  # (B+1, K)
    q, r = np.linalg.qr(system)
    rhs = q[:-1].T @ (delta * x.T) + q[-1][:, None]  # Q^T [delta y; 1] for all pixels, (K, P)
    abundances = np.empty((x.shape[0], m.shape[1]))
    for p in range(x.shape[0]):
        abundances[p] = nnls(r, rhs[:, p])[0]
    sums = abundances.sum(axis=1, keepdims=True)
    degenerate = sums[:, 0] <= _EPS  # cannot happen with the ones row, kept as a guard
    abundances[degenerate] = 1.0 / m.shape[1]
    sums[degenerate] = 1.0
    return abundances / sums


# ----------------------------------------------------------------------------- NMF


def _initial_endmembers(x: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    if init == "vca":
        return vca(x, k, seed)
    if init == "nfindr":
        return nfindr(x, k, seed)
    if init == "random":
        return x[np.random.default_rng(seed).choice(x.shape[0], size=k, replace=False)].T.copy()
    raise UnmixingError(f"unknown init {init!r}; known: {', '.join(NMF_INITS)}")


def _augmented(matrix: np.ndarray, delta: float) -> np.ndarray:
    """``[matrix; delta 1^T]``: one extra row carrying the sum-to-one constraint (Heinz-Chang)."""
    return np.vstack([matrix, np.full((1, matrix.shape[1]), delta)])


def nmf_objective(data: np.ndarray, endmembers: np.ndarray, abundances: np.ndarray, delta: float) -> float:
    """Augmented NMF objective ``||Y - M A||_F^2 + delta^2 ||1^T A - 1^T||^2`` (Y: B x P, A: K x P)."""
    misfit = float(np.sum((data - endmembers @ abundances) ** 2))
    return misfit + delta**2 * float(np.sum((abundances.sum(axis=0) - 1) ** 2))


def nmf_unmixing(pixels: Any, n_endmembers: int, seed: int = 0, max_iter: int = 500, init: str = "vca",
                 *, tol: float = 1e-6, delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NMF unmixing: endmembers ``(B, K)`` and abundances ``(P, K)`` fitted jointly to non-negative data.

    Minimises the augmented objective (:func:`nmf_objective`) with Lee & Seung's multiplicative
    updates, which keep both factors non-negative and never increase it::

        A <- A * (Mb^T Yb) / (Mb^T Mb A),     Yb = [Y; delta 1^T],  Mb = [M; delta 1^T]
        M <- M * (Y A^T) / (M A A^T)

    ``delta = NMF_DELTA * rms pixel norm`` (or the given ``delta``) weights the sum-to-one row. The
    start is ``M0`` from ``init`` ("vca", "nfindr" or "random" pixels, all from ``seed``) and
    ``A0 = fcls(M0)`` lifted by ``NMF_INIT_FLOOR`` (an exact zero is a fixed point of the updates).
    Iterations stop after ``max_iter`` or when the objective improves by less than ``tol`` (relative)
    over 10 iterations. The returned abundances are ``fcls(pixels, M)`` for the final ``M``: exactly
    non-negative and summing to one.
    """
    x = _as_pixels(pixels)
    k = _check_n_endmembers(n_endmembers, *x.shape)
    if np.any(x < 0):
        raise UnmixingError(f"nmf_unmixing needs non-negative pixels; {int(np.sum(x < 0))} values are negative")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise UnmixingError(f"max_iter must be a non-negative integer; got {max_iter!r}")
    data = x.T  # (B, P)
    if delta is None:
        delta = NMF_DELTA * float(np.sqrt(np.mean(np.sum(data**2, axis=0))))
    if not delta > 0:
        raise UnmixingError(f"delta must be positive; got {delta}")
    m = _initial_endmembers(x, k, init, seed)
    a = (fcls(x, m) + NMF_INIT_FLOOR).T / (1 + k * NMF_INIT_FLOOR)  # (K, P)
    data_aug = _augmented(data, delta)
    previous = nmf_objective(data, m, a, delta)
    for it in range(1, max_iter + 1):
        m_aug = _augmented(m, delta)
        a *= (m_aug.T @ data_aug) / ((m_aug.T @ m_aug) @ a + _EPS)  # K x K Gram first: cheap for P >> B
        gram = a @ a.T
        m *= (data @ a.T) / (m @ gram + _EPS)
        if it % 10 == 0:
            current = nmf_objective(data, m, a, delta)
            if previous - current <= tol * previous:
                break
            previous = current
    return m, fcls(x, m)


# ----------------------------------------------------------------------------- scores


def spectral_angles(estimated: Any, reference: Any) -> np.ndarray:
    """Matrix ``(K_ref, K_est)`` of spectral angles (radians) between reference and estimated columns.

    ``angle(e, r) = arccos(e.r / (|e| |r|))``, evaluated as ``2 atan2(|e^ - r^|, |e^ + r^|)`` on the
    unit vectors, which is exact to rounding also for tiny angles (arccos loses half the digits).
    """
    est = _as_endmembers(estimated, name="estimated")
    ref = _as_endmembers(reference, est.shape[0], name="reference")
    for arr, name in ((est, "estimated"), (ref, "reference")):
        zero = np.flatnonzero(np.linalg.norm(arr, axis=0) == 0)
        if zero.size:
            raise UnmixingError(f"{name} has all-zero spectra (columns {zero.tolist()}): their angle is undefined")
    est_unit = est / np.linalg.norm(est, axis=0)
    ref_unit = ref / np.linalg.norm(ref, axis=0)
    diff = np.linalg.norm(ref_unit[:, :, None] - est_unit[:, None, :], axis=0)
    summ = np.linalg.norm(ref_unit[:, :, None] + est_unit[:, None, :], axis=0)
    return 2 * np.arctan2(diff, summ)


def match_endmembers(estimated: Any, reference: Any) -> np.ndarray:
    """Permutation ``perm`` (K_ref,) pairing endmembers: ``estimated[:, perm[k]]`` matches ``reference[:, k]``.

    The one-to-one assignment of least total spectral angle (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment`` on :func:`spectral_angles`). ``estimated`` may hold more
    endmembers than ``reference``; the unmatched ones are left out.
    """
    angles = spectral_angles(estimated, reference)
    if angles.shape[1] < angles.shape[0]:
        raise UnmixingError(f"estimated has {angles.shape[1]} endmembers, fewer than the {angles.shape[0]} of reference")
    rows, cols = linear_sum_assignment(angles)
    return cols[np.argsort(rows)]


def spectral_angle_distance(estimated: Any, reference: Any, permutation: Any = None) -> np.ndarray:
    """Spectral angle distance (SAD, radians) of each reference endmember to its match, shape (K_ref,).

    ``SAD_k = arccos(m^_k . m_k / (|m^_k| |m_k|))`` after matching (``permutation`` from
    :func:`match_endmembers`, computed when None). The literature's "mean SAD" is ``SAD.mean()``.
    """
    angles = spectral_angles(estimated, reference)
    perm = match_endmembers(estimated, reference) if permutation is None else _as_permutation(permutation, angles.shape)
    return angles[np.arange(angles.shape[0]), perm]


def _as_permutation(permutation: Any, shape: tuple[int, int]) -> np.ndarray:
    perm = np.asarray(permutation)
    n_ref, n_est = shape
    if perm.shape != (n_ref,) or perm.dtype.kind not in "iu" or len(set(perm.tolist())) != n_ref \
            or perm.min() < 0 or perm.max() >= n_est:
        raise UnmixingError(f"permutation must hold {n_ref} distinct column indices in [0, {n_est}); got {permutation!r}")
    return perm


def _matched_abundances(estimated: Any, reference: Any, permutation: Any) -> tuple[np.ndarray, np.ndarray]:
    est = _as_pixels(estimated, "estimated")
    ref = _as_pixels(reference, "reference")
    if est.shape[0] != ref.shape[0]:
        raise UnmixingError(f"estimated has {est.shape[0]} pixels (rows) and reference {ref.shape[0]}; "
                            f"abundances are (P, K)")
    perm = np.arange(ref.shape[1]) if permutation is None else _as_permutation(permutation, (ref.shape[1], est.shape[1]))
    if permutation is None and est.shape[1] != ref.shape[1]:
        raise UnmixingError(f"estimated has {est.shape[1]} endmembers and reference {ref.shape[1]}; pass a permutation")
    return est[:, perm], ref


def abundance_rmse(estimated: Any, reference: Any, permutation: Any = None) -> float:
    """Abundance RMSE over all pixels and endmembers: ``sqrt(1/(P K) sum_{p,k} (a^_{p,perm[k]} - a_{p,k})^2)``.

    ``estimated`` and ``reference`` are ``(P, K)``; ``permutation`` (from :func:`match_endmembers` on
    the endmembers) aligns the estimated columns, identity when None. This is the root of the mean
    over all P*K entries; :func:`abundance_rmse_per_endmember` gives the per-endmember RMSEs, whose
    mean is never larger than this value (Jensen).
    """
    est, ref = _matched_abundances(estimated, reference, permutation)
    return float(np.sqrt(np.mean((est - ref) ** 2)))


def abundance_rmse_per_endmember(estimated: Any, reference: Any, permutation: Any = None) -> np.ndarray:
    """Per reference endmember k, ``sqrt(1/P sum_p (a^_{p,perm[k]} - a_{p,k})^2)``, shape (K,)."""
    est, ref = _matched_abundances(estimated, reference, permutation)
    return np.sqrt(np.mean((est - ref) ** 2, axis=0))


# ----------------------------------------------------------------------------- cube-level API


@dataclass
class Unmixing:
    """An unmixed cube: endmembers ``(B, K)`` and abundance maps ``(K, H, W)``."""

    endmembers: np.ndarray
    abundances: np.ndarray

    def __post_init__(self) -> None:
        self.endmembers = np.asarray(self.endmembers, dtype=np.float64)
        self.abundances = np.asarray(self.abundances, dtype=np.float64)
        if self.endmembers.ndim != 2 or self.abundances.ndim != 3:
            raise UnmixingError(f"Unmixing needs endmembers (B, K) and abundances (K, H, W); got "
                                f"{self.endmembers.shape} and {self.abundances.shape}")
        if self.endmembers.shape[1] != self.abundances.shape[0]:
            raise UnmixingError(f"endmembers hold {self.endmembers.shape[1]} spectra but abundances "
                                f"{self.abundances.shape[0]} maps")

    def reconstruct(self) -> np.ndarray:
        """The mixed cube ``(B, H, W)`` of the LMM: ``x[:, h, w] = M a[:, h, w]``."""
        return np.einsum("bk,khw->bhw", self.endmembers, self.abundances)


def unmix(cube: Any, n_endmembers: int, method: str = "vca", seed: int = 0) -> Unmixing:
    """Unmix a ``(B, H, W)`` cube into ``n_endmembers`` endmembers and their abundance maps.

    ``method``: "vca" or "nfindr" (endmembers, then :func:`fcls` abundances), or "nmf"
    (:func:`nmf_unmixing` with its defaults, VCA start).
    """
    arr = np.asarray(cube, dtype=np.float64)
    if arr.ndim != 3:
        raise UnmixingError(f"cube must be a 3-D (B, H, W) array; got shape {arr.shape}")
    if arr.size == 0:
        raise UnmixingError(f"cube must be non-empty; got shape {arr.shape}")
    _check_finite(arr, "cube")
    if method not in UNMIXING_METHODS:
        raise UnmixingError(f"unknown unmixing method {method!r}; known: {', '.join(UNMIXING_METHODS)}")
    n_bands, height, width = arr.shape
    pixels = arr.reshape(n_bands, -1).T
    _check_n_endmembers(n_endmembers, *pixels.shape)
    if method == "nmf":
        endmembers, abundances = nmf_unmixing(pixels, n_endmembers, seed)
    else:
        endmembers = (vca if method == "vca" else nfindr)(pixels, n_endmembers, seed)
        abundances = fcls(pixels, endmembers)
    return Unmixing(endmembers, abundances.T.reshape(-1, height, width))


# ----------------------------------------------------------------------------- Jasper Ridge


def load_jasper_ridge(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Jasper Ridge scene and its ground truth from ``jasper_ridge_r198.mat``.

    Returns ``cube`` (198, 100, 100) float64, ``M`` (198, 4) and ``A`` (4, 100, 100), endmembers in
    the order :data:`JASPER_ENDMEMBERS` (tree, water, soil, road).

    * ``Y`` (bands x pixels, uint16) is divided by the file's ``maxValue`` (5000): the convention of
      the dataset, under which ``M`` is on the same scale. Reflectance then lies in [0, 1.087] (the
      brightest raw value is 5437); the GT explains this cube with ``||Y - M A||_F / ||Y||_F = 0.175``
      (the GT is a labelled estimate, not an exact factorisation; the best single global scale,
      Y / 5367, only lowers it to 0.161).
    * Pixels are in MATLAB column order (row index fastest), for ``Y`` and ``A`` alike: column p is
      pixel ``(h, w) = (p % nRow, p // nRow)``, hence ``Y.reshape(B, nRow, nCol, order="F")``.

    Raises ``DatasetError`` (a ``ValueError``) naming the file for a missing or unreadable file or a
    missing / mis-shaped variable.
    """
    import scipy.io

    from hiralign.data.loaders import DatasetError

    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (Jasper Ridge: jasperRidge2_R198.mat as distributed with Zhu, \"Hyperspectral Unmixing: Ground Truth Labeling, Datasets, Benchmark Performances and Survey\", arXiv:1708.05125; variables Y, maxValue, M, A)")
    try:
        contents = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises ValueError, TypeError, OSError... for a corrupt file
        raise DatasetError(f"{path}: not a readable MATLAB v5 file ({type(err).__name__}: {err})") from err
    missing = [name for name in ("Y", "M", "A") if name not in contents]
    if missing:
        present = sorted(k for k in contents if not k.startswith("__"))
        raise DatasetError(f"{path}: missing variable(s) {', '.join(missing)} of the Jasper Ridge file; has {present}")
    raw = np.asarray(contents["Y"], dtype=np.float64)
    gt_m = np.asarray(contents["M"], dtype=np.float64)
    gt_a = np.asarray(contents["A"], dtype=np.float64)
    n_bands, n_pixels = raw.shape if raw.ndim == 2 else (0, 0)
    n_rows = int(np.ravel(contents.get("nRow", [100]))[0])
    n_cols = int(np.ravel(contents.get("nCol", [n_pixels // max(n_rows, 1)]))[0])
    max_value = float(np.ravel(contents.get("maxValue", [np.nan]))[0])
    if raw.ndim != 2 or n_rows * n_cols != n_pixels:
        raise DatasetError(f"{path}: Y has shape {raw.shape}; expected bands x (nRow*nCol = {n_rows * n_cols}) pixels")
    if gt_m.ndim != 2 or gt_m.shape[0] != n_bands or gt_a.shape != (gt_m.shape[1], n_pixels):
        raise DatasetError(f"{path}: ground truth M {gt_m.shape} / A {gt_a.shape} do not fit Y {raw.shape} "
                           f"(expected M (B, K) and A (K, P))")
    if not max_value > 0:
        raise DatasetError(f"{path}: maxValue missing or not positive ({max_value}); it sets the reflectance scale")
    cube = np.ascontiguousarray(raw.reshape(n_bands, n_rows, n_cols, order="F") / max_value)
    maps = np.ascontiguousarray(gt_a.reshape(gt_m.shape[1], n_rows, n_cols, order="F"))
    return cube, gt_m, maps
