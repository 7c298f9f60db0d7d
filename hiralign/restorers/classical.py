"""Classical baselines that need no training: bicubic upsampling and a subspace low-rank + TV solver.

Subspace low-rank + total variation (the LRTV / RCTV family)
------------------------------------------------------------
A clean cube ``X`` (B bands, P = H W pixels) lies close to a low-dimensional spectral subspace:
``X = U V`` with ``U`` (B x r) orthonormal and ``V`` (r x P) the *representative coefficient
images*, which are piecewise smooth. We solve

    min_{U, V, S}  1/2 || M o (Y - A(U V) - S) ||^2 + lambda * sum_k TV(V_k) + mu ||S||_1,  U^T U = I

where ``A`` is an optional spatial blur (the same kernel on every band), ``M`` an optional
observation mask (1 = observed), ``S`` an optional sparse term for impulse / stripe / deadline
outliers, and TV the anisotropic total variation. ADMM with the splitting ``G = D V``:

* missing entries of ``Y`` are re-imputed from the current model (majorise-minimise for ``M``);
* ``V``: ``(A^T A + rho D^T D) V = A^T U^T (Y - S) + rho D^T (G - Lambda / rho)``, diagonal in the
  Fourier domain (periodic boundary; blurred cubes are first mirror-padded by the kernel radius and
  the pad is treated as unobserved, so the unknown boundary does not wrap around);
* ``U``: orthogonal Procrustes, ``U = P Q^T`` from the SVD ``(Y - S) (A V)^T = P Sigma Q^T``;
* ``G``: soft threshold of ``D V + Lambda / rho`` at ``lambda / rho``; ``S``: soft threshold of the
  residual at ``mu``; ``Lambda += rho (D V - G)``.

The estimate is ``U V`` (the deblurred, completed, denoised cube); with a mask, observed entries
are returned unchanged by default (``keep_observed``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from hiralign import degrade as dg
from hiralign.tasks import Task, get_task


@dataclass(frozen=True)
class SubspaceTVParams:
    """Parameters of :func:`subspace_tv`.

    rank: subspace dimension r. tv_weight: lambda. sparse_weight: mu (``None``: no sparse term).
    penalty: ADMM rho. iterations: ADMM iterations. fill_sigma: Gaussian width (px) of the
    normalised-convolution fill that initialises masked pixels. keep_observed: with a mask, return
    the observed entries unchanged and the model only where entries are missing (noise-free completion).
    """

    rank: int = 3
    tv_weight: float = 0.15
    sparse_weight: float | None = None
    penalty: float = 2.0
    iterations: int = 50
    fill_sigma: float = 1.5
    keep_observed: bool = True


def soft_threshold(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """``sign(x) * max(|x| - threshold, 0)``, the proximal operator of ``threshold * ||.||_1``."""
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0.0)


def gradient(v: torch.Tensor) -> torch.Tensor:
    """Periodic forward differences ``(D_x v, D_y v)`` of ``(..., H, W)``, stacked on a new axis 0."""
    return torch.stack([torch.roll(v, -1, dims=-1) - v, torch.roll(v, -1, dims=-2) - v])


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint ``D^T`` of :func:`gradient`."""
    return (torch.roll(g[0], 1, dims=-1) - g[0]) + (torch.roll(g[1], 1, dims=-2) - g[1])


def laplacian_spectrum(height: int, width: int) -> torch.Tensor:
    """Fourier eigenvalues of ``D^T D`` for periodic forward differences, ``(H, W)``."""
    wy = 2 * torch.pi * torch.arange(height, dtype=torch.float64) / height
    wx = 2 * torch.pi * torch.arange(width, dtype=torch.float64) / width
    return (2 - 2 * torch.cos(wy))[:, None] + (2 - 2 * torch.cos(wx))[None, :]


def kernel_spectrum(kernel: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Fourier transform of a centred ``(k, k)`` blur kernel embedded periodically in ``H x W``."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.shape[0] > height or k.shape[1] > width:
        raise ValueError(f"blur kernel {k.shape} is larger than the image ({height}, {width})")
    padded = np.zeros((height, width))
    padded[: k.shape[0], : k.shape[1]] = k
    padded = np.roll(padded, (-(k.shape[0] // 2), -(k.shape[1] // 2)), axis=(0, 1))
    return torch.fft.fft2(torch.from_numpy(padded))


def fill_missing(y: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Initial values for unobserved entries: per band a normalised Gaussian convolution of the
    observed pixels; bands with no observed pixel are interpolated linearly along the spectrum."""
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    filled = y.copy()
    observed_bands = np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1))
    if observed_bands.size == 0:
        raise ValueError("the mask hides every entry of the cube; nothing to restore from")
    for b in observed_bands:
        weight = gaussian_filter(m[b], sigma, mode="reflect")
        smooth = gaussian_filter(y[b] * m[b], sigma, mode="reflect") / np.maximum(weight, 1e-8)
        filled[b] = np.where(m[b] > 0, y[b], smooth)
    missing_bands = np.setdiff1d(np.arange(y.shape[0]), observed_bands)
    for b in missing_bands:
        filled[b] = _interpolate_band(filled, observed_bands, b)
    return filled


def _interpolate_band(cube: np.ndarray, known: np.ndarray, band: int) -> np.ndarray:
    """Band ``band`` linearly interpolated (constant beyond the ends) from the ``known`` bands."""
    below, above = known[known < band], known[known > band]
    if below.size == 0:
        return cube[above[0]]
    if above.size == 0:
        return cube[below[-1]]
    lo, hi = below[-1], above[0]
    t = (band - lo) / (hi - lo)
    return (1 - t) * cube[lo] + t * cube[hi]


def subspace_tv(y: np.ndarray, params: SubspaceTVParams = SubspaceTVParams(), mask: np.ndarray | None = None,
                kernel: np.ndarray | None = None) -> np.ndarray:
    """Restore ``y`` ``(B, H, W)`` by subspace low-rank + TV ADMM (module docstring); returns ``U V``.

    mask: ``(B, H, W)`` with 1/True = observed (``None``: all observed). kernel: ``(k, k)`` blur
    applied to every band (``None``: no blur).
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 3:
        raise ValueError(f"subspace_tv expects a (B, H, W) cube; got shape {y.shape}")
    b, h, w = y.shape
    rank = min(params.rank, b)
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    if mask is not None and mask.shape != y.shape:
        raise ValueError(f"mask shape {mask.shape} differs from cube shape {y.shape}")
    if mask is not None and mask.all():  # nothing hidden (e.g. deblurring): no imputation, no copy-back
        mask = None
    start = y if mask is None else fill_missing(y, mask, params.fill_sigma)
    fit = mask  # entries the data term sees; the rest is imputed from the model
    pad = 0 if kernel is None else np.asarray(kernel).shape[0] // 2
    if pad:  # mirror-pad and leave the pad unobserved: no wrap-around of the periodic blur model
        start = np.pad(start, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
        fit = np.zeros(start.shape, dtype=bool)
        fit[:, pad : pad + h, pad : pad + w] = True if mask is None else mask
    x_obs = torch.from_numpy(start)
    m = None if fit is None else torch.from_numpy(fit)
    hp, wp = x_obs.shape[-2:]
    blur = None if kernel is None else kernel_spectrum(kernel, hp, wp)

    def apply_blur(v: torch.Tensor) -> torch.Tensor:
        return v if blur is None else torch.fft.ifft2(torch.fft.fft2(v) * blur).real

    rho = params.penalty
    denominator = rho * laplacian_spectrum(hp, wp) + (1.0 if blur is None else blur.abs() ** 2)
    u = torch.linalg.svd(x_obs.reshape(b, -1), full_matrices=False)[0][:, :rank]
    v = (u.T @ x_obs.reshape(b, -1)).reshape(rank, hp, wp)
    g = gradient(v)
    dual = torch.zeros_like(g)
    sparse = torch.zeros_like(x_obs)
    for _ in range(params.iterations):
        blurred_v = apply_blur(v)
        if m is not None:  # impute unobserved entries from the current model
            x_obs = torch.where(m, x_obs, (u @ blurred_v.reshape(rank, -1)).reshape(b, hp, wp) + sparse)
        target = (x_obs - sparse).reshape(b, -1)
        rhs = torch.fft.fft2((u.T @ target).reshape(rank, hp, wp))
        rhs = (rhs if blur is None else rhs * blur.conj()) + rho * torch.fft.fft2(gradient_adjoint(g - dual / rho))
        v = torch.fft.ifft2(rhs / denominator).real
        blurred_v = apply_blur(v).reshape(rank, -1)
        left, _, right = torch.linalg.svd(target @ blurred_v.T, full_matrices=False)
        u = left @ right
        dv = gradient(v)
        g = soft_threshold(dv + dual / rho, params.tv_weight / rho)
        dual = dual + rho * (dv - g)
        if params.sparse_weight is not None:
            sparse = soft_threshold(x_obs - (u @ blurred_v).reshape(b, hp, wp), params.sparse_weight)
    restored = (u @ v.reshape(rank, -1)).reshape(b, hp, wp)[:, pad : pad + h, pad : pad + w].numpy()
    if mask is not None and kernel is None and params.keep_observed:
        restored = np.where(mask, y, restored)
    return restored.astype(np.float32)


class SubspaceTV(nn.Module):
    """The subspace low-rank + TV solver with the restorer call ``model(x, mask=None)``; no
    parameters to train (``kernel``: the blur the observations went through, or ``None``)."""

    def __init__(self, params: SubspaceTVParams = SubspaceTVParams(), kernel: np.ndarray | None = None):
        super().__init__()
        self.params, self.kernel = params, kernel
        self.receptive_radius = None  # the subspace is estimated from the whole cube

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = []
        for i in range(x.shape[0]):
            m = None if mask is None else (mask[i] > 0.5).cpu().numpy()
            out.append(torch.from_numpy(subspace_tv(x[i].detach().cpu().numpy(), self.params, m, self.kernel)))
        return torch.stack(out).to(x.device)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.params).items())


class BicubicUpsampler(nn.Module):
    """Bicubic upsampling by ``scale`` (the classical SR baseline; same kernel as ``sr-bicubic``)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        self.receptive_radius = 2
        self.tile_align = 1

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` upsampled; an ``sr-ref`` task's reference ``ref`` is ignored (single-image upsampling)."""
        # antialias=True selects PyTorch's Keys a = -0.5 kernel (MATLAB imresize), as sr-bicubic uses
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False, antialias=True)


#: Solver settings per task, chosen by a small grid search on 3 source-test + 3 target-observed
#: cubes of the embedded benchmark (rank, lambda, rho; mu for complex noise; fill width for masks).
BASELINE_PARAMS: dict[str, SubspaceTVParams] = {
    "denoise-gaussian": SubspaceTVParams(),
    "denoise-complex": SubspaceTVParams(sparse_weight=0.15),
    "deblur": SubspaceTVParams(rank=6, tv_weight=5e-4, penalty=0.5, iterations=60),
    "bandmiss": SubspaceTVParams(rank=6, tv_weight=0.0, penalty=0.5, iterations=60),
    "inpaint": SubspaceTVParams(rank=4, tv_weight=0.002, penalty=0.5, iterations=60),
}


def baseline(task: str | Task, **overrides) -> nn.Module:
    """The classical baseline of ``task``: bicubic for super-resolution (the ``sr-ref`` reference unused), otherwise the subspace
    low-rank + TV solver with the task's blur kernel / mask handling; ``overrides`` change its
    :class:`SubspaceTVParams` (e.g. ``iterations=10``)."""
    task = get_task(task)
    if task.family in ("sr", "sr-ref"):
        if overrides:
            raise ValueError(f"the bicubic baseline takes no parameters; got {sorted(overrides)}")
        return BicubicUpsampler(task.scale)
    params = BASELINE_PARAMS.get(task.name, SubspaceTVParams())
    params = SubspaceTVParams(**{**asdict(params), **overrides})
    kernel = None
    if task.degradation == "blur":
        radius = task.params.get("radius", 15)
        taps = dg.gaussian_kernel(radius, task.params.get("sigma") or radius / 3)
        kernel = np.outer(taps, taps)
    return SubspaceTV(params, kernel)
