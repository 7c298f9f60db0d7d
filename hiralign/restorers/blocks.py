"""Layers shared by the learned restorers: padding to a multiple, channel LayerNorm, windows, FFN.

Everything here is spatially local (no global pooling, no wrap-around shifts), so the models built
from it stay translation-equivariant for shifts that are multiples of their ``tile_align``; that is
what makes tiled inference exact (:mod:`hiralign.restorers.inference`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int, before: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad ``x`` ``(N, C, H, W)`` by ``before`` pixels at the top/left, then at the
    bottom/right until H and W are multiples of ``multiple``. Returns the padded tensor and the
    (top, left) offset of the original pixels, so ``crop_to(y, offset, H, W)`` undoes it."""
    h, w = x.shape[-2:]
    bottom = (-(h + before)) % multiple
    right = (-(w + before)) % multiple
    if before == 0 and bottom == 0 and right == 0:
        return x, (0, 0)
    return F.pad(x, (before, right, before, bottom), mode="replicate"), (before, before)


def crop_to(x: torch.Tensor, offset: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """The ``height x width`` window of ``x`` starting at ``offset`` (inverse of :func:`pad_to_multiple`)."""
    top, left = offset
    return x[..., top : top + height, left : left + width]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an ``(N, C, H, W)`` map, independently at every pixel."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GatedFeedForward(nn.Module):
    """Pointwise expansion, a depthwise 3x3 convolution and a GELU gate, then projection back."""

    def __init__(self, channels: int, expansion: float = 2.0):
        super().__init__()
        hidden = int(channels * expansion)
        self.expand = nn.Conv2d(channels, 2 * hidden, 1)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.depthwise(self.expand(x)).chunk(2, dim=1)
        return self.project(value * F.gelu(gate))


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(N, C, H, W)`` with H, W multiples of ``window`` -> ``(N * nH * nW, window * window, C)``."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // window, window, w // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window * window, c)


def from_windows(windows: torch.Tensor, window: int, n: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_windows`: ``(N * nH * nW, window * window, C)`` -> ``(N, C, H, W)``."""
    c = windows.shape[-1]
    x = windows.view(n, h // window, w // window, window, window, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)


def conv_stack_radius(kernel_sizes: list[int]) -> int:
    """Receptive-field radius (pixels) of stride-1 convolutions applied in sequence."""
    return sum(k // 2 for k in kernel_sizes)
