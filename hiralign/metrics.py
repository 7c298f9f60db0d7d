"""Quality metrics for hyperspectral cubes: PSNR, SSIM, SAM, ERGAS, spectral precision/recall, and the
neighbour-SAM and sliced-Wasserstein distributions of stage-2 quality.

Conventions (shared by every function here):

* Cubes are ``(B, H, W)``; a :class:`~hiralign.data.Cube` (its ``.data``) or a torch tensor
  (detached, moved to CPU) is accepted wherever a numpy array is. All arithmetic is float64.
* ``x`` is the estimate (restored / generated), ``y`` the reference. PSNR, SSIM and SAM are symmetric;
  ERGAS is not.
* Spatial metrics are computed per band and averaged over bands (the HSI convention).
* Bad input raises ``ValueError``: a shape mismatch names both shapes, NaN/inf names the argument.

sPr / sRec are the spectral precision and recall of the HSIGene paper (Eq. 8), i.e. the improved
precision/recall of Kynkaanniemi et al. with every pixel spectrum as a sample.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

#: SSIM constants of Wang et al. (2004): an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma).
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Which way each evaluation metric improves (SAM: an angle, lower is better).
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "sam": False}
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5 -> 11 taps, as scipy.ndimage computes it

#: Relative slack in the sPr/sRec membership test: ``|q - c|^2 <= r^2 + slack (|q|^2 + |c|^2)``. It
#: only absorbs float64 rounding of ``|q|^2 + |c|^2 - 2 q.c`` so that a sample exactly on a sphere
#: counts as inside (Eq. 8 uses ``<=``); it is far below any meaningful spectral distance.
_ROUNDING_SLACK = 1e-12

#: Query-centre pairs scored at once in the membership test (bounds memory to ~32 MB a block).
_BLOCK_ENTRIES = 1 << 22


# ----------------------------------------------------------------------------- input handling


def _to_numpy(obj: Any) -> np.ndarray:
    """A float64 numpy view of a Cube, a torch tensor or anything ``np.asarray`` takes."""
    from hiralign.data.cube import Cube  # local import keeps metrics light to import

    if isinstance(obj, Cube):
        obj = obj.data
    if hasattr(obj, "detach"):  # torch tensor, without importing torch here
        obj = obj.detach().cpu().numpy()
    return np.asarray(obj, dtype=np.float64)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        n_bad = int(arr.size - np.isfinite(arr).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/infinite values")


def _cube_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float64 ``(B, H, W)`` arrays of equal shape with finite values."""
    x, y = _to_numpy(x), _to_numpy(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got x {x.shape} and y {y.shape}")
    if x.ndim != 3:
        raise ValueError(f"metrics expect cubes of shape (B, H, W); got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"metrics need non-empty cubes; got shape {x.shape}")
    _check_finite(x, "x")
    _check_finite(y, "y")
    return x, y


def _check_data_range(data_range: float) -> None:
    if not data_range > 0:
        raise ValueError(f"data_range must be positive; got {data_range}")


# ----------------------------------------------------------------------------- PSNR


def psnr_per_band(x: Any, y: Any, data_range: float = 1.0, max_db: float | None = 100.0) -> np.ndarray:
    """PSNR of every band, ``10 log10(data_range^2 / MSE_b)`` in dB, shape ``(B,)``.

    A band whose PSNR exceeds ``max_db`` -- in particular an exactly reproduced band (MSE 0, PSNR
    +inf) -- is reported as ``max_db``, so band averages stay finite and comparable. Pass
    ``max_db=None`` to keep +inf for exact bands (skimage's behaviour).
    """
    _check_data_range(data_range)
    x, y = _cube_pair(x, y)
    mse = np.mean((x - y) ** 2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(data_range**2 / mse)
    return db if max_db is None else np.minimum(db, max_db)


def psnr(x: Any, y: Any, data_range: float = 1.0, max_db: float | None = 100.0) -> float:
    """Mean over bands of the per-band PSNR (dB); see :func:`psnr_per_band` for ``max_db``."""
    return float(np.mean(psnr_per_band(x, y, data_range, max_db)))


# ----------------------------------------------------------------------------- SSIM


def _ssim_window(a: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local mean over the 11x11 window of every band (reflect padding)."""
    return gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect", axes=(-2, -1))


def ssim_per_band(x: Any, y: Any, data_range: float = 1.0) -> np.ndarray:
    """SSIM of every band (Wang et al. 2004, Gaussian window, population covariances), shape ``(B,)``.

    The SSIM map is averaged over pixels at least 5 px (the window radius) from the border, as
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` does. Bands must be at least 11x11.
    """
    _check_data_range(data_range)
    x, y = _cube_pair(x, y)
    size = 2 * SSIM_RADIUS + 1
    if min(x.shape[1:]) < size:
        raise ValueError(f"SSIM needs bands of at least {size}x{size} pixels; got shape {x.shape}")
    mu_x, mu_y = _ssim_window(x), _ssim_window(y)
    var_x = _ssim_window(x * x) - mu_x**2
    var_y = _ssim_window(y * y) - mu_y**2
    cov_xy = _ssim_window(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    r = SSIM_RADIUS
    return ssim_map[:, r:-r, r:-r].mean(axis=(1, 2))


def ssim(x: Any, y: Any, data_range: float = 1.0) -> float:
    """Mean over bands of the per-band SSIM; see :func:`ssim_per_band`."""
    return float(np.mean(ssim_per_band(x, y, data_range)))


# ----------------------------------------------------------------------------- SAM


def sam_map(x: Any, y: Any, eps: float = 1e-8) -> np.ndarray:
    """Spectral angle (degrees) between ``x[:, i, j]`` and ``y[:, i, j]`` for every pixel, ``(H, W)``.

    The angle is ``arccos(<x, y> / (|x| |y|))`` evaluated as ``2 atan2(|u - v|, |u + v|)`` on the unit
    spectra ``u, v``: the same value as the clipped arccos, but accurate near 0 deg (where arccos
    loses ~1e-6 deg) and never NaN. A spectrum with L2 norm <= ``eps`` counts as zero: two zero
    spectra have angle 0 (they agree), exactly one zero spectrum gives 90 deg (it is orthogonal to
    every direction by convention). Those pixels stay in any mean.
    """
    x, y = _cube_pair(x, y)
    norm_x, norm_y = np.linalg.norm(x, axis=0), np.linalg.norm(y, axis=0)
    zero_x, zero_y = norm_x <= eps, norm_y <= eps
    u = x / np.where(zero_x, 1.0, norm_x)
    v = y / np.where(zero_y, 1.0, norm_y)
    angle = 2.0 * np.arctan2(np.linalg.norm(u - v, axis=0), np.linalg.norm(u + v, axis=0))
    angle = np.degrees(angle)
    angle[zero_x != zero_y] = 90.0
    angle[zero_x & zero_y] = 0.0
    return angle


def sam(x: Any, y: Any, eps: float = 1e-8) -> float:
    """Spectral angle mapper: mean over pixels of :func:`sam_map`, in degrees."""
    return float(np.mean(sam_map(x, y, eps)))


def neighbour_sam(x: Any, eps: float = 1e-8) -> np.ndarray:
    """Spectral angles (degrees) between every pixel of a ``(B, H, W)`` cube and its right and lower
    neighbours, flattened: ``(H (W - 1) + (H - 1) W,)``. Their distribution describes how spectra
    change across a scene (small inside a material, large at its boundaries); see :func:`sam_map`."""
    x = _to_numpy(x)
    if x.ndim != 3:
        raise ValueError(f"neighbour_sam needs a (B, H, W) cube; got shape {x.shape}")
    _check_finite(x, "x")
    horizontal = sam_map(x[:, :, :-1], x[:, :, 1:], eps) if x.shape[2] > 1 else np.zeros(0)
    vertical = sam_map(x[:, :-1, :], x[:, 1:, :], eps) if x.shape[1] > 1 else np.zeros(0)
    return np.concatenate([horizontal.ravel(), vertical.ravel()])


# ----------------------------------------------------------------------------- sliced Wasserstein


def sliced_wasserstein(x: Any, y: Any, n_projections: int = 128, n_quantiles: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between point sets ``(N, D)`` and ``(M, D)`` (Rabin et al. 2011).

    The mean over ``n_projections`` random unit directions (seeded) of the 1-D Wasserstein distance
    between the projected sets, each evaluated as the mean absolute difference of
    ``n_quantiles`` mid-point quantiles (``W1 = int_0^1 |F^-1(q) - G^-1(q)| dq``). Units: those of
    the points (RGB in [0, 1] here). 0 for identical sets; a shift by ``v`` in 3-D gives ``|v| / 2``
    in the limit of many directions.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"sliced_wasserstein needs non-empty (N, D) and (M, D) point sets; got {x.shape} and {y.shape}")
    _check_finite(x, "x")
    _check_finite(y, "y")
    directions = np.random.default_rng(seed).normal(size=(n_projections, x.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
    qx = np.quantile(x @ directions.T, levels, axis=0)
    qy = np.quantile(y @ directions.T, levels, axis=0)
    return float(np.mean(np.abs(qx - qy)))


# ----------------------------------------------------------------------------- ERGAS


def ergas(x: Any, y: Any, scale: float = 1, eps: float = 1e-8) -> float:
    """ERGAS = 100 / scale * sqrt(mean_b RMSE_b^2 / mean(y_b)^2), ``x`` the estimate, ``y`` the reference.

    ``scale`` is the resolution ratio (4 for x4 super-resolution; 1 for restoration). A reference band
    whose squared mean is below ``eps`` (e.g. an all-zero band) uses ``eps`` as its denominator: it
    contributes 0 when reproduced exactly and a large but finite ``RMSE_b^2 / eps`` otherwise, so
    the value never becomes NaN/inf but still flags the error.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive; got {scale}")
    x, y = _cube_pair(x, y)
    mse = np.mean((x - y) ** 2, axis=(1, 2))
    mean_sq = np.mean(y, axis=(1, 2)) ** 2
    return float(100.0 / scale * np.sqrt(np.mean(mse / np.maximum(mean_sq, eps))))


# ----------------------------------------------------------------------------- summary


def evaluate(x: Any, y: Any, data_range: float = 1.0) -> dict[str, float]:
    """The restoration metrics reported in tables: ``{"psnr": dB, "ssim": .., "sam": degrees}``."""
    return {
        "psnr": psnr(x, y, data_range),
        "ssim": ssim(x, y, data_range),
        "sam": sam(x, y),
    }


# ----------------------------------------------------------------------------- sPr / sRec


class PrecisionRecall(NamedTuple):
    """Spectral precision (sPr) and recall (sRec), each in [0, 1]."""

    precision: float
    recall: float


def _spectra_of_one(obj: Any, name: str) -> np.ndarray:
    arr = _to_numpy(obj)
    if arr.ndim == 2:  # (N, B) spectra
        return arr
    if arr.ndim == 3:  # (B, H, W) cube
        return arr.reshape(arr.shape[0], -1).T
    if arr.ndim == 4:  # (N, B, H, W) batch
        return np.moveaxis(arr, 1, -1).reshape(-1, arr.shape[1])
    raise ValueError(
        f"{name}: expected (N, B) spectra, a (B, H, W) cube or an (N, B, H, W) batch; got shape {arr.shape}"
    )


def pixel_spectra(obj: Any, name: str = "input") -> np.ndarray:
    """All pixel spectra of ``obj`` as a float64 ``(N, B)`` array.

    ``obj`` is ``(N, B)`` spectra, a ``(B, H, W)`` cube, an ``(N, B, H, W)`` batch, or a list/tuple of
    those (concatenated; all must share B).
    """
    items = obj if isinstance(obj, (list, tuple)) else [obj]
    parts = [_spectra_of_one(item, name) for item in items]
    if not parts:
        raise ValueError(f"{name}: empty list of cubes")
    bands = {p.shape[1] for p in parts}
    if len(bands) != 1:
        raise ValueError(f"{name}: items have different band counts {sorted(bands)}")
    spectra = np.concatenate(parts, axis=0)
    _check_finite(spectra, name)
    return spectra


def _load_faiss() -> Any:
    """The faiss module, or None when it is not installed (the cKDTree fallback is used then)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _nearest_indices(points: np.ndarray, n: int) -> np.ndarray:
    """Indices ``(N, n)`` of the ``n`` nearest points of every point within ``points`` (self included).

    Exact search: faiss ``IndexFlatL2`` (brute force) when available, else scipy's ``cKDTree``.
    """
    faiss = _load_faiss()
    if faiss is not None:
        pts = np.ascontiguousarray(points, dtype=np.float32)
        index = faiss.IndexFlatL2(pts.shape[1])
        index.add(pts)
        return index.search(pts, n)[1]
    from scipy.spatial import cKDTree

    return cKDTree(points).query(points, k=n)[1].reshape(len(points), n)


def kth_neighbour_radii(points: np.ndarray, k: int) -> np.ndarray:
    """Distance from every point to its k-th nearest *other* point of the same set, ``(N,)``.

    These are the hypersphere radii ``||phi' - NN_k(phi', Phi)||_2`` of Eq. 8. The neighbour set comes
    from :func:`_nearest_indices` (k + 1 neighbours, the point itself at distance 0 among them); the
    distances are then recomputed exactly in float64 so they do not carry faiss' float32 rounding.
    """
    if not 1 <= k < len(points):
        raise ValueError(
            f"k must be in [1, N-1] = [1, {len(points) - 1}] for a set of {len(points)} samples; got k={k}"
        )
    idx = _nearest_indices(points, k + 1)
    dist = np.stack([np.linalg.norm(points - points[idx[:, j]], axis=1) for j in range(k + 1)], axis=1)
    return np.sort(dist, axis=1)[:, k]


def inside_manifold(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The binary function f of Eq. 8 for every query: inside the union of balls ``B(centre, radius)``.

    ``True`` where ``||q - c||_2 <= r_c`` for at least one centre. Exact (blockwise over queries, no
    N x N matrix in memory); ties on a sphere count as inside. With ``|q - c|^2 = |q|^2 + |c|^2 - 2 q.c``
    the test reads ``max_c (q.c - b_c) >= a_q``, ``a_q = |q|^2 / 2``, ``b_c = (|c|^2 - r_c^2) / 2``, so a
    block costs one matrix product and one row maximum; the slack widens it by float64 rounding.
    """
    keep = 1.0 - _ROUNDING_SLACK
    a = 0.5 * keep * np.einsum("ij,ij->i", queries, queries)
    b = 0.5 * (keep * np.einsum("ij,ij->i", centres, centres) - radii**2)
    rows = max(1, _BLOCK_ENTRIES // len(centres))
    inside = np.empty(len(queries), dtype=bool)
    for start in range(0, len(queries), rows):
        block = slice(start, start + rows)
        gram = queries[block] @ centres.T
        gram -= b[None, :]
        inside[block] = gram.max(axis=1) >= a[block]
    return inside


def _subsample(spectra: np.ndarray, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """A random subset of at most ``max_samples`` rows, in random order (all rows when None)."""
    n = len(spectra) if max_samples is None else min(max_samples, len(spectra))
    return spectra[rng.permutation(len(spectra))[:n]]


def spectral_precision_recall(
    generated: Any,
    real: Any,
    k: int = 10,
    max_samples: int | None = None,
    n_groups: int = 1,
    seed: int = 0,
) -> PrecisionRecall:
    """Spectral precision sPr and recall sRec of HSIGene (Eq. 8) between two sets of pixel spectra.

    Every pixel spectrum is a sample (see :func:`pixel_spectra` for the accepted inputs). The real
    manifold is the union of balls around each real spectrum with radius its distance to its k-th
    nearest real neighbour; sPr is the fraction of generated spectra inside it. sRec swaps the roles:
    the fraction of real spectra inside the manifold of the generated ones. Distances are Euclidean
    on the raw spectra -- nothing is normalised, as in the paper, so brightness differences count.

    ``max_samples`` draws that many spectra of each set at random (the paper uses 100,000);
    ``n_groups`` then splits each set into that many random groups, scores each group pair and
    averages (the paper uses 10 groups). All randomness comes from ``seed``. Each group needs more
    than ``k`` samples (paper: k = 10).
    """
    gen, ref = pixel_spectra(generated, "generated"), pixel_spectra(real, "real")
    if gen.shape[1] != ref.shape[1]:
        raise ValueError(f"generated spectra have {gen.shape[1]} bands but real spectra have {ref.shape[1]}")
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1; got {n_groups}")
    rng = np.random.default_rng(seed)
    gen, ref = _subsample(gen, max_samples, rng), _subsample(ref, max_samples, rng)
    scores = []
    for gen_group, ref_group in zip(np.array_split(gen, n_groups), np.array_split(ref, n_groups)):
        precision = inside_manifold(gen_group, ref_group, kth_neighbour_radii(ref_group, k)).mean()
        recall = inside_manifold(ref_group, gen_group, kth_neighbour_radii(gen_group, k)).mean()
        scores.append((precision, recall))
    precision, recall = np.mean(scores, axis=0)
    return PrecisionRecall(float(precision), float(recall))
