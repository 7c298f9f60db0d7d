"""Spectral-correlation attention super-resolution network, in the spirit of ESSAformer.

The attention kernel between a query pixel ``i`` and a key pixel ``j`` is their spectral
correlation coefficient (Pearson correlation of the feature vectors: mean-centred, unit-norm dot
product ``s_ij`` in [-1, 1]), shifted to the non-negative weight ``(1 + s_ij) / 2``. Because this
weight is an inner product of ``[1, q_i]`` and ``[1, k_j]``, attention over *all* pixels factorises:

    out_i = (sum_j v_j + (sum_j v_j k_j^T) q_i) / (HW + (sum_j k_j)^T q_i)

which costs O(HW d^2) instead of O((HW)^2 d) -- global attention with linear complexity. The
network embeds the low-resolution cube, applies attention + gated feed-forward blocks, upsamples by
pixel shuffle and adds the bicubic upsampling of the input. The attention is global, so tiled
inference is an approximation for this model (``receptive_radius`` is ``None``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hiralign.restorers import register
from hiralign.restorers.blocks import GatedFeedForward, LayerNorm2d
from hiralign.restorers.tiny.sspsr import upsampler


class SpectralCorrelationAttention(nn.Module):
    """Global multi-head attention with the kernel ``(1 + corr(q_i, k_j)) / 2``, in linear time."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads or channels // heads < 2:
            raise ValueError(f"channels ({channels}) must split into {heads} heads of at least 2 channels")
        self.heads = heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def standardise(t: torch.Tensor) -> torch.Tensor:
        """Mean-centre and L2-normalise along the feature axis (dim -2): dot products are correlations."""
        return F.normalize(t - t.mean(dim=-2, keepdim=True), dim=-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.heads, c // self.heads, h * w).unbind(1)  # (N, heads, d, HW)
        q, k = self.standardise(q), self.standardise(k)
        key_value = v @ k.transpose(-2, -1)  # sum_j v_j k_j^T: (N, heads, d, d)
        numerator = v.sum(dim=-1, keepdim=True) + key_value @ q
        denominator = h * w + (k.sum(dim=-1, keepdim=True) * q).sum(dim=-2, keepdim=True)
        out = numerator / denominator.clamp_min(1e-6 * h * w)
        return self.proj(out.reshape(n, c, h, w))


class CorrelationBlock(nn.Module):
    """Pre-norm residual block: spectral-correlation attention, then gated feed-forward."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm_attention, self.norm_ffn = LayerNorm2d(channels), LayerNorm2d(channels)
        self.attention = SpectralCorrelationAttention(channels, heads)
        self.ffn = GatedFeedForward(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm_attention(x))
        return x + self.ffn(self.norm_ffn(x))


@register("tiny-essa", "sr", {"small": {"features": 32, "blocks": 2, "heads": 2},
          "large": {"features": 64, "blocks": 6, "heads": 4}},
          description="global spectral-correlation attention SR network (ESSAformer-style)")
class SpectralCorrelationSR(nn.Module):
    """Embedding, correlation-attention blocks with a long skip, pixel-shuffle upsampling, bicubic skip."""

    def __init__(self, bands: int, scale: int, features: int = 32, blocks: int = 2, heads: int = 2):
        super().__init__()
        self.bands, self.scale = bands, scale
        self.embed = nn.Conv2d(bands, features, 3, padding=1)
        self.blocks = nn.Sequential(*(CorrelationBlock(features, heads) for _ in range(blocks)))
        self.reconstruct = nn.Sequential(upsampler(features, scale), nn.Conv2d(features, bands, 3, padding=1))
        self.receptive_radius = None  # global attention
        self.tile_align = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.embed(x)
        skip = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return skip + self.reconstruct(features + self.blocks(features))
