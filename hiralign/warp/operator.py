"""The composed sparse stochastic warp of Eq. 25-26: ``W = S A`` as a scipy CSR matrix.

``A`` (N x N) holds the K aggregation weights of each guide pixel in the columns of its candidate
proxy pixels (Eq. 22-23); ``S`` (N x N) holds the s^2 interpolation weights of each guide pixel in
the columns of its stencil neighbours under the replicate boundary rule (Eq. 24). Their product is
non-negative, row-stochastic and has at most K * s^2 non-zeros per row (repeated columns summed).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hiralign.warp.transport import stencil_offsets


def aggregation_matrix(indices: np.ndarray, alpha: np.ndarray, n_proxy: int) -> sp.csr_matrix:
    """``A`` of Eq. 25: row p has ``alpha_k(p)`` at column ``q_k(p)`` (repeated candidates summed)."""
    n, k = indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    return sp.csr_matrix((alpha.reshape(-1).astype(np.float64), (rows, indices.reshape(-1))), shape=(n, n_proxy))


def stencil_columns(height: int, width: int, stencil: int) -> np.ndarray:
    """``(N, s^2)`` pixel index of ``Pi(p + o)`` for every pixel p and offset o (replicate rule)."""
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    cols = [
        np.clip(ys + dy, 0, height - 1) * width + np.clip(xs + dx, 0, width - 1)
        for dy, dx in stencil_offsets(stencil)
    ]
    return np.stack([c.reshape(-1) for c in cols], axis=1)


def interpolation_matrix(beta: np.ndarray, height: int, width: int, stencil: int) -> sp.csr_matrix:
    """``S`` of Eq. 25: row p has ``beta_o(p)`` at column ``Pi(p + o)`` (clamped repeats summed)."""
    n = height * width
    cols = stencil_columns(height, width, stencil)
    rows = np.repeat(np.arange(n, dtype=np.int64), cols.shape[1])
    return sp.csr_matrix((beta.reshape(-1).astype(np.float64), (rows, cols.reshape(-1))), shape=(n, n))


def normalise_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Divide every row by its sum (float64), removing float32 rounding of the softmax weights."""
    sums = np.asarray(matrix.sum(axis=1)).reshape(-1)
    if np.any(sums <= 0):
        raise ValueError(f"{int(np.sum(sums <= 0))} operator rows have no positive weight")
    matrix.data /= np.repeat(sums, np.diff(matrix.indptr))
    return matrix


def composed_operator(indices: np.ndarray, alpha: np.ndarray, beta: np.ndarray, height: int, width: int, stencil: int) -> sp.csr_matrix:
    """Eq. 25: ``W = S A`` as CSR ``(H*W, H*W)``, rows renormalised to sum exactly to one."""
    a = aggregation_matrix(indices, alpha, height * width)
    s = interpolation_matrix(beta, height, width, stencil)
    w = (s @ a).tocsr()
    w.sum_duplicates()
    w.sort_indices()
    return normalise_rows(w)


def apply_operator(operator: sp.csr_matrix, image: np.ndarray) -> np.ndarray:
    """Eq. 26: ``W`` applied to every channel of a ``(C, H, W)`` proxy image; float32 ``(C, H, W)``."""
    channels = image.shape[0]
    flat = np.ascontiguousarray(image.reshape(channels, -1).T, dtype=np.float64)
    return np.ascontiguousarray((operator @ flat).T.reshape(image.shape), dtype=np.float32)
