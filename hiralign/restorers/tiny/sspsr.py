"""Grouped spatial-spectral super-resolution network, in the spirit of SSPSR.

The bands are split into overlapping groups of ``group`` neighbouring bands. One branch network,
shared by all groups (the groups are folded into the batch, i.e. a group convolution with tied
weights), extracts spatial-spectral features of each group and upsamples it by ``branch_scale``;
the groups are put back in place, averaging bands that several groups cover. A trunk over all
bands refines the result and upsamples the rest of the way; the bicubic upsampling of the input is
added as a global skip, so the network learns the high-frequency residual. Local: receptive radius
``receptive_radius`` low-resolution pixels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hiralign.restorers import register


class SpatialSpectralResBlock(nn.Module):
    """A spatial residual unit (3x3 conv, ReLU, 3x3 conv, scaled by 0.1) then a spectral one (1x1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(channels, channels, 3, padding=1))
        self.spectral = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + 0.1 * self.spatial(x)
        return x + 0.1 * self.spectral(x)


def upsampler(channels: int, scale: int) -> nn.Module:
    """3x3 convolution to ``channels * scale^2`` then pixel shuffle (identity for ``scale`` 1)."""
    if scale == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(channels, channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale))


def band_groups(bands: int, group: int, overlap: int) -> list[int]:
    """Start indices of groups of ``group`` bands overlapping by ``overlap``, the last one flush
    with the final band (so every band is covered)."""
    group = min(group, bands)
    step = max(1, group - overlap)
    starts = list(range(0, bands - group, step))
    return starts + [bands - group]


def split_scale(scale: int) -> tuple[int, int]:
    """(branch, trunk) upsampling factors: the branch does x2 when the trunk can do the rest."""
    if scale % 2 == 0 and scale > 2:
        return 2, scale // 2
    return 1, scale


@register("tiny-sspsr", "sr", {"small": {"features": 32, "group": 8, "overlap": 2, "branch_blocks": 2, "trunk_blocks": 2},
          "large": {"features": 64, "group": 8, "overlap": 2, "branch_blocks": 4, "trunk_blocks": 4}},
          description="grouped spatial-spectral SR network with shared branches (SSPSR-style)")
class GroupedSpectralSR(nn.Module):
    """Shared group branch (x branch_scale) + full-band trunk (x trunk_scale) + bicubic skip."""

    def __init__(self, bands: int, scale: int, features: int = 32, group: int = 8, overlap: int = 2,
                 branch_blocks: int = 2, trunk_blocks: int = 2):
        super().__init__()
        self.bands, self.scale = bands, scale
        self.group = min(group, bands)
        self.starts = band_groups(bands, self.group, overlap)
        self.branch_scale, self.trunk_scale = split_scale(scale)
        self.branch = nn.Sequential(
            nn.Conv2d(self.group, features, 3, padding=1),
            *(SpatialSpectralResBlock(features) for _ in range(branch_blocks)),
            upsampler(features, self.branch_scale),
            nn.Conv2d(features, self.group, 3, padding=1),
        )
        self.trunk = nn.Sequential(
            nn.Conv2d(bands, features, 3, padding=1),
            *(SpatialSpectralResBlock(features) for _ in range(trunk_blocks)),
            upsampler(features, self.trunk_scale),
            nn.Conv2d(features, bands, 3, padding=1),
        )
        self.register_buffer("placement", self._placement(), persistent=False)
        branch_radius = 1 + 2 * branch_blocks + (self.branch_scale > 1) + 1 / self.branch_scale
        trunk_radius = (1 + 2 * trunk_blocks + (self.trunk_scale > 1)) / self.branch_scale + 1 / scale
        self.receptive_radius = math.ceil(branch_radius + trunk_radius) + 2  # + bicubic skip
        self.tile_align = 1

    def _placement(self) -> torch.Tensor:
        """``(B, G, group)`` weights that put every group's bands back in place, averaged over overlaps."""
        weights = torch.zeros(self.bands, len(self.starts), self.group)
        for g, start in enumerate(self.starts):
            weights[start + torch.arange(self.group), g, torch.arange(self.group)] = 1.0
        return weights / weights.sum(dim=(1, 2), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        groups = torch.stack([x[:, s : s + self.group] for s in self.starts], dim=1)  # (N, G, g, h, w)
        branched = self.branch(groups.flatten(0, 1)).unflatten(0, (n, len(self.starts)))
        merged = torch.einsum("ngchw,bgc->nbhw", branched, self.placement)
        skip = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return skip + self.trunk(merged)
