"""The output of :func:`hiralign.warp.spectral_warp`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp


@dataclass
class WarpResult:
    """A synthesized HSI and everything that made it (Eq. 9-26).

    ``hsi`` (B, H, W) and ``rgb`` (3, H, W) are ``operator`` applied to the proxy HSI and proxy RGB
    (Eq. 26). ``operator`` is the CSR ``W = S A`` (Eq. 25). ``expected_coords`` and ``displacement``
    (2, H, W) hold (y, x) in pixels (Eq. 18): displacement = expected proxy coordinate - guide
    coordinate. ``candidates`` / ``candidate_distances`` (N, K) are Eq. 13, ``aggregation_weights``
    (N, K) and ``interpolation_weights`` (N, s^2) Eq. 22. ``loss_history`` maps ``total`` and each
    active Eq. 20 term to ``iters + 1`` values; ``timings`` holds seconds per step.
    """

    hsi: np.ndarray
    rgb: np.ndarray
    operator: sp.csr_matrix
    displacement: np.ndarray
    expected_coords: np.ndarray
    loss_history: dict[str, list[float]]
    timings: dict[str, float]
    params: dict[str, Any]
    candidates: np.ndarray
    candidate_distances: np.ndarray
    aggregation_weights: np.ndarray
    interpolation_weights: np.ndarray
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hsi.shape)  # type: ignore[return-value]

    def operator_arrays(self) -> dict[str, np.ndarray]:
        """The CSR operator as plain arrays (``data``, ``indices``, ``indptr``, ``shape``) for HDF5."""
        w = self.operator
        return {"data": w.data.astype(np.float32), "indices": w.indices, "indptr": w.indptr, "shape": np.asarray(w.shape, dtype=np.int64)}

    def __repr__(self) -> str:
        b, h, w = self.hsi.shape
        total = self.timings.get("total", float("nan"))
        return f"WarpResult(hsi={b}x{h}x{w}, nnz/row={self.operator.nnz / (h * w):.1f}, iters={self.params.get('iters')}, total={total:.2f}s)"
