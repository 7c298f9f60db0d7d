"""Residual spectral CNN: the fast CPU denoiser of the demo.

All ``B`` bands enter a 2-D CNN as channels, so every filter mixes the whole spectrum (the spectral
correlation is what separates signal from band-independent noise). A 3x3 embedding is followed by
residual blocks ``h + conv(relu(conv(relu(h))))`` and a 3x3 projection back to the bands, which
directly outputs the clean estimate. (A global input skip, ``x_hat = y - f(y)``, was measured on the
embedded benchmark to stall early training: with dark cubes and sigma up to 70/255 the noise
dominates the input, and predicting the clean cube converged several times faster.)
Purely convolutional with zero padding and no normalisation over space: local, with receptive
radius ``2 * blocks + 2``.
"""
from __future__ import annotations

import torch
from torch import nn

from hiralign.restorers import register
from hiralign.restorers.blocks import conv_stack_radius


class ResidualBlock(nn.Module):
    """``h + conv3x3(relu(conv3x3(relu(h))))``."""

    def __init__(self, features: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(features, features, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(features, features, 3, padding=1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


@register("spectral-cnn", "denoise", {"small": {"features": 48, "blocks": 3},
          "large": {"features": 96, "blocks": 8}},
          description="residual spectral CNN (bands as channels), fast on CPU")
class SpectralResidualCNN(nn.Module):
    """Residual spectral CNN denoiser: 3x3 embedding, ``blocks`` residual blocks, 3x3 projection."""

    def __init__(self, bands: int, features: int = 48, blocks: int = 3):
        super().__init__()
        self.bands = bands
        self.embed = nn.Conv2d(bands, features, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualBlock(features) for _ in range(blocks)))
        self.project = nn.Conv2d(features, bands, 3, padding=1)
        self.receptive_radius = conv_stack_radius([3] * (2 * blocks + 2))
        self.tile_align = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.blocks(self.embed(x)))
