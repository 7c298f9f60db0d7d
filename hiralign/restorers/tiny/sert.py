"""Spatial-spectral transformer denoiser, in the spirit of SERT.

Each block alternates two attentions over non-overlapping ``window x window`` patches:

* spatial attention: pixels of a window attend to each other (multi-head, learned position bias);
  every second block shifts the window grid by half a window (by padding, not by wrap-around
  rolling, so the model stays local);
* spectral attention: inside each window the feature channels attend to each other -- a
  ``C x C`` attention map built from channel correlations over the window's pixels, which models
  the spectral correlation of the embedded cube.

A gated depthwise feed-forward follows. Features come from a 3x3 embedding of all bands and return
through a 3x3 projection as a residual ``x_hat = y + g(y)``. Local: receptive radius
``2 * blocks * window + 2``; tiles must start at multiples of ``window``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hiralign.restorers import register
from hiralign.restorers.blocks import GatedFeedForward, LayerNorm2d, crop_to, from_windows, pad_to_multiple, to_windows


class WindowSpatialAttention(nn.Module):
    """Multi-head self-attention among the pixels of each window (optionally half-shifted grid)."""

    def __init__(self, channels: int, heads: int, window: int, shifted: bool):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.window, self.shifted = heads, window, shifted
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.position_bias = nn.Parameter(torch.zeros(heads, window * window, window * window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        padded, offset = pad_to_multiple(x, self.window, before=self.window // 2 if self.shifted else 0)
        windows = to_windows(padded, self.window)  # (M, T, C)
        m, t, _ = windows.shape
        q, k, v = self.qkv(windows).view(m, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5 + self.position_bias
        out = (attention.softmax(dim=-1) @ v).transpose(1, 2).reshape(m, t, c)
        out = from_windows(self.proj(out), self.window, n, *padded.shape[-2:])
        return crop_to(out, offset, h, w)


class WindowSpectralAttention(nn.Module):
    """Channel-to-channel (spectral) attention inside each window: ``softmax(tau * q_hat k_hat^T) v``
    with ``q_hat``, ``k_hat`` the L2-normalised channel responses over the window's pixels."""

    def __init__(self, channels: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        padded, offset = pad_to_multiple(x, self.window)
        windows = to_windows(padded, self.window)  # (M, T, C)
        m, t, _ = windows.shape
        q, k, v = self.qkv(windows).view(m, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 4, 1)  # (M, h, d, T)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(-2, -1)) * self.temperature  # (M, h, d, d)
        out = (attention.softmax(dim=-1) @ v).permute(0, 3, 1, 2).reshape(m, t, c)
        out = from_windows(self.proj(out), self.window, n, *padded.shape[-2:])
        return crop_to(out, offset, h, w)


class SpatialSpectralBlock(nn.Module):
    """Pre-norm residual block: window spatial attention, window spectral attention, gated FFN."""

    def __init__(self, channels: int, heads: int, window: int, shifted: bool):
        super().__init__()
        self.norm_spatial, self.norm_spectral, self.norm_ffn = (LayerNorm2d(channels) for _ in range(3))
        self.spatial = WindowSpatialAttention(channels, heads, window, shifted)
        self.spectral = WindowSpectralAttention(channels, heads, window)
        self.ffn = GatedFeedForward(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.spatial(self.norm_spatial(x))
        x = x + self.spectral(self.norm_spectral(x))
        return x + self.ffn(self.norm_ffn(x))


@register("tiny-sert", "denoise", {"small": {"features": 32, "blocks": 2, "heads": 2, "window": 8},
          "large": {"features": 64, "blocks": 6, "heads": 4, "window": 8}},
          description="spatial-spectral window transformer (SERT-style)")
class SpatialSpectralTransformer(nn.Module):
    """3x3 embedding, ``blocks`` spatial-spectral blocks with a long skip, 3x3 projection, residual."""

    def __init__(self, bands: int, features: int = 32, blocks: int = 2, heads: int = 2, window: int = 8):
        super().__init__()
        self.bands = bands
        self.embed = nn.Conv2d(bands, features, 3, padding=1)
        self.blocks = nn.Sequential(
            *(SpatialSpectralBlock(features, heads, window, shifted=bool(i % 2)) for i in range(blocks))
        )
        self.project = nn.Conv2d(features, bands, 3, padding=1)
        self.receptive_radius = 2 * blocks * window + 2  # per block: two window attentions + 3x3 FFN
        self.tile_align = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.embed(x)
        return x + self.project(features + self.blocks(features))
