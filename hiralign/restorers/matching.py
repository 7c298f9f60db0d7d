"""Parameter-free block matching: a dense coarse flow between two single-channel images.

Used by UAFL's coarse pyramid flow predictor (``hiralign.restorers.uafl``, ``cpfp="matching"``):

1. both images are average-pooled by ``stride``;
2. each is contrast-normalised locally (zero mean, unit variance in a ``window`` x ``window``
   neighbourhood: a gain and an offset of either image do not change it), and the cost of an
   integer displacement within ``radius`` pooled pixels is the ``window`` mean of their product
   (the images' relation need only be locally affine: the reference's luminance against the
   first abundance);
3. the displacement is the cost's arg-max, refined to sub-pixel precision by the vertex of the
   parabola through it and its two neighbours along each axis;
4. the field is smoothed by normalised convolution (H. Knutsson, C.-F. Westin, "Normalized and
   differential convolution", CVPR 1993): a Gaussian of ``sigma`` pooled pixels weighted by each
   match's confidence (its positive peak cost, squared), so flat regions take their flow from
   textured neighbours;
5. the field is upsampled back and expressed in full-resolution pixels.

The convention is :func:`hiralign.restorers.deform.flow_warp`'s: ``flow_warp(moving, flow) ~ fixed``.
Nothing here is learnt and no gradient flows through it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, [window // 2] * 4, mode="replicate"), window, stride=1)


def contrast_normalise(x: torch.Tensor, window: int, eps: float = 1e-8) -> torch.Tensor:
    """Local contrast normalisation: ``(x - mean) / std`` over each pixel's ``window`` x ``window``
    neighbourhood (border repeated): a gain and an offset of ``x`` leave it unchanged."""
    mean = _box_mean(x, window)
    var = (_box_mean(x * x, window) - mean ** 2).clamp_min(0.0)
    return (x - mean) / torch.sqrt(var + eps)


def correlation_cost(fixed: torch.Tensor, moving: torch.Tensor, radius: int, window: int) -> torch.Tensor:
    """``(N, (2 r + 1)^2, H, W)``: the ``window`` mean of ``n(fixed)(q) n(moving)(q + d)`` around each
    pixel, ``n`` = :func:`contrast_normalise`, for every displacement ``d = (dy, dx)`` in ``[-r, r]^2``,
    row-major (dy outer, dx inner), channels averaged."""
    h, w = fixed.shape[-2:]
    k = 2 * radius + 1
    f, m = contrast_normalise(fixed, window), F.pad(contrast_normalise(moving, window), [radius] * 4, mode="replicate")
    return torch.cat([_box_mean(f * m[:, :, i : i + h, j : j + w], window).mean(1, keepdim=True)
                      for i in range(k) for j in range(k)], dim=1)


def _parabola_vertex(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Sub-pixel offset in [-0.5, 0.5] of the peak of the parabola through three equally spaced costs."""
    curvature = left - 2.0 * centre + right
    peaked = (left < centre) & (right < centre)
    return torch.where(peaked, 0.5 * (left - right) / torch.where(peaked, curvature, -torch.ones_like(curvature)),
                       torch.zeros_like(centre)).clamp(-0.5, 0.5)


def argmax_flow(cost: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(flow, peak)``: the sub-pixel arg-max displacement ``(N, 2, H, W)`` (dx, dy) of a
    :func:`correlation_cost` volume and its peak cost ``(N, 1, H, W)``."""
    k = 2 * radius + 1
    peak, index = cost.max(dim=1, keepdim=True)
    iy, ix = index // k, index % k
    at = lambda dy, dx: cost.gather(1, (iy + dy).clamp(0, k - 1) * k + (ix + dx).clamp(0, k - 1))  # noqa: E731
    dx = ix.to(cost.dtype) - radius + _parabola_vertex(at(0, -1), peak, at(0, 1))
    dy = iy.to(cost.dtype) - radius + _parabola_vertex(at(-1, 0), peak, at(1, 0))
    return torch.cat([dx, dy], dim=1), peak


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian of ``sigma`` px (truncated at 3 sigma, border repeated), channel by channel."""
    r = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, [r, r, 0, 0], mode="replicate"), kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, [0, 0, r, r], mode="replicate"), kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def smooth_by_confidence(flow: torch.Tensor, confidence: torch.Tensor, sigma: float, eps: float = 1e-6) -> torch.Tensor:
    """Normalised convolution: ``G * (c flow) / G * c`` (step 4)."""
    return gaussian_blur(flow * confidence, sigma) / (gaussian_blur(confidence, sigma) + eps)


@torch.no_grad()
def block_matching_flow(fixed: torch.Tensor, moving: torch.Tensor, stride: int = 4, radius: int = 3, window: int = 11,
                        sigma: float = 8.0) -> torch.Tensor:
    """``(N, 2, H, W)`` flow (dx, dy, full-resolution px) with ``flow_warp(moving, flow) ~ fixed``
    for ``(N, 1, H, W)`` images (module docstring; displacements up to ``radius * stride`` px)."""
    if fixed.shape != moving.shape or fixed.dim() != 4 or fixed.shape[1] != 1:
        raise ValueError(f"block matching takes two (N, 1, H, W) images of one shape; got {tuple(fixed.shape)} and {tuple(moving.shape)}")
    pool = lambda t: F.avg_pool2d(t, stride, ceil_mode=True) if stride > 1 else t  # noqa: E731
    low, peak = argmax_flow(correlation_cost(pool(fixed), pool(moving), radius, window), radius)
    if sigma > 0:
        low = smooth_by_confidence(low, peak.clamp_min(0.0) ** 2, sigma)
    (h, w), (hl, wl) = fixed.shape[-2:], low.shape[-2:]
    scale = torch.tensor([w / wl, h / hl], device=low.device, dtype=low.dtype).view(1, 2, 1, 1)
    return scale * F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
