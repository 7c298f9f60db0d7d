"""Residual spectral CNN: the fast CPU denoiser of the demo.

All ``B`` bands enter a 2-D CNN as channels, so every filter mixes the whole spectrum (the spectral
correlation is what separates signal from band-independent noise). The network predicts the noise
and subtracts it from the input (residual learning, ``x_hat = y - f(y)``). Purely convolutional with
zero padding and no normalisation over space: local with receptive radius ``depth + 2``.
"""
from __future__ import annotations

import torch
from torch import nn

from hiralign.restorers import register
from hiralign.restorers.blocks import conv_stack_radius


@register("spectral-cnn", "denoise", small={"features": 48, "depth": 5}, large={"features": 96, "depth": 12},
          description="residual spectral CNN (bands as channels), fast on CPU")
class SpectralResidualCNN(nn.Module):
    """Residual spectral CNN denoiser: ``x_hat = y - f(y)`` with ``f`` a ``depth``-layer 3x3 CNN."""

    def __init__(self, bands: int, features: int = 48, depth: int = 5):
        super().__init__()
        self.bands = bands
        layers: list[nn.Module] = [nn.Conv2d(bands, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, bands, 3, padding=1))
        self.noise = nn.Sequential(*layers)
        self.receptive_radius = conv_stack_radius([3] * (depth + 2))
        self.tile_align = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.noise(x)
