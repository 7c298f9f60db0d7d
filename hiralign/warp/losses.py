"""The terms of the alignment objective Eq. 20 and the descriptor-distance prior Eq. 21.

Images are ``([P,] 3, H, W)`` torch tensors on a common intensity scale (about [0, 1]). Each function
reduces the last three axes: a scalar tensor for one image, ``(P,)`` for a batch of P independent
pairs. :class:`~hiralign.warp.optimise.AlignmentObjective` weights and sums the active terms.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hiralign.warp import transport

#: SSIM stabilisers for data range 1 (Wang et al. 2004).
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def rgb_l1(image: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Mean absolute RGB difference (first term of Eq. 20)."""
    return (image - guide).abs().mean(dim=(-3, -2, -1))


def patch_coverage(height: int, width: int, patch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Weights ``(H, W)`` summing to 1: how often each pixel appears among all valid p x p patches.

    The mean over the unfolded patch matrices of ``|image - guide|`` (Eq. 20) equals
    ``sum_p coverage(p) * |image - guide|(p)`` with these weights, without materialising p^2 copies.
    """
    patch = min(patch, height, width)
    patch -= 1 - patch % 2  # keep it odd on images smaller than the patch
    ones = torch.ones((1, 1, height - patch + 1, width - patch + 1), device=device)
    counts = F.conv_transpose2d(ones, torch.ones((1, 1, patch, patch), device=device))[0, 0]
    return counts / counts.sum()


def patch_l1(image: torch.Tensor, guide: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """L1 between unfolded p x p RGB patches (Eq. 20), via the patch ``coverage`` weights."""
    return ((image - guide).abs().sum(dim=-3) * coverage).sum(dim=(-2, -1)) / image.shape[-3]


def linear_bin_shares(values: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Parzen-window bin memberships of values in [0, 1] with the triangular (first-order B-spline)
    kernel one bin wide on each side: each value is shared linearly between its two nearest bin
    centres ``lo`` and ``lo + 1``, ``1 - frac`` and ``frac``. Memberships sum to one and their
    derivative is non-zero everywhere inside [0, 1]. Returns (``lo``, ``frac``)."""
    position = values * (bins - 1)
    lo = position.detach().floor().clamp_(0, bins - 2)
    return lo.long(), position - lo


def soft_joint_histogram(a: torch.Tensor, b: torch.Tensor, bins: int) -> torch.Tensor:
    """Parzen joint histograms ``(G, bins, bins)`` of paired values ``a``, ``b`` (G, n) in [0, 1]:
    ``W_a^T W_b / n`` with the triangular-window memberships W, accumulated from each value's two
    non-zero memberships (four products per pixel) instead of the dense (n, bins) matrices."""
    groups, n = a.shape
    lo_a, fa = linear_bin_shares(a, bins)
    lo_b, fb = linear_bin_shares(b, bins)
    base = (torch.arange(groups, device=a.device) * bins * bins)[:, None] + lo_a * bins + lo_b  # (G, n) cell (lo_a, lo_b)
    shares = torch.stack([(1 - fa) * (1 - fb), (1 - fa) * fb, fa * (1 - fb), fa * fb])  # cells +0, +1, +bins, +bins+1
    cells = torch.stack([base, base + 1, base + bins, base + bins + 1])
    joint = torch.zeros(groups * bins * bins, dtype=a.dtype, device=a.device).index_add(0, cells.reshape(-1), shares.reshape(-1))
    return joint.reshape(groups, bins, bins) / n


def mutual_information_loss(image: torch.Tensor, guide: torch.Tensor, bins: int, sample: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable MI loss (Eq. 20): ``1 - 2 MI / (H_image + H_guide)`` per channel, averaged.

    MI comes from Parzen (triangular-window) soft joint histograms of the two images' values (clamped to [0, 1]) on
    the pixels listed in ``sample`` (all pixels if None; the same pixels for every pair of a batch).
    0 means each channel of ``image`` determines the guide's; 1 means independence.
    """
    lead = image.shape[:-3]
    a = image.reshape(-1, image.shape[-1] * image.shape[-2])
    b = guide.reshape(-1, guide.shape[-1] * guide.shape[-2])
    if sample is not None:
        a, b = a[:, sample], b[:, sample]
    joint = soft_joint_histogram(a.clamp(0.0, 1.0), b.clamp(0.0, 1.0), bins)  # (P * 3, bins, bins)
    pa, pb = joint.sum(dim=-1), joint.sum(dim=-2)
    tiny = 1e-10
    mi = (joint * (torch.log(joint + tiny) - torch.log(pa[..., :, None] * pb[..., None, :] + tiny))).sum(dim=(-2, -1))
    ha = -(pa * torch.log(pa + tiny)).sum(dim=-1)
    hb = -(pb * torch.log(pb + tiny)).sum(dim=-1)
    return (1.0 - 2.0 * mi / (ha + hb + tiny)).reshape(*lead, -1).mean(dim=-1)


def gaussian_kernel_1d(size: int, sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur_valid(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of ``(P, C, H, W)``, valid region only."""
    channels = x.shape[1]
    size = kernel.numel()
    x = F.conv2d(x, kernel.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def ssim_kernel(window: int, sigma: float, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 1-D Gaussian SSIM window, shortened (kept odd) on images smaller than ``window``."""
    size = min(window, height, width)
    size -= 1 - size % 2
    return gaussian_kernel_1d(size, sigma, device)


def ssim_guide_statistics(guide: torch.Tensor, kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and variance ``(P, C, h, w)`` of the (fixed) guide ``([P,] C, H, W)``, computed once per optimisation."""
    channels, height, width = guide.shape[-3:]
    stats = gaussian_blur_valid(torch.cat([guide, guide * guide], dim=-3).reshape(-1, 2 * channels, height, width), kernel)
    mean, square = stats.split(channels, dim=1)
    return mean, square - mean * mean


def ssim_loss(image: torch.Tensor, guide: torch.Tensor, window: int, sigma: float,
              guide_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``1 - SSIM`` with a Gaussian window (Eq. 20), mean over channels and valid positions.

    ``guide_stats`` (from :func:`ssim_guide_statistics`) skips re-filtering the fixed guide.
    """
    lead, (channels, height, width) = image.shape[:-3], image.shape[-3:]
    kernel = ssim_kernel(window, sigma, height, width, image.device)
    my, vy = ssim_guide_statistics(guide, kernel) if guide_stats is None else guide_stats
    stacked = torch.cat([image, image * image, image * guide], dim=-3).reshape(-1, 3 * channels, height, width)
    mx, xx, xy = gaussian_blur_valid(stacked, kernel).split(channels, dim=1)
    vx, cxy = xx - mx * mx, xy - mx * my
    ssim_map = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))
    return 1.0 - ssim_map.mean(dim=(1, 2, 3)).reshape(lead)


def image_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x and y of a ``([P,] C, H, W)`` image."""
    return image[..., :, 1:] - image[..., :, :-1], image[..., 1:, :] - image[..., :-1, :]


def gradient_l1(image: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """L1 between the images' x and y gradients (Eq. 20); differences are linear, so it is the TV of the residual."""
    return gradient_magnitude_l1(image - guide)


def coordinate_tv(expected: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of the normalised coordinate field (Eq. 18, 20): y / (H-1), x / (W-1)."""
    height, width = expected.shape[-2:]
    scale = expected.new_tensor([1.0 / max(height - 1, 1), 1.0 / max(width - 1, 1)]).view(2, 1, 1)
    return gradient_magnitude_l1(expected * scale)


def displacement_curvature(expected: torch.Tensor) -> torch.Tensor:
    """Second-order anisotropic TV of the displacement ``u(p) - p`` (Eq. 18): mean absolute second
    differences (xx, yy, xy), normalised like :func:`coordinate_tv`. Zero for every affine map -- a
    translation, rotation, zoom or flip -- so it penalises only bends and tears of the mapping."""
    height, width = expected.shape[-2:]
    scale = expected.new_tensor([1.0 / max(height - 1, 1), 1.0 / max(width - 1, 1)]).view(2, 1, 1)
    d = transport.displacement_field(expected) * scale
    total = d.new_zeros(d.shape[:-3])
    axes = (-3, -2, -1)
    if width > 2:
        total = total + (d[..., 2:] - 2 * d[..., 1:-1] + d[..., :-2]).abs().mean(dim=axes)
    if height > 2:
        total = total + (d[..., 2:, :] - 2 * d[..., 1:-1, :] + d[..., :-2, :]).abs().mean(dim=axes)
    if height > 1 and width > 1:
        total = total + (d[..., 1:, 1:] - d[..., 1:, :-1] - d[..., :-1, 1:] + d[..., :-1, :-1]).abs().mean(dim=axes)
    return total


def gradient_magnitude_l1(field: torch.Tensor) -> torch.Tensor:
    """``mean |d/dx field| + mean |d/dy field|`` (zero along a dimension of size 1)."""
    fx, fy = image_gradients(field)
    total = field.new_zeros(field.shape[:-3])
    if fx.shape[-1]:
        total = total + fx.abs().mean(dim=(-3, -2, -1))
    if fy.shape[-2]:
        total = total + fy.abs().mean(dim=(-3, -2, -1))
    return total


def descriptor_prior(alpha: torch.Tensor, normalised_distance: torch.Tensor) -> torch.Tensor:
    """Eq. 21: ``(1/N) sum_p sum_k alpha_k(p) * normalised d_k(p)`` for ``([P,] N, K)`` weights."""
    return (alpha * normalised_distance).sum(dim=(-2, -1)) / alpha.shape[-2]


#: Eq. 20 term names, their weight fields in :class:`~hiralign.warp.params.WarpParams`.
TERM_WEIGHTS = {
    "rgb": "lambda_rgb",
    "patch": "lambda_patch",
    "mi": "lambda_mi",
    "ssim": "lambda_ssim",
    "grad": "lambda_grad",
    "tv": "lambda_tv",
    "prior": "lambda_prior",
}


def active_terms(params) -> dict[str, float]:
    """Eq. 20 terms with a non-zero weight (a zero weight switches a term off for ablation). In coherent
    mode the ``tv`` slot holds the displacement curvature, weighted by ``lambda_flow`` (as scaled by the guide model)."""
    weights = {term: float(getattr(params, name)) for term, name in TERM_WEIGHTS.items()}
    if params.coherent:
        weights["tv"] = float(params.lambda_flow)
    return {term: w for term, w in weights.items() if w > 0 and math.isfinite(w)}
