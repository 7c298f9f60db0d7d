"""3-D convolution + quasi-recurrent pooling denoiser, in the spirit of QRNN3D.

The cube is treated as a 3-D volume ``(bands, H, W)`` with one feature channel. Each layer computes
a candidate ``z`` and a forget gate ``f`` with a 3x3x3 convolution, then pools along the spectral
axis with the quasi-recurrence ``h_b = f_b * h_{b-1} + (1 - f_b) * z_b``; directions alternate
between layers so every band sees the whole spectrum. Weights do not depend on the band count, so
one model applies to any number of bands. Spatially local: receptive radius ``layers + 1``.
"""
from __future__ import annotations

import torch
from torch import nn

from hiralign.restorers import register


class QuasiRecurrentLayer(nn.Module):
    """3x3x3 convolutional gates followed by recurrent pooling along the band axis."""

    def __init__(self, in_channels: int, out_channels: int, reverse: bool):
        super().__init__()
        self.gates = nn.Conv3d(in_channels, 2 * out_channels, 3, padding=1)
        self.reverse = reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, f = self.gates(x).chunk(2, dim=1)  # (N, C, B, H, W) each
        # Band-major contiguous slices keep the loop's elementwise ops and their gradients cheap.
        z = torch.tanh(z).transpose(0, 2).contiguous().unbind(0)
        f = torch.sigmoid(f).transpose(0, 2).contiguous().unbind(0)
        order = range(len(z) - 1, -1, -1) if self.reverse else range(len(z))
        h = torch.zeros_like(z[0])
        states: list[torch.Tensor] = [h] * len(z)
        for b in order:
            h = f[b] * h + (1 - f[b]) * z[b]  # quasi-recurrent pooling along the bands
            states[b] = h
        return torch.stack(states, dim=0).transpose(0, 2)

@register("tiny-qrnn3d", "denoise", {"small": {"features": 12, "layers": 4},
          "large": {"features": 24, "layers": 8}},
          description="3-D conv + quasi-recurrent spectral pooling (QRNN3D-style), band-count agnostic")
class QuasiRecurrent3D(nn.Module):
    """Residual stack of alternating-direction quasi-recurrent 3-D layers; ``x_hat = y + g(y)``."""

    def __init__(self, bands: int, features: int = 12, layers: int = 4):
        super().__init__()
        self.bands = bands
        self.layers = nn.ModuleList(
            QuasiRecurrentLayer(1 if i == 0 else features, features, reverse=bool(i % 2)) for i in range(layers)
        )
        self.head = nn.Conv3d(features, 1, 3, padding=1)
        self.receptive_radius = layers + 1
        self.tile_align = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1)
        for i, layer in enumerate(self.layers):
            h = layer(h) if i == 0 else h + layer(h)
        return x + self.head(h).squeeze(1)
