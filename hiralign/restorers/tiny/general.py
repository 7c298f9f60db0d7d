"""Mask-aware U-Net: one general restorer for deblurring, band completion and inpainting.

The observation mask (1 = observed) is an explicit input: the network sees ``[x * mask, mask]``
(2B channels), so it knows which values to trust and which to fill. A ``levels``-deep U-Net
(stride-2 convolutions down, pixel-shuffle up, additive skips, residual units) enlarges the
receptive field enough for a radius-15 blur and for 90% missing pixels, and the output is a residual
on the observation. Local: receptive radius ``receptive_radius``; tiles must start at multiples of
``2 ** levels``.
"""
from __future__ import annotations

import torch
from torch import nn

from hiralign.restorers import register
from hiralign.restorers.blocks import crop_to, pad_to_multiple


class ResidualUnit(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def unet_radius(levels: int) -> int:
    """Receptive radius in input pixels: head (2) + per level (down 1, unit 2, up 1 at the coarser
    scale; unit 2 at this scale) + tail (1) + one coarsest pixel of sampling slack."""
    per_level = sum(2**lvl * 1 + 2 ** (lvl + 1) * 2 + 2 ** (lvl + 1) * 1 + 2**lvl * 2 for lvl in range(levels))
    return 2 + per_level + 1 + 2**levels


@register("tiny-unet", "general", {"small": {"features": 24, "levels": 2},
          "large": {"features": 32, "levels": 3}},
          description="mask-aware U-Net for deblur / band completion / inpainting (mask as input)")
class MaskAwareUNet(nn.Module):
    """U-Net on ``[x * mask, mask]`` returning ``x + g(x, mask)``; ``mask`` defaults to all observed."""

    def __init__(self, bands: int, features: int = 24, levels: int = 2):
        super().__init__()
        self.bands, self.levels = bands, levels
        self.head = nn.Sequential(nn.Conv2d(2 * bands, features, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(features, features, 3, padding=1))
        widths = [features * 2**lvl for lvl in range(levels + 1)]
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), nn.ReLU(inplace=True),
                          ResidualUnit(widths[i + 1]))
            for i in range(levels)
        )
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i + 1], widths[i] * 4, 3, padding=1), nn.PixelShuffle(2))
            for i in range(levels)
        )
        self.merge = nn.ModuleList(ResidualUnit(widths[i]) for i in range(levels))
        self.tail = nn.Conv2d(features, bands, 3, padding=1)
        self.receptive_radius = unet_radius(levels)
        self.tile_align = 2**levels

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = torch.ones_like(x) if mask is None else mask.to(x.dtype)
        h, w = x.shape[-2:]
        inputs, offset = pad_to_multiple(torch.cat([x * mask, mask], dim=1), self.tile_align)
        skips = [self.head(inputs)]
        for down in self.down:
            skips.append(down(skips[-1]))
        features = skips.pop()
        for level in reversed(range(self.levels)):
            features = self.merge[level](self.up[level](features) + skips.pop())
        return x + crop_to(self.tail(features), offset, h, w)
