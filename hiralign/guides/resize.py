"""Resolution handling: fit proxies of any size to a generator's working size and map results back.

``fit_square`` scales a batch so its longer side equals the model size (aspect kept) and pads the
shorter side symmetrically (reflection where possible) to a square; ``restore`` crops the padding
away and resizes back to the original proxy size. ``pad_to_multiple`` / ``crop`` do the same for
fully convolutional models that only need sides divisible by their down-sampling factor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Placement:
    """Where an ``height x width`` image sits inside the square working canvas."""

    height: int
    width: int
    scaled_height: int
    scaled_width: int
    top: int
    left: int


def as_rgb_batch(proxy_rgbs) -> np.ndarray:
    """Proxies as float32 ``(N, 3, H, W)``; a single ``(3, H, W)`` image becomes a batch of one."""
    arr = np.asarray(proxy_rgbs, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"proxy RGBs must be (N, 3, H, W) or (3, H, W); got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("proxy RGBs contain NaN or infinite values")
    return arr


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic (antialiased when shrinking) resize of an ``(N, C, H, W)`` tensor."""
    if x.shape[-2:] == (height, width):
        return x
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking)


def pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflection padding, or edge replication where the image is too small to reflect."""
    if top == bottom == left == right == 0:
        return x
    reflectable = max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1]
    return F.pad(x, (left, right, top, bottom), mode="reflect" if reflectable else "replicate")


def fit_square(x: torch.Tensor, size: int) -> tuple[torch.Tensor, Placement]:
    """Scale ``(N, C, H, W)`` so the longer side is ``size`` and pad to ``size x size``."""
    height, width = x.shape[-2:]
    scale = size / max(height, width)
    sh, sw = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (size - sh) // 2, (size - sw) // 2
    canvas = pad(resize(x, sh, sw), top, size - sh - top, left, size - sw - left)
    return canvas, Placement(height, width, sh, sw, top, left)


def restore(x: torch.Tensor, placement: Placement) -> torch.Tensor:
    """Inverse of :func:`fit_square`: crop the padding and resize back to the original size."""
    p = placement
    inner = x[..., p.top:p.top + p.scaled_height, p.left:p.left + p.scaled_width]
    return resize(inner, p.height, p.width)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of ``(N, C, H, W)`` so both sides are divisible by ``multiple``."""
    height, width = x.shape[-2:]
    return pad(x, 0, -height % multiple, 0, -width % multiple)


def crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Top-left ``height x width`` window (undoes :func:`pad_to_multiple`)."""
    return x[..., :height, :width]
