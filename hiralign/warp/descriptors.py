"""Per-pixel patch descriptors of Eq. 9: RGB, chroma-normalised RGB and image gradients.

The descriptor of pixel (i, j) is the vectorised p x p patch centred there of the 8-channel image
``[R, G, B, w_chroma * rgb / (sum_c rgb + eps), w_grad * (d/dx, d/dy) of the grey level]``.
Gradients are central differences of the grey level (channel mean) with replicated borders; patches
at the image border replicate the edge pixels. Everything is one ``unfold``: no loop over pixels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Channels per pixel before patch vectorisation: RGB (3) + chroma (3) + grey gradients (2).
DESCRIPTOR_CHANNELS = 8


def chroma_normalised(rgb: torch.Tensor, eps: float) -> torch.Tensor:
    """``rgb / (sum_c rgb + eps)`` for a ``(3, H, W)`` image (Eq. 9)."""
    return rgb / (rgb.sum(dim=0, keepdim=True) + eps)


def grey_gradients(rgb: torch.Tensor) -> torch.Tensor:
    """Central-difference x and y gradients of the channel-mean grey level, ``(2, H, W)``, replicate border."""
    grey = rgb.mean(dim=0, keepdim=True)[None]  # (1, 1, H, W)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")[0, 0]
    gx = 0.5 * (padded[1:-1, 2:] - padded[1:-1, :-2])
    gy = 0.5 * (padded[2:, 1:-1] - padded[:-2, 1:-1])
    return torch.stack([gx, gy])


def descriptor_channels(rgb: torch.Tensor, w_chroma: float, w_grad: float, eps: float) -> torch.Tensor:
    """The 8-channel image whose p x p patches are the descriptors (Eq. 9)."""
    return torch.cat([rgb, w_chroma * chroma_normalised(rgb, eps), w_grad * grey_gradients(rgb)])


def gaussian_smooth(rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    """A ``(C, H, W)`` image convolved with a separable Gaussian of ``sigma`` px (reflected borders),
    truncated at 3 sigma or at the image size, whichever is smaller (and renormalised)."""
    if sigma <= 0:
        return rgb
    radius = min(max(1, int(math.ceil(3 * sigma))), min(rgb.shape[1:]) - 1)  # reflect padding needs radius < size
    if radius < 1:
        return rgb
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=rgb.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = rgb.shape[0]
    image = F.pad(rgb.float()[None], (radius, radius, radius, radius), mode="reflect")
    image = F.conv2d(image, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    image = F.conv2d(image, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return image[0]


#: Immerkaer's noise-estimation mask: the difference of two Laplacians, blind to locally linear images.
IMMERKAER_MASK = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))


def noise_sigma(rgb: torch.Tensor) -> float:
    """Standard deviation of white Gaussian noise in a ``(C, H, W)`` image, mean over channels
    (J. Immerkaer, "Fast Noise Variance Estimation", CVIU 64(2), 1996):
    ``sqrt(pi / 2) / (6 (H-2) (W-2)) * sum |image * M|``. Fine texture counts as noise too."""
    if min(rgb.shape[1:]) < 3:
        return 0.0
    mask = torch.tensor(IMMERKAER_MASK, dtype=torch.float32, device=rgb.device).view(1, 1, 3, 3)
    response = F.conv2d(rgb.float()[:, None], mask)  # valid region, (C, 1, H-2, W-2)
    return float(math.sqrt(math.pi / 2) / 6 * response.abs().mean())


def excess_noise(guide: torch.Tensor, proxy: torch.Tensor) -> float:
    """Noise of the guide beyond the proxy's own fine texture, ``sqrt(max(s_g^2 - s_p^2, 0))`` with
    :func:`noise_sigma` (both images on one intensity scale)."""
    return math.sqrt(max(noise_sigma(guide) ** 2 - noise_sigma(proxy) ** 2, 0.0))


def patch_descriptors(rgb: torch.Tensor, patch: int = 3, w_chroma: float = 0.25, w_grad: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Descriptors of every pixel of a ``(3, H, W)`` image: float32 ``(H*W, 8*patch^2)``, row-major pixels (Eq. 9)."""
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"patch_descriptors needs a (3, H, W) image, got shape {tuple(rgb.shape)}")
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be a positive odd integer, got {patch}")
    channels = descriptor_channels(rgb.float(), w_chroma, w_grad, eps)[None]
    half = patch // 2
    if half:
        channels = F.pad(channels, (half, half, half, half), mode="replicate")
    columns = F.unfold(channels, kernel_size=patch)  # (1, 8*p*p, H*W)
    return columns[0].T.contiguous()


def smoothed_descriptors(rgb: torch.Tensor, sigma: float, patch: int, w_chroma: float, w_grad: float, eps: float) -> torch.Tensor:
    """Eq. 9 descriptors (``patch`` side) of ``rgb`` smoothed by a Gaussian of ``sigma`` px (0 = as is)."""
    return patch_descriptors(gaussian_smooth(rgb, sigma), patch, w_chroma, w_grad, eps)
