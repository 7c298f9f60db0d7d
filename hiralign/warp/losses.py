"""The terms of the alignment objective Eq. 20 and the descriptor-distance prior Eq. 21.

Images are ``(3, H, W)`` torch tensors on a common intensity scale (about [0, 1]). Each function
returns a scalar tensor; :func:`alignment_objective` weights and sums the active ones.
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
    return (image - guide).abs().mean()


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
    return ((image - guide).abs().sum(dim=0) * coverage).sum() / image.shape[0]


def soft_histogram_weights(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Parzen-window bin memberships ``(..., n, bins)`` of values in [0, 1].

    The window is the triangular (first-order B-spline) kernel one bin wide on each side: each value
    is shared linearly between its two nearest bin centres, memberships sum to one, and the
    derivative is non-zero everywhere inside [0, 1].
    """
    centres = torch.linspace(0.0, 1.0, bins, device=values.device)
    return torch.relu(1.0 - (values[..., None] - centres).abs() * (bins - 1))


def mutual_information_loss(image: torch.Tensor, guide: torch.Tensor, bins: int, sample: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable MI loss (Eq. 20): ``1 - 2 MI / (H_image + H_guide)`` per channel, averaged.

    MI comes from Parzen (triangular-window) soft joint histograms of the two images' values (clamped to [0, 1]) on
    the pixels listed in ``sample`` (all pixels if None). 0 means each channel of ``image``
    determines the guide's; 1 means independence.
    """
    a = image.reshape(3, -1)
    b = guide.reshape(3, -1)
    if sample is not None:
        a, b = a[:, sample], b[:, sample]
    wa = soft_histogram_weights(a.clamp(0.0, 1.0), bins)  # (3, n, bins)
    wb = soft_histogram_weights(b.clamp(0.0, 1.0), bins)
    joint = torch.bmm(wa.transpose(1, 2), wb) / a.shape[1]  # (3, bins, bins)
    pa, pb = joint.sum(dim=2), joint.sum(dim=1)
    tiny = 1e-10
    mi = (joint * (torch.log(joint + tiny) - torch.log(pa[:, :, None] * pb[:, None, :] + tiny))).sum(dim=(1, 2))
    ha = -(pa * torch.log(pa + tiny)).sum(dim=1)
    hb = -(pb * torch.log(pb + tiny)).sum(dim=1)
    return (1.0 - 2.0 * mi / (ha + hb + tiny)).mean()


def gaussian_kernel_1d(size: int, sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur_valid(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of ``(1, C, H, W)``, valid region only."""
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
    """Local mean and variance of the (fixed) guide, computed once per optimisation."""
    stats = gaussian_blur_valid(torch.cat([guide, guide * guide])[None], kernel)
    mean, square = stats.split(guide.shape[0], dim=1)
    return mean, square - mean * mean


def ssim_loss(image: torch.Tensor, guide: torch.Tensor, window: int, sigma: float,
              guide_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``1 - SSIM`` with a Gaussian window (Eq. 20), mean over channels and valid positions.

    ``guide_stats`` (from :func:`ssim_guide_statistics`) skips re-filtering the fixed guide.
    """
    kernel = ssim_kernel(window, sigma, image.shape[1], image.shape[2], image.device)
    my, vy = ssim_guide_statistics(guide, kernel) if guide_stats is None else guide_stats
    channels = image.shape[0]
    stats = gaussian_blur_valid(torch.cat([image, image * image, image * guide])[None], kernel)
    mx, xx, xy = stats.split(channels, dim=1)
    vx, cxy = xx - mx * mx, xy - mx * my
    ssim_map = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))
    return 1.0 - ssim_map.mean()


def image_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x and y of a ``(C, H, W)`` image."""
    return image[:, :, 1:] - image[:, :, :-1], image[:, 1:, :] - image[:, :-1, :]


def gradient_l1(image: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """L1 between the images' x and y gradients (Eq. 20); differences are linear, so it is the TV of the residual."""
    return gradient_magnitude_l1(image - guide)


def coordinate_tv(expected: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of the normalised coordinate field (Eq. 18, 20): y / (H-1), x / (W-1)."""
    _, height, width = expected.shape
    scale = expected.new_tensor([1.0 / max(height - 1, 1), 1.0 / max(width - 1, 1)]).view(2, 1, 1)
    return gradient_magnitude_l1(expected * scale)


def displacement_curvature(expected: torch.Tensor) -> torch.Tensor:
    """Second-order anisotropic TV of the displacement ``u(p) - p`` (Eq. 18): mean absolute second
    differences (xx, yy, xy), normalised like :func:`coordinate_tv`. Zero for every affine map -- a
    translation, rotation, zoom or flip -- so it penalises only bends and tears of the mapping."""
    _, height, width = expected.shape
    scale = expected.new_tensor([1.0 / max(height - 1, 1), 1.0 / max(width - 1, 1)]).view(2, 1, 1)
    d = transport.displacement_field(expected) * scale
    total = d.new_zeros(())
    if width > 2:
        total = total + (d[:, :, 2:] - 2 * d[:, :, 1:-1] + d[:, :, :-2]).abs().mean()
    if height > 2:
        total = total + (d[:, 2:] - 2 * d[:, 1:-1] + d[:, :-2]).abs().mean()
    if height > 1 and width > 1:
        total = total + (d[:, 1:, 1:] - d[:, 1:, :-1] - d[:, :-1, 1:] + d[:, :-1, :-1]).abs().mean()
    return total


def gradient_magnitude_l1(field: torch.Tensor) -> torch.Tensor:
    """``mean |d/dx field| + mean |d/dy field|`` (zero along a dimension of size 1)."""
    fx, fy = image_gradients(field)
    total = field.new_zeros(())
    if fx.numel():
        total = total + fx.abs().mean()
    if fy.numel():
        total = total + fy.abs().mean()
    return total


def descriptor_prior(alpha: torch.Tensor, normalised_distance: torch.Tensor) -> torch.Tensor:
    """Eq. 21: ``(1/N) sum_p sum_k alpha_k(p) * normalised d_k(p)``."""
    return (alpha * normalised_distance).sum() / alpha.shape[0]


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
