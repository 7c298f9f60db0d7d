"""SERT: Spectral Enhanced Rectangle Transformer for hyperspectral image denoising.

Re-implementation of Miaoyu Li, Ji Liu, Ying Fu, Yulun Zhang, Dejing Dou, "Spectral Enhanced
Rectangle Transformer for Hyperspectral Image Denoising", CVPR 2023, arXiv:2304.00844, written from
the paper; layer layout, constants and state_dict key names follow the official repository
(github.com/MyuLi/SERT, ``models/sert.py`` and the builders ``sert_base`` / ``sert_real`` /
``sert_urban`` in ``models/__init__.py``), so the released checkpoints load with ``strict=True``.

Architecture (paper Sec. 3, Fig. 2)
-----------------------------------
* A 3x3 convolution embeds all ``B`` bands into ``C`` feature channels (``conv_first``); the
  spectral cube is treated as a 2-D multi-channel image.
* ``len(depths)`` residual groups (``layers``); group ``i`` stacks ``depths[i]`` transformer
  blocks working on non-overlapping ``window_sizes[i]`` square windows, every second block with the
  window grid shifted by half a window (cyclic ``torch.roll`` as in Swin, *without* an attention
  mask), and ends with a 3x3 convolution and a group residual.
* Each block (Sec. 3.2) is pre-norm: ``x + SERA(LN(x))`` then ``x + MLP(LN(x))``. Its attention
  (Eq. 3-6) sums two branches on the same normalised window tokens:

  - **rectangle self-attention** (Sec. 3.2, Eq. 3-4): ``q, k, v`` from one linear layer; half of
    the channels attend inside vertical ``window x split`` rectangles, the other half inside
    horizontal ``split x window`` rectangles (``split_sizes[i]``), each with a locally-enhanced
    positional encoding (a depthwise 3x3 convolution of ``v`` inside the rectangle, CSWin's LePE);
    the two halves are concatenated and their channels interleaved in groups of four;
  - **spectral enhancement** (Sec. 3.3, Eq. 5-6): a channel-reducing MLP, then the window's tokens
    are average-pooled to one spectral vector, projected to a ``C / down_rank`` low-rank code that
    attends (softmax, scale ``r^-1/2``) over ``memory_blocks`` learned low-rank prototypes (the
    memory unit), and the recalled code is lifted back to ``C`` gates (sigmoid) that rescale the
    tokens channel-wise; added with weight ``weight_factor`` (0.1).

* ``output`` (3x3, no bias) on features + embedding, then ``conv_delasta`` (3x3) back to ``B``
  bands, plus the noisy input (global residual).

Input size and tiling
---------------------
Like the official forward, the input is reflect-padded at the bottom/right to a multiple of 16 (and
of every window size), run, and cropped back, so any ``H, W`` work (``input_multiple = 1``).
``tile_align`` is that multiple, ``lcm(16, *window_sizes)`` (32 for the paper configuration):
tiles starting there see the same window grid as the full image. Tiled inference is nevertheless *not* exact
(``receptive_radius = None``): the shifted-window blocks roll cyclically without a mask, so a
window at the bottom/right border mixes the top/left border's pixels into it -- output near one
image edge depends on the opposite edge, whatever the overlap -- and the spectral enhancement
pools whole windows, so the receptive field also grows by a full window (up to 32 px) per block
(hundreds of pixels for 18 blocks). Use ``blend="window"`` with a generous overlap.

Deviations from the official code
---------------------------------
* Padding: official pads to a multiple of 16 with the axes swapped (``F.pad(x, (0, pad_h, 0,
  pad_w))`` pads W by ``pad_h`` and H by ``pad_w``), which only works for square inputs whose
  padded size is a multiple of every window (32). Here each axis is padded by its own amount to a
  multiple of ``lcm(16, *window_sizes)``; wherever the official forward runs, both pad
  identically and the outputs agree. Where an axis is shorter than the padding it needs (reflect impossible),
  replicate padding is used instead (the official code fails there).
* No dropout layers (all dropout rates are 0 in the official configurations); stochastic depth
  (``drop_path_rate``, linearly increasing over the blocks, default 0.1) is kept.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: ICVL configuration of the paper (official ``sert_base``; 31 bands).
PAPER_CONFIG: dict = dict(dim=96, window_sizes=(16, 32, 32), depths=(6, 6, 6), num_heads=(6, 6, 6),
                          split_sizes=(1, 2, 4), mlp_ratio=2, weight_factor=0.1, memory_blocks=128, down_rank=8)
#: Realistic-noise configuration (official ``sert_real``; 34 bands): a memory of 64 prototypes.
REALISTIC_CONFIG: dict = dict(PAPER_CONFIG, memory_blocks=64)
#: Urban configuration (official ``sert_urban``; 210 bands).
URBAN_CONFIG: dict = dict(dim=192, window_sizes=(8, 16, 16), depths=(6, 6, 6), num_heads=(6, 6, 6),
                          split_sizes=(2, 4, 4), mlp_ratio=2, weight_factor=0.1, memory_blocks=128, down_rank=8)
#: A very small configuration for CPU tests (~26k parameters at 31 bands).
TINY_CONFIG: dict = dict(dim=16, window_sizes=(4, 8), depths=(2, 2), num_heads=(2, 2), split_sizes=(1, 2),
                         mlp_ratio=2, weight_factor=0.1, memory_blocks=8, down_rank=8)
#: Parameters of SERT for ICVL (31 bands): 1.91 M -- paper Table 1 ("Params (M)" column, SERT
#: 1.91) and the official README's "Quantitative Comparison on ICVL Dataset" table (1.91 M,
#: 1018.9 GFLOPs at 512x512x31). The exact count of PAPER_CONFIG here (and of the official
#: ``sert_base``) is 1,905,319.
PAPER_PARAMETERS = 1_910_000


def partition(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, H, W, C)`` -> ``(N * H/height * W/width, height * width, C)``: non-overlapping
    ``height x width`` patches in row-major patch order, row-major pixels inside each."""
    n, h, w, c = x.shape
    x = x.view(n, h // height, height, w // width, width, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height * width, c)


def unpartition(patches: torch.Tensor, height: int, width: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`partition`: ``(N * nh * nw, height * width, C)`` -> ``(N, H, W, C)``."""
    c = patches.shape[-1]
    x = patches.view(-1, h // height, w // width, height, width, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class StochasticDepth(nn.Module):
    """Drop the whole residual branch of a sample with probability ``p`` while training (rescaling
    the kept ones by ``1 / (1 - p)``); identity at evaluation."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class FeedForward(nn.Module):
    """Token-wise MLP ``fc2(GELU(fc1(x)))`` of the transformer block."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RectangleSelfAttention(nn.Module):
    """Multi-head self-attention inside the rectangles of one square window (paper Eq. 3-4).

    ``vertical``: rectangles of ``window`` rows x ``split`` columns; else ``split`` x ``window``.
    ``get_v`` is the locally-enhanced positional encoding: a depthwise 3x3 convolution of ``v``,
    zero-padded at each rectangle's border, added to the attention output.
    """

    def __init__(self, dim: int, heads: int, window: int, split: int, vertical: bool,
                 qk_scale: float | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"rectangle attention channels ({dim}) must be divisible by heads ({heads})")
        if window % split:
            raise ValueError(f"window ({window}) must be a multiple of the rectangle width ({split})")
        self.heads, self.window = heads, window
        self.rect = (window, split) if vertical else (split, window)
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``q, k, v``: ``(M, window * window, c)`` window tokens -> ``(M, window * window, c)``."""
        m, t, c = q.shape
        rh, rw = self.rect
        h = self.heads

        def rectangles(z: torch.Tensor) -> torch.Tensor:  # (M * R, rh * rw, c)
            return partition(z.view(m, self.window, self.window, c), rh, rw)

        q, k, v = rectangles(q), rectangles(k), rectangles(v)
        r = q.shape[0]
        lepe = self.get_v(v.transpose(1, 2).reshape(r, c, rh, rw)).flatten(2).transpose(1, 2)
        q, k, v = (z.view(r, rh * rw, h, c // h).transpose(1, 2) for z in (q, k, v))  # (R, h, L, d)
        attention = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(r, rh * rw, c) + lepe
        return unpartition(out, rh, rw, self.window, self.window).reshape(m, t, c)


class MemorySpectralEnhancement(nn.Module):
    """Spectral enhancement with a low-rank memory (paper Sec. 3.3, Eq. 5-6).

    The window's tokens are average-pooled to a spectral vector, projected to a rank-``r`` code
    (``subnet``), which attends over the ``memory_blocks`` prototypes stored as columns of ``mb``
    (``softmax(code^T mb / sqrt(r))``); the recalled code ``mb @ weights`` is lifted back to ``C``
    sigmoid gates (``upnet``) that rescale every token's channels.
    """

    def __init__(self, dim: int, down_rank: int, memory_blocks: int):
        super().__init__()
        self.rank = dim // down_rank
        if self.rank < 1:
            raise ValueError(f"dim ({dim}) // down_rank ({down_rank}) must be >= 1")
        self.subnet = nn.Sequential(nn.Linear(dim, self.rank))
        self.upnet = nn.Sequential(nn.Linear(self.rank, dim), nn.Sigmoid())
        self.mb = nn.Parameter(torch.randn(self.rank, memory_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.subnet(x.mean(dim=1))  # (M, r): pooled spectrum -> low-rank code
        weights = torch.softmax((code @ self.mb) * self.rank ** -0.5, dim=-1)  # (M, memory_blocks)
        recalled = weights @ self.mb.t()  # (M, r)
        return x * self.upnet(recalled).unsqueeze(1)


class SpectralEnhancementBranch(nn.Module):
    """``cab``: Linear(C, C/4) -> GELU -> Linear(C/4, C) -> memory spectral enhancement."""

    def __init__(self, dim: int, down_rank: int, memory_blocks: int, compress_ratio: int = 4):
        super().__init__()
        self.cab = nn.Sequential(nn.Linear(dim, dim // compress_ratio), nn.GELU(),
                                 nn.Linear(dim // compress_ratio, dim),
                                 MemorySpectralEnhancement(dim, down_rank, memory_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class SpectralEnhancedRectangleAttention(nn.Module):
    """Attention of a SERT block on ``(M, window * window, C)`` window tokens (paper Eq. 3-6):
    vertical + horizontal rectangle attention on the two channel halves, channels interleaved in
    groups of four, plus ``weight_factor`` times the spectral enhancement, then a projection."""

    def __init__(self, dim: int, window: int, heads: int, split: int, down_rank: int, memory_blocks: int,
                 weight_factor: float, qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        if dim % 4 or heads % 2:
            raise ValueError(f"need dim % 4 == 0 and an even number of heads; got dim={dim}, heads={heads}")
        self.dim, self.weight_factor = dim, weight_factor
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attns = nn.ModuleList([RectangleSelfAttention(dim // 2, heads // 2, window, split, vertical, qk_scale)
                                    for vertical in (True, False)])
        self.c_attns = SpectralEnhancementBranch(dim, down_rank, memory_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, t, c = x.shape
        q, k, v = self.qkv(x).view(m, t, 3, c).unbind(dim=2)
        half = c // 2
        vertical = self.attns[0](q[..., :half], k[..., :half], v[..., :half])
        horizontal = self.attns[1](q[..., half:], k[..., half:], v[..., half:])
        spatial = torch.cat([vertical, horizontal], dim=-1)
        spatial = spatial.view(m, t, 4, c // 4).transpose(-1, -2).reshape(m, t, c)  # channel (g, d) -> (d, g)
        return self.proj(spatial + self.weight_factor * self.c_attns(x))


class RectangleTransformerBlock(nn.Module):
    """Pre-norm transformer block on ``(N, C, H, W)`` features whose H, W are multiples of
    ``window``: ``x + SERA(LN(x))`` over (optionally half-shifted, cyclically rolled) windows,
    then ``x + MLP(LN(x))``; both residual branches with stochastic depth."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, split: int, mlp_ratio: float,
                 weight_factor: float, memory_blocks: int, down_rank: int, drop_path: float = 0.0,
                 qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path = StochasticDepth(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))
        self.attns = SpectralEnhancedRectangleAttention(dim, window, heads, split, down_rank, memory_blocks,
                                                        weight_factor, qkv_bias, qk_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        y = self.norm1(tokens).view(n, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = unpartition(self.attns(partition(y, self.window, self.window)), self.window, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        tokens = tokens + self.drop_path(y.reshape(n, h * w, c))
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens.transpose(1, 2).reshape(n, c, h, w)


class ResidualGroup(nn.Module):
    """``depth`` blocks (shift 0, window/2, 0, ...) then a 3x3 convolution, with a group residual."""

    def __init__(self, dim: int, window: int, depth: int, heads: int, split: int, mlp_ratio: float,
                 weight_factor: float, memory_blocks: int, down_rank: int, drop_path: list[float],
                 qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.smsblock = nn.Sequential(*[
            RectangleTransformerBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, split, mlp_ratio,
                                      weight_factor, memory_blocks, down_rank, drop_path[i], qkv_bias, qk_scale)
            for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.smsblock(x)) + x


class SERT(nn.Module):
    """Spectral Enhanced Rectangle Transformer: ``(N, B, H, W)`` noisy cube -> denoised cube."""

    receptive_radius = None  # cyclic window shifts wrap around the image; see the module docstring
    tile_align = 32
    input_multiple = 1  # the forward pads internally

    def __init__(self, inp_channels: int = 31, dim: int = 90, window_sizes=(8,) * 6, depths=(6,) * 6,
                 num_heads=(6,) * 6, split_sizes=(1,) * 6, mlp_ratio: float = 2, down_rank: int = 16,
                 memory_blocks: int = 256, qkv_bias: bool = True, qk_scale: float | None = None,
                 bias: bool = False, drop_path_rate: float = 0.1, weight_factor: float = 0.1):
        super().__init__()
        if not len(window_sizes) == len(depths) == len(num_heads) == len(split_sizes):
            raise ValueError("window_sizes, depths, num_heads and split_sizes need one entry per group")
        self.window_multiple = math.lcm(16, *window_sizes)  # official pads to 16; windows must tile
        self.tile_align = self.window_multiple
        self.conv_first = nn.Conv2d(inp_channels, dim, 3, padding=1)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()  # stochastic depth, linear in depth
        self.layers = nn.ModuleList()
        start = 0
        for window, depth, heads, split in zip(window_sizes, depths, num_heads, split_sizes):
            self.layers.append(ResidualGroup(dim, window, depth, heads, split, mlp_ratio, weight_factor,
                                             memory_blocks, down_rank, rates[start:start + depth], qkv_bias,
                                             qk_scale))
            start += depth
        self.output = nn.Conv2d(dim, dim, 3, padding=1, bias=bias)
        self.conv_delasta = nn.Conv2d(dim, inp_channels, 3, padding=1)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad bottom/right to multiples of ``lcm(16, *window_sizes)`` (replicate if too short)."""
        h, w = x.shape[-2:]
        bottom, right = -h % self.window_multiple, -w % self.window_multiple
        if bottom == 0 and right == 0:
            return x
        mode = "reflect" if bottom < h and right < w else "replicate"
        return F.pad(x, (0, right, 0, bottom), mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self.pad(x)
        shallow = self.conv_first(x)
        deep = shallow
        for group in self.layers:
            deep = group(deep)
        out = self.conv_delasta(self.output(deep + shallow)) + x
        return out[..., :h, :w]


def build(bands: int, **cfg) -> SERT:
    """SERT for ``bands`` spectral bands; ``cfg`` as in :data:`PAPER_CONFIG` (defaults: paper)."""
    return SERT(inp_channels=bands, **{**PAPER_CONFIG, **cfg})
